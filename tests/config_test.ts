import { t } from "../lib/deps.ts";
import { assert, assertEquals, assertStringIncludes } from "../lib/core/std.ts";
import {
  closest,
  coerceFlag,
  decodeWith,
  NonNegativeInt,
  PositiveInt,
  PositiveNumber,
  strict,
  UnitInterval,
} from "../lib/config/codec.ts";
import { parseFlags } from "../lib/config/flags.ts";
import { canonicalJson } from "../lib/config/hash.ts";
import {
  checkPretrainConfig,
  configHash,
  defaultPretrainConfig,
  type PretrainConfig,
  pretrainUsage,
  resolvePretrainConfig,
  wantsHelp,
} from "../lib/config/pretrain.ts";
import {
  MICRO_LR,
  OFFICIAL_BATCH,
  OFFICIAL_LR,
  peakLr,
  totalSteps,
  warmupStepsOf,
} from "../lib/train/lr_policy.ts";
import { left, right, TEST_BACKEND, withTmp } from "./helpers.ts";
import { selectBackend } from "../lib/core/backend.ts";
import { registerDeviceGradients } from "../lib/core/gradients.ts";
import { disposeTree } from "../lib/core/tree.ts";
import { stableHash } from "../lib/config/hash.ts";
import { HASH_EXCLUDED_KEYS } from "../lib/config/pretrain.ts";
import { pretrain, resolveModels } from "../lib/train/pretrain.ts";
import { runKeys } from "../lib/train/run_keys.ts";
import { createRunDir, resolvedRun, runPaths } from "../lib/train/rundir.ts";

// A nested codec in the shape of the brief's example (`optim.lr`, `model` literals).
const Nested = strict({
  model: strict({ name: t.keyof({ tiny: null, small: null, base: null, large: null }), depth: PositiveInt }),
  optim: strict({ lr: PositiveNumber, warmup: NonNegativeInt }, { dropPath: UnitInterval }),
});

Deno.test("strict rejects unknown keys at any depth, naming where and what is allowed", () => {
  const msg = left(decodeWith(
    Nested,
    { model: { name: "tiny", depth: 2, foo: 1 }, optim: { lr: 1, warmup: 0 }, bar: true },
    "cfg.json",
  ));
  assertEquals(msg.split("\n"), [
    'cfg.json: unknown key "foo" at model (allowed: name, depth)',
    'cfg.json: unknown key "bar" at the top level (allowed: model, optim)',
  ]);
  // io-ts exact would strip: a valid value decodes to exactly the keys given.
  assertEquals<unknown>(
    right(decodeWith(Nested, { model: { name: "base", depth: 1 }, optim: { lr: 0.1, warmup: 3 } }, "x")),
    { model: { name: "base", depth: 1 }, optim: { lr: 0.1, warmup: 3 } },
  );
});

Deno.test("decode errors name the path, the JSON value and what was expected, one line each", () => {
  const msg = left(decodeWith(
    Nested,
    { model: { name: "huge", depth: -2 }, optim: { lr: "fast", dropPath: 1.5 } },
    "flags",
  ));
  assertEquals(msg.split("\n"), [
    'flags: at model.name: expected one of "tiny" | "small" | "base" | "large", got "huge"',
    "flags: at model.depth: expected a positive integer, got -2",
    'flags: at optim.lr: expected a positive number, got "fast"',
    "flags: at optim.warmup: expected a non-negative integer, got nothing (the key is missing)",
    "flags: at optim.dropPath: expected a number between 0 and 1, got 1.5",
  ]);
  assertEquals(
    left(decodeWith(strict({ teacher: t.union([t.string, t.null]) }), { teacher: 3 }, "f")),
    "f: at teacher: expected a string or null, got 3",
  );
  assertEquals(
    left(decodeWith(PositiveInt, 2.5, "w")),
    "w: at the top level: expected a positive integer, got 2.5",
  );
});

Deno.test("misspelt keys get a suggestion", () => {
  assertEquals(closest("batch_size", ["batchSize", "steps"]), "batchSize");
  assertEquals(closest("stpes", ["batchSize", "steps"]), "steps");
  assertEquals(closest("zzz", ["batchSize", "steps"]), undefined);
  assertStringIncludes(
    left(decodeWith(strict({ batchSize: PositiveInt }), { batch_size: 3, batchSize: 3 }, "f")),
    'unknown key "batch_size" at the top level (did you mean "batchSize"?)',
  );
});

