/**
 * The names users type, as MAE, BEiT and CAE type them: `--mask-ratio` beside `--num-masked` (the official
 * `int(ratio * num_patches)`), `--blr` beside `--lr` (lr = blr x total batch / 256), warmup in epochs or in
 * steps, each pair refused together from one source and replacing each other across sources; configs that
 * use none of them hash as before (runs written before these flags existed resume); `--config FILE` for
 * every task (flags override it, unknown keys refused by name); one meaning of `--out` per kind of output,
 * said by each task's `--help`.
 */
import { assert, assertEquals, assertStringIncludes } from "../lib/core/std.ts";
import {
  configHash,
  defaultPretrainConfig,
  maskedOfRatio,
  type PretrainConfig,
  resolvePretrainConfig,
} from "../lib/config/pretrain.ts";
import { lrScheduleNote, peakLr, totalSteps, warmupStepsOf } from "../lib/train/lr_policy.ts";
import {
  flagTable,
  NonNegativeInt,
  NonNegativeNumber,
  PositiveInt,
  resolveTaskArgs,
  WARMUP_ALTERNATIVES,
  warmupEpochsOf,
} from "../lib/eval/cli.ts";
import { left, right, runTaskFile, TEST_BACKEND, withTmp } from "./helpers.ts";

const at = new Date(Date.UTC(2025, 0, 31, 23, 59, 58));
const files = (fs: Record<string, unknown>) => (path: string): string => {
  if (!(path in fs)) throw new Deno.errors.NotFound(`no ${path}`);
  const v = fs[path];
  return typeof v === "string" ? v : JSON.stringify(v);
};
const resolve = (argv: string[], fs: Record<string, unknown> = {}) =>
  resolvePretrainConfig(argv, { now: at, readTextFile: files(fs) });

Deno.test("--mask-ratio R masks int(R x patches), as the official ratio_mask_patches; never with --num-masked", async () => {
  // The official RandomMaskingGenerator: int(ratio * num_patches), the float64 product truncated.
  assertEquals([maskedOfRatio(0.75, 196), maskedOfRatio(0.5, 196), maskedOfRatio(0.15, 196)], [147, 98, 29]);
  assertEquals(maskedOfRatio(0.29, 100), 28); // 0.29 * 100 = 28.999999999999996 in float64, as in Python
  const half = right(resolve(["--mask-ratio", "0.5"]));
  assertEquals([half.numMasked, half.maskRatio], [32, undefined]); // the default grid: 64 patches
  assertEquals(right(resolve(["--mask-ratio", "0.4"])).numMasked, 25);
  const b16 = right(resolve(["--image-size", "224", "--patch-size", "16", "--mask-ratio", "0.75"]));
  assertEquals(b16.numMasked, 147);
  // The ratio is of the final grid, whichever source sets the image size.
  assertEquals(
    right(resolve(["--config", "c.json", "--mask-ratio", "0.5"], { "c.json": { imageSize: 32 } })).numMasked,
    8,
  );
  // A config resolved from a ratio is the config of its count: the same hash, so either resumes the other.
  assertEquals(await configHash(half), await configHash(right(resolve(["--num-masked", "32"]))));
  assertEquals(
    left(resolve(["--num-masked", "10", "--mask-ratio", "0.5"])),
    "flags: --num-masked and --mask-ratio both given; they set the same thing two ways: give one",
  );
  assertEquals(
    left(resolve(["--config", "c.json"], { "c.json": { numMasked: 3, maskRatio: 0.5 } })),
    'config file c.json: "numMasked" and "maskRatio" both given; they set the same thing two ways: give one',
  );
  // A higher source's ratio replaces a lower source's count, and the reverse.
  assertEquals(right(resolve(["--mask-ratio", "0.25"], {})).numMasked, 16);
  assertEquals(
    right(resolve(["--config", "c.json", "--mask-ratio", "0.25"], { "c.json": { numMasked: 3 } })).numMasked,
    16,
  );
  assertEquals(
    right(resolve(["--config", "c.json", "--num-masked", "5"], { "c.json": { maskRatio: 0.5 } })).numMasked,
    5,
  );
  assertStringIncludes(
    left(resolve(["--mask-ratio", "0.01"])),
    "--mask-ratio 0.01 masks 0 of the 64 patches (floor(0.01 x 64), as the official ratio_mask_patches)",
  );
  assertStringIncludes(left(resolve(["--mask-ratio", "1"])), "--mask-ratio 1 masks 64 of the 64 patches");
  assertStringIncludes(left(resolve(["--mask-ratio", "1.5"])), "flags: --mask-ratio: expected");
});

Deno.test("--blr X: peak lr = X x total batch / 256; never with --lr; the default lr policy is unchanged", () => {
  const cfg = right(
    resolve(["--model", "tiny", "--blr", "1.5e-4", "--batch-size", "64", "--accumulate", "4"]),
  );
  assertEquals([cfg.blr, cfg.lr], [1.5e-4, undefined]);
  assertEquals(peakLr(cfg), (1.5e-4 * 256) / 256);
  // Under data-parallel training the run passes the global batch (batchSize x ranks).
  assertEquals(peakLr({ ...cfg, batchSize: 64 * 8 } as PretrainConfig), (1.5e-4 * 64 * 8 * 4) / 256);
  assertEquals(
    left(resolve(["--lr", "1e-3", "--blr", "1e-4"])),
    "flags: --lr and --blr both given; they set the same thing two ways: give one",
  );
  // Across sources the higher one's replaces the other: --blr over a config file's lr, --lr over a blr.
  const overFile = right(resolve(["--config", "c.json", "--blr", "2e-4"], { "c.json": { lr: 1 } }));
  assertEquals([overFile.lr, overFile.blr], [undefined, 2e-4]);
  const saved = { ...defaultPretrainConfig(at), out: "runs/r1", blr: 1e-3 };
  const resumed = right(resolve(["--resume", "runs/r1", "--lr", "5e-4"], { "runs/r1/config.json": saved }));
  assertEquals([resumed.lr, resumed.blr], [5e-4, undefined]);
  // The defaults: micro 1e-3, the presets 1.5e-3 x total batch / 2048 (what `deno task pretrain` printed).
  assertEquals(peakLr(right(resolve([]))), 1e-3);
  assertEquals(peakLr(right(resolve(["--model", "base", "--batch-size", "32"]))), (1.5e-3 * 32) / 2048);
  const low = right(resolve(["--model", "tiny", "--blr", "1e-6", "--batch-size", "4"]));
  assertStringIncludes(lrScheduleNote(low)!, "(--blr 0.000001 x total batch 4 / 256)");
});

Deno.test("warmup in epochs or in steps: --warmup-epochs for runs in epochs, never with --warmup-steps", () => {
  const cfg = right(resolve(["--epochs", "10", "--warmup-epochs", "2"]));
  const steps = right(totalSteps(cfg, 1000)); // 62 steps per epoch of 16 images
  assertEquals([steps, warmupStepsOf(cfg, steps)], [620, 124]);
  assertEquals(warmupStepsOf(right(resolve(["--epochs", "3", "--warmup-epochs", "0.5"])), 300), 50);
  assertEquals(warmupStepsOf(right(resolve([])), 150), 5); // the default: 1/30 of the steps
  assertStringIncludes(
    left(resolve(["--warmup-epochs", "1"])),
    "--warmup-epochs 1 needs a run measured in epochs (--epochs N, no --steps; this run has 150 steps)",
  );
  assertStringIncludes(
    left(resolve(["--epochs", "2", "--warmup-epochs", "3"])),
    "warmupEpochs 3 exceeds epochs 2",
  );
  assertEquals(
    left(resolve(["--epochs", "2", "--warmup-steps", "3", "--warmup-epochs", "1"])),
    "flags: --warmup-steps and --warmup-epochs both given; they set the same thing two ways: give one",
  );
  const over = right(resolve(["--config", "c.json", "--warmup-steps", "4"], {
    "c.json": { epochs: 5, warmupEpochs: 1 },
  }));
  assertEquals([over.warmupSteps, over.warmupEpochs], [4, undefined]);
});

Deno.test("configs that use none of the new names hash as before: older runs resume", async () => {
  // Hashes computed by the code before --blr, --mask-ratio and --warmup-epochs existed.
  assertEquals(await configHash(defaultPretrainConfig(new Date(0))), "9e79fe721b820a24");
  const tiny = right(resolvePretrainConfig([
    ...["--model", "tiny", "--lr", "0.002", "--num-masked", "10", "--warmup-steps", "3"],
    ...["--image-size", "32", "--patch-size", "8", "--batch-size", "4", "--steps", "20"],
  ], { now: new Date(0) }));
  assertEquals(await configHash(tiny), "225f28e7ce5c830d");
});