Deno.test("flag values are coerced for their codec", () => {
  assertEquals(coerceFlag(PositiveInt, "12"), 12);
  assertEquals(coerceFlag(PositiveInt, "1e3"), 1000);
  assertEquals(coerceFlag(PositiveInt, "abc"), "abc");
  assertEquals(coerceFlag(t.string, "12"), "12");
  assertEquals(coerceFlag(t.union([t.string, t.null]), "none"), null);
  assertEquals(coerceFlag(t.boolean, "true"), true);
  const r = right(parseFlags(["--batch-size", "8", "--lr=-1", "--seed", "-2", "--no-teacher"], {
    batchSize: PositiveInt,
    lr: t.number,
    seed: t.number,
    teacher: t.union([t.string, t.null]),
  }));
  assertEquals(r.values, { batchSize: 8, lr: -1, seed: -2, teacher: null });
});

const at = new Date(Date.UTC(2025, 0, 31, 23, 59, 58));
const files = (fs: Record<string, unknown>) => (path: string): string => {
  if (!(path in fs)) throw new Deno.errors.NotFound(`no ${path}`);
  const v = fs[path];
  return typeof v === "string" ? v : JSON.stringify(v);
};

Deno.test("no arguments give the defaults: a small local run", () => {
  const cfg = right(resolvePretrainConfig([], { now: at }));
  assertEquals(cfg, defaultPretrainConfig(at));
  assertEquals(cfg.out, "runs/20250131-235958");
  assertEquals([cfg.model, cfg.imageSize, cfg.patchSize, cfg.batchSize, cfg.steps], [
    "micro",
    64,
    8,
    16,
    150,
  ]);
  assertEquals(cfg.teacher, null);
  assertEquals(right(checkPretrainConfig(cfg)), cfg);
});

Deno.test("flags map kebab-case to fields and override a config file, which overrides defaults", () => {
  const read = files({ "c.json": { model: "tiny", batchSize: 64, seed: 3, imageSize: 224, patchSize: 16 } });
  const cfg = right(resolvePretrainConfig(
    [
      "--config",
      "c.json",
      "--batch-size",
      "32",
      "--accumulate",
      "2",
      "--out",
      "runs/a",
      "--teacher",
      "clip.st",
    ],
    { now: at, readTextFile: read },
  ));
  assertEquals(cfg.model, "tiny"); // file over default
  assertEquals(cfg.seed, 3); // file over default
  assertEquals(cfg.batchSize, 32); // flag over file
  assertEquals(cfg.accumulate, 2);
  assertEquals(cfg.out, "runs/a");
  assertEquals(cfg.teacher, "clip.st");
  assertEquals(cfg.imageSize, 224);
  assertEquals(cfg.steps, 150); // default kept
  // The official point: 1.5e-3 at total batch 2048, linearly scaled for tiny..large.
  assertEquals(peakLr(cfg), (1.5e-3 * 64) / 2048);
  assertEquals(peakLr({ ...cfg, lr: 2e-4 } as PretrainConfig), 2e-4);
  assertEquals(peakLr(defaultPretrainConfig(at)), 1e-3);
});

Deno.test("epochs from a higher layer replace default steps; steps wins within a layer", () => {
  const cfg = right(resolvePretrainConfig(["--epochs", "4"], { now: at }));
  assertEquals([cfg.steps, cfg.epochs], [undefined, 4]);
  assertEquals(right(totalSteps(cfg, 1000)), 4 * Math.floor(1000 / 16));
  assertStringIncludes(left(totalSteps(cfg)), "needs a finite data set");
  const both = right(resolvePretrainConfig(["--epochs", "4", "--steps", "10"], { now: at }));
  assertEquals(right(totalSteps(both, 1000)), 10);
  assertEquals(warmupStepsOf(both, 300), 10);
  assertEquals(warmupStepsOf({ ...both, warmupSteps: 7 } as PretrainConfig, 300), 7);
});

Deno.test("bad flags: unknown ones list the known flags; bad values name the flag", () => {
  const unknown = left(resolvePretrainConfig(["--batchsize", "3", "extra"], { now: at }));
  assertStringIncludes(unknown, "unknown flag --batchsize (did you mean --batch-size?)");
  assertStringIncludes(unknown, "known flags: --model, --image-size, --patch-size, --data, --batch-size");
  assertStringIncludes(unknown, "unexpected argument extra");
  const bad = left(resolvePretrainConfig(["--model", "huge", "--steps", "-5", "--lr", "fast"], { now: at }));
  assertEquals(bad.split("\n"), [
    'flags: --model: expected one of "micro" | "tiny" | "small" | "base" | "large", got "huge"',
    "flags: --steps: expected a positive integer, got -5",
    'flags: --lr: expected a positive number, got "fast"',
  ]);
  assertStringIncludes(left(resolvePretrainConfig(["--steps"], { now: at })), "--steps needs a value");
});