// ---------------------------------------------------------------------------------------------------------
// The evaluation tasks' command line.

const spec = {
  usage: "demo",
  summary: "demo",
  flags: flagTable({
    epochs: { codec: PositiveInt, default: 10, arg: "N", help: "epochs" },
    warmupEpochs: { codec: NonNegativeNumber, default: 1, arg: "X", help: "warmup epochs" },
    warmupSteps: { codec: NonNegativeInt, arg: "N", help: "warmup steps" },
  }),
  alternatives: WARMUP_ALTERNATIVES,
};

Deno.test("--config FILE for the evaluation tasks: flags override it, unknown keys are refused by name", () => {
  const fs = files({
    "c.json": { epochs: 3, warmupSteps: 7 },
    "typo.json": { epoch: 3 },
    "both.json": { warmupSteps: 1, warmupEpochs: 2 },
    "bad.json": { epochs: 0 },
  });
  const r = right(resolveTaskArgs(["--config", "c.json", "--epochs", "4"], spec, { readTextFile: fs }));
  // The file's warmupSteps replaces the default warmupEpochs; the flag's epochs wins over the file's.
  assertEquals(r.flags as Record<string, unknown>, { epochs: 4, warmupSteps: 7 });
  assertEquals([...r.given].sort(), ["epochs", "warmupSteps"]);
  assertEquals(right(resolveTaskArgs([], spec)).flags as Record<string, unknown>, {
    epochs: 10,
    warmupEpochs: 1,
  });
  assertEquals(right(resolveTaskArgs([], spec)).given.size, 0);
  assertStringIncludes(
    left(resolveTaskArgs(["--config", "typo.json"], spec, { readTextFile: fs })),
    '--config typo.json: unknown key "epoch" at the top level (did you mean "epochs"?)',
  );
  assertEquals(
    left(resolveTaskArgs(["--config", "both.json"], spec, { readTextFile: fs })),
    '--config both.json: "warmupEpochs" and "warmupSteps" both given; they set the same thing two ways: give one',
  );
  assertStringIncludes(
    left(resolveTaskArgs(["--config", "bad.json"], spec, { readTextFile: fs })),
    "--config bad.json: at epochs: expected a positive integer, got 0",
  );
  assertEquals(
    left(resolveTaskArgs(["--config", "none.json"], spec, { readTextFile: fs })),
    "--config none.json: file not found",
  );
  assertEquals(
    left(resolveTaskArgs(["--warmup-epochs", "1", "--warmup-steps", "2"], spec)),
    "flags: --warmup-epochs and --warmup-steps both given; they set the same thing two ways: give one",
  );
  // Warmup steps as epochs of the trainer's steps per epoch round back to exactly the steps asked.
  for (const [s, per] of [[7, 3], [1, 781], [5004, 5004], [13, 1]]) {
    assertEquals(Math.round(warmupEpochsOf({ warmupSteps: s }, per)! * per), s);
  }
  assertEquals(warmupEpochsOf({ warmupEpochs: 2.5 }, 10), 2.5);
  assertEquals(warmupEpochsOf({}, 10), undefined);
});

/** A task's exit code and everything it printed. */
const task = async (name: string, args: string[]) => {
  const out = await runTaskFile(name, args);
  return { code: out.code, text: out.stdout + out.stderr };
};

/** What `--out` is, per task, as its `--help` says it. */
const outMeans: Readonly<Record<string, string | undefined>> = {
  pretrain: "--out DIR run directory to create",
  probe: "--out FILE results file to write: the settings and scores as JSON",
  knn: "--out FILE results file to write: the settings and scores as JSON",
  segment: "--out FILE results file to write: the settings and scores (per class too) as JSON",
  extract: "--out FILE features file to write (.safetensors, required)",
  finetune: "--out FILE classifier file to write (.safetensors with its class names",
  export: "--out FILE weights file to write (.safetensors, required)",
  classify: undefined,
};