Deno.test("config file errors name the file", () => {
  const read = files({ "bad.json": "{ nope", "typo.json": { modle: "tiny", batchSize: 0 } });
  assertStringIncludes(
    left(resolvePretrainConfig(["--config", "bad.json"], { readTextFile: read })),
    "config file bad.json: not valid JSON",
  );
  assertEquals(
    left(resolvePretrainConfig(["--config", "missing.json"], { readTextFile: read })),
    "config file missing.json: file not found",
  );
  const typo = left(resolvePretrainConfig(["--config", "typo.json"], { readTextFile: read })).split("\n");
  assertEquals(typo[0], "config file typo.json: at batchSize: expected a positive integer, got 0");
  assert(
    typo[1].startsWith('config file typo.json: unknown key "modle" at the top level (did you mean "model"?)'),
  );
});

Deno.test("cross-field rules: patch divides image, masked below patches, out matches resume", () => {
  const msg = left(resolvePretrainConfig(["--patch-size", "7", "--image-size", "64"], { now: at }));
  assertEquals(msg, "patchSize 7 does not divide imageSize 64");
  assertEquals(
    left(resolvePretrainConfig(["--num-masked", "64"], { now: at })),
    "numMasked 64 must be below the number of patches (64)",
  );
  // --min-lr above the peak runs (as the official cosine_scheduler does); tests/reliability_messages_test.ts
  // checks the note it prints.
  right(resolvePretrainConfig(["--min-lr", "0.01"], { now: at }));
});

Deno.test("--resume reads the run's config.json; flags still override; out is the run", () => {
  const saved = { ...defaultPretrainConfig(at), model: "small", out: "runs/r1", steps: 40 };
  const read = files({ "runs/r1/config.json": saved });
  const cfg = right(
    resolvePretrainConfig(["--resume", "runs/r1", "--log-every", "5"], { readTextFile: read }),
  );
  assertEquals([cfg.model, cfg.steps, cfg.out, cfg.resume, cfg.logEvery], [
    "small",
    40,
    "runs/r1",
    "runs/r1",
    5,
  ]);
  assertStringIncludes(
    left(resolvePretrainConfig(["--resume", "runs/r1", "--out", "runs/other"], { readTextFile: read })),
    "name different runs",
  );
  assertStringIncludes(
    left(resolvePretrainConfig(["--resume", "runs/none"], { readTextFile: read })),
    "--resume runs/none: runs/none/config.json: file not found (is runs/none a run directory?)",
  );
});

Deno.test("--help is recognised and lists every flag", () => {
  assert(wantsHelp(["--steps", "3", "--help"]));
  const usage = pretrainUsage();
  assertEquals(left(resolvePretrainConfig(["--help"])), usage);
  for (const f of ["--batch-size N", "--resume DIR", "--teacher FILE", "--config FILE", "--image-size N"]) {
    assertStringIncludes(usage, f);
  }
  // The lr default is lib/train/lr_policy.ts's rule; its help names the rule's numbers.
  assertStringIncludes(
    usage,
    `peak learning rate (default: ${OFFICIAL_LR} x total batch / ${OFFICIAL_BATCH}; micro: ${MICRO_LR})`,
  );
});

Deno.test("configHash is stable under key order and ignores where a run writes", async () => {
  const cfg = defaultPretrainConfig(at);
  const h = await configHash(cfg);
  assertEquals(h.length, 16);
  assert(/^[0-9a-f]{16}$/.test(h));
  const reversed = Object.fromEntries(Object.entries(cfg).reverse()) as PretrainConfig;
  assertEquals(await configHash(reversed), h);
  assertEquals(
    await configHash({ ...cfg, out: "elsewhere", logEvery: 1, backend: "cpu" } as PretrainConfig),
    h,
  );
  assert((await configHash({ ...cfg, seed: 1 } as PretrainConfig)) !== h);
  assertEquals(
    canonicalJson({ b: 1, a: { d: [2, { y: 1, x: 0 }], c: undefined } }),
    '{"a":{"d":[2,{"x":0,"y":1}]},"b":1}',
  );
  // A pinned value: the hash of a fixed object must not drift between versions or machines.
  assertEquals(
    await configHash({ b: 2, a: 1 } as unknown as PretrainConfig),
    // sha256('{"a":1,"b":2}') = 43258cff783fe7036d8a43033f830adfc60ec037382473548ac742b888292777
    "43258cff783fe703",
  );
});

// ---------------------------------------------------------------------------------------------------------
// What a run used: config.json stays the config (its hash is what checkpoints carry), resolved.json beside it
// holds the numbers the run derived.

const runLines = async (path: string) =>
  (await Deno.readTextFile(path)).trim().split("\n").map((l) => JSON.parse(l) as Record<string, number>);

Deno.test("resolved.json: the derived numbers are the ones the run used; config.json stays the config", async () => {
  await selectBackend(TEST_BACKEND);
  registerDeviceGradients();
  await withTmp("caev2-resolved-", async (dir) => {
    const out = `${dir}/run`;
    const cfg = right(resolvePretrainConfig([
      ...[
        "--image-size",
        "32",
        "--patch-size",
        "8",
        "--batch-size",
        "2",
        "--accumulate",
        "2",
        "--steps",
        "4",
      ],
      ...["--blr", "0.002", "--warmup-steps", "2", "--mask-ratio", "0.5", "--backend", TEST_BACKEND],
      ...["--out", out],
    ]));
    assertEquals([cfg.numMasked, cfg.maskRatio, cfg.blr, cfg.lr], [8, undefined, 0.002, undefined]);
    const logs: string[] = [];
    right(await pretrain(cfg, { log: (l) => logs.push(l), tty: false }));
    // What the run derives, by the functions it calls, from the models it resolves.
    const models = await resolveModels(cfg, runKeys(cfg.seed).teacher);
    disposeTree(models.teacherParams);
    const hash = await configHash(cfg);
    const r = resolvedRun(cfg, {
      steps: 4,
      numMasked: models.numMasked,
      student: models.student,
      teacher: models.teacher,
      configHash: hash,
    });
    assertEquals(
      [r.totalBatch, r.peakLr, r.lrRule, r.totalSteps, r.warmupSteps, r.numPatches, r.numMasked, r.maskRatio],
      [4, (0.002 * 4) / 256, "--blr 0.002 x total batch 4 / 256", 4, 2, 16, 8, 0.5],
    );
    assertEquals([r.worldSize, r.stepsPerEpoch, r.student.dim, r.teacher.outDim], [1, null, 64, 64]);
    // ... and what the run printed and logged: 8 masked of 16, 4 steps of 4 images, the peak lr reached at
    // the last warmup step (np.linspace's end), where the cosine then starts, and below it after.
    const head = logs.find((l) => l.startsWith("pretrain: micro student"))!;
    assertStringIncludes(head, "16 patches, 8 masked");
    assertStringIncludes(head, "4 steps of 4 images; peak lr 3.13e-5");
    const lrs = (await runLines(`${out}/metrics.jsonl`)).map((m) => m.lr);
    assertEquals(lrs.slice(0, 3), [0, r.peakLr, r.peakLr]);
    assert(lrs[3] < r.peakLr);
    // config.json is the config exactly (no derived block), and hashes as the checkpoints' configHash.
    const stored = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
    assertEquals(stored, JSON.parse(JSON.stringify(cfg)));
    assertEquals(await stableHash(stored, HASH_EXCLUDED_KEYS), hash);
    const index = JSON.parse(await Deno.readTextFile(`${out}/checkpoints/step-000004.json`));
    assertEquals(index.meta.configHash, hash);
    // The run wrote resolved.json, and it is this record.
    const written = runPaths(out).resolvedPath;
    assertEquals(JSON.parse(await Deno.readTextFile(written)), JSON.parse(JSON.stringify(r)));
    // createRunDir writes both files, resolved.json as given.
    const fresh = right(await createRunDir(`${dir}/fresh`, cfg, r));
    assertEquals(JSON.parse(await Deno.readTextFile(fresh.resolvedPath)), JSON.parse(JSON.stringify(r)));
    assertEquals(JSON.parse(await Deno.readTextFile(fresh.configPath)), stored);
    assertEquals(await Deno.readTextFile(fresh.metricsPath), "");
    // Without a record (an older run's layout), no resolved.json.
    const old = right(await createRunDir(`${dir}/old`, cfg));
    assertEquals(await Deno.stat(old.resolvedPath).catch(() => undefined), undefined);
  });
});

Deno.test("a run directory without resolved.json (written before it existed) resumes", async () => {
  await selectBackend(TEST_BACKEND);
  registerDeviceGradients();
  await withTmp("caev2-resolved-", async (dir) => {
    const out = `${dir}/run`;
    const flags = ["--image-size", "32", "--patch-size", "8", "--batch-size", "4", "--backend", TEST_BACKEND];
    const cfg = right(
      resolvePretrainConfig([...flags, "--steps", "4", "--checkpoint-every", "2", "--out", out]),
    );
    const first = right(await pretrain(cfg, { log: () => {}, tty: false, stopAfter: 2 }));
    assertEquals([first.steps, first.interrupted], [2, true]);
    // The layout of a run written before resolved.json: config.json without the new keys, no resolved.json.
    await Deno.remove(runPaths(out).resolvedPath).catch(() => {});
    const stored = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
    for (const k of ["blr", "warmupEpochs", "maskRatio"]) assert(!(k in stored), k);
    const again = right(resolvePretrainConfig(["--resume", out, "--backend", TEST_BACKEND]));
    const done = right(await pretrain(again, { log: () => {}, tty: false }));
    assertEquals([done.startStep, done.steps, done.interrupted], [2, 4, false]);
    assertEquals((await runLines(`${out}/metrics.jsonl`)).map((m) => m.step), [1, 2, 3, 4]);
  });
});