Deno.test("every task's --help: --config FILE, one meaning of --out per kind of output, warmup both ways", async () => {
  const helps = await Promise.all(
    Object.keys(outMeans).map(async (name) => [name, await task(name, ["--help"])] as const),
  );
  for (const [name, r] of helps) {
    assertEquals(r.code, 0, `${name}: ${r.text}`);
    // One space between a flag and its help, whatever the column width.
    const text = r.text.replace(/ {2,}/g, " ");
    assertStringIncludes(text, "--config FILE", name);
    const out = outMeans[name];
    if (out === undefined) assert(!/^ --out /m.test(text), name);
    else assertStringIncludes(text, out, name);
    if (["probe", "finetune", "segment", "pretrain"].includes(name)) {
      assertStringIncludes(text, "--warmup-steps N", name);
      assertStringIncludes(text, "--warmup-epochs X", name);
    }
    if (name !== "pretrain" && name !== "classify") {
      assertStringIncludes(text, "--checkpoint RUN_DIR|FILE|random", name);
    }
    // Defaults are written one way: "(default: X)".
    assert(!/\(default [^:]/.test(text), `${name}: ${text.match(/\(default [^:][^)]*\)/)?.[0]}`);
  }
});

Deno.test("tasks take --config FILE: unknown keys named, pairs refused, --warmup-steps honoured", async () => {
  await withTmp("caev2-names-", async (dir) => {
    await Deno.writeTextFile(`${dir}/typo.json`, JSON.stringify({ checkpoint: "random", maxTrains: 8 }));
    const typo = await task("knn", ["--config", `${dir}/typo.json`]);
    assertEquals(typo.code, 1);
    assertStringIncludes(typo.text, 'unknown key "maxTrains" at the top level (did you mean "maxTrain"?)');
    // A flag given in the file that does not apply is refused as it is on the command line.
    await Deno.writeTextFile(`${dir}/probe.json`, JSON.stringify({ checkpoint: "random", warmupSteps: 3 }));
    const probe = await task("probe", ["--config", `${dir}/probe.json`]);
    assertEquals(probe.code, 1);
    assertStringIncludes(probe.text, "--warmup-steps does not apply to --head linear --recipe default");
    const both = await task("finetune", [
      "--checkpoint",
      "random",
      "--warmup-epochs",
      "1",
      "--warmup-steps",
      "2",
    ]);
    assertEquals(both.code, 1);
    assertStringIncludes(both.text, "--warmup-epochs and --warmup-steps both given");
    // Segmentation with its settings from a file and the warmup in steps: 8 images in batches of 4 for 2
    // epochs are 4 steps, 3 of them warmup.
    await Deno.writeTextFile(
      `${dir}/seg.json`,
      JSON.stringify({
        checkpoint: "random",
        imageSize: 16,
        data: "synthetic-seg:8",
        epochs: 2,
        warmupSteps: 3,
      }),
    );
    const seg = await task("segment", [
      ...["--config", `${dir}/seg.json`, "--batch-size", "4", "--backend", TEST_BACKEND],
      ...["--out", `${dir}/seg-out.json`],
    ]);
    assertEquals(seg.code, 0, seg.text);
    const r = JSON.parse(await Deno.readTextFile(`${dir}/seg-out.json`));
    assertEquals([r.epochs, r.batchSize, r.steps, r.warmupSteps, r.warmupEpochs], [2, 4, 4, 3, 1.5]);
  });
});

Deno.test("pretrain: the new names on the command line reach the run's config.json", async () => {
  await withTmp("caev2-names-", async (dir) => {
    const out = `${dir}/run`;
    const r = await task("pretrain", [
      ...["--image-size", "32", "--patch-size", "8", "--batch-size", "4", "--steps", "2"],
      ...["--mask-ratio", "0.25", "--blr", "0.01", "--backend", "cpu", "--out", out],
    ]);
    assertEquals(r.code, 0, r.text);
    assertStringIncludes(r.text, "16 patches, 4 masked");
    assertStringIncludes(r.text, "peak lr 1.56e-4"); // 0.01 x 4 / 256
    const stored = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
    assertEquals([stored.numMasked, stored.blr, "maskRatio" in stored, "lr" in stored], [
      4,
      0.01,
      false,
      false,
    ]);
    const both = await task("pretrain", ["--lr", "1e-3", "--blr", "1e-4", "--out", `${dir}/never`]);
    assertEquals(both.code, 2);
    assertStringIncludes(both.text, "pretrain: flags: --lr and --blr both given");
    assert(!(await Deno.stat(`${dir}/never`).catch(() => undefined)));
  });
});
