/**
 * Reliability issue (reproductions of 2026-11-30), points 6-8: small batches run; parity refuses a bad
 * backend, a bad CAEV2_BACKEND and unknown flags in one line with exit 2; CAEV2_THREADS is refused when it
 * is not a thread count (under auto too) and capped at the logical cores; a resumed run's changed settings
 * are named as flags; the seed and the batch size are bounded by the config; a CLIP file with a gap in its
 * blocks is refused, and the loader says how deep the tower it read is.
 */
import { tf } from "../lib/deps.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "../lib/core/std.ts";
import { selectBackend } from "../lib/core/backend.ts";
import { key } from "../lib/core/random.ts";
import { disposeTree } from "../lib/core/tree.ts";
import { writeSafetensors } from "../lib/core/safetensors.ts";
import { clipInit } from "../lib/models/clip.ts";
import { describeClip, loadClip } from "../lib/models/clip_load.ts";
import { clipOpenAiName, toOfficial } from "../lib/models/names.ts";
import type { ClipConfig } from "../lib/models/config.ts";
import { cosineSchedule } from "../lib/optim/schedule.ts";
import {
  configChanges,
  defaultPretrainConfig,
  readRunConfig,
  resolvePretrainConfig,
} from "../lib/config/pretrain.ts";
import { lrScheduleNote, peakLr } from "../lib/train/lr_policy.ts";
import { left, right, withTmp } from "./helpers.ts";
import { parseParityArgs } from "../lib/parity/cli.ts";

await selectBackend("cpu");

const at = new Date(Date.UTC(2026, 10, 30));
const decoder = new TextDecoder();

/** Runs `args` with deno as a child process; its exit code and its stdout + stderr lines. */
const child = async (args: string[], env: Record<string, string> = {}) => {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (decoder.decode(out.stdout) + decoder.decode(out.stderr)).trim();
  return { code: out.code, lines: text === "" ? [] : text.split("\n") };
};

// ---------------------------------------------------------------------------------------------------------
// 6. Small batches run.

Deno.test("--model tiny --batch-size 4 runs: the cosine goes from the scaled lr to --min-lr, as the official scheduler", () => {
  const cfg = right(
    resolvePretrainConfig(["--model", "tiny", "--batch-size", "4", "--steps", "30"], { now: at }),
  );
  const peak = peakLr(cfg);
  assertEquals(peak, 1.5e-3 * 4 / 2048);
  // BEiT/CAE `cosine_scheduler` with min_lr above the base lr: warmup to the base, then the formula.
  const lr = cosineSchedule({ base: peak, final: cfg.minLr, totalSteps: 30, warmupSteps: 1 });
  assertEquals(lr(0), 0);
  assertEquals(lr(1), peak);
  assert(
    Math.abs(lr(29) - (cfg.minLr + 0.5 * (peak - cfg.minLr) * (1 + Math.cos(Math.PI * 28 / 29)))) < 1e-18,
  );
});

Deno.test("--min-lr above the peak is said once, in flags: --min-lr, --lr, --batch-size", () => {
  const tiny = right(resolvePretrainConfig(["--model", "tiny", "--batch-size", "4"], { now: at }));
  const note = lrScheduleNote(tiny) ?? "";
  for (const flag of ["--min-lr 0.00001", "--batch-size 4", "--accumulate 1", "--lr"]) {
    assertStringIncludes(note, flag);
  }
  assert(!/minLr|batchSize|peakLr/.test(note), note);
  const given = right(resolvePretrainConfig(["--lr", "1e-6", "--min-lr", "2e-6"], { now: at }));
  assertStringIncludes(lrScheduleNote(given) ?? "", "(--lr 0.000001)");
  // The usual case says nothing.
  assertEquals(lrScheduleNote(right(resolvePretrainConfig([], { now: at }))), undefined);
  assertEquals(
    lrScheduleNote(right(resolvePretrainConfig(["--model", "tiny", "--batch-size", "64"], { now: at }))),
    undefined,
  );
});

// ---------------------------------------------------------------------------------------------------------
// 7. Messages: parity's flags and backend, CAEV2_THREADS, the seed, the batch size.

Deno.test("parity: --backend tpu and CAEV2_BACKEND=bogus are one line and exit 2", async () => {
  const [flag, env] = await Promise.all([
    child(["run", "-A", "tasks/parity.ts", "--backend", "tpu"]),
    child(["run", "-A", "tasks/parity.ts"], { CAEV2_BACKEND: "bogus" }),
  ]);
  assertEquals(flag.code, 2, flag.lines.join("\n"));
  assertEquals(flag.lines.length, 1, flag.lines.join("\n"));
  assertStringIncludes(flag.lines[0], "parity: ");
  assertStringIncludes(flag.lines[0], "--backend");
  assertStringIncludes(flag.lines[0], '"tpu"');
  assertEquals(env.code, 2, env.lines.join("\n"));
  assertEquals(env.lines, [
    "parity: CAEV2_BACKEND=bogus: unknown backend; expected one of auto, webgpu, wasm, cpu",
  ]);
});

Deno.test("parity: unknown flags are refused with a suggestion", async () => {
  const r = await child(["run", "-A", "tasks/parity.ts", "--bakend", "cpu"]);
  assertEquals(r.code, 2, r.lines.join("\n"));
  assertEquals(r.lines[0], "parity: unknown flag --bakend (did you mean --backend?)");
  assertStringIncludes(r.lines.join("\n"), "--no-step");
});

Deno.test("parity: files, --backend, --no-step (which the old parser ignored) and --help parse", () => {
  const r = right(parseParityArgs(["a.safetensors", "--no-step", "b.safetensors", "--backend", "wasm"]));
  assertEquals(r, {
    files: ["a.safetensors", "b.safetensors"],
    backend: "wasm",
    precision: "f32",
    step: false,
    help: false,
  });
  assertEquals(right(parseParityArgs([])), {
    files: [],
    backend: "auto",
    precision: "f32",
    step: true,
    help: false,
  });
  assertEquals(right(parseParityArgs(["-h"])).help, true);
  assertEquals(
    left(parseParityArgs(["--no-stpe"])).split("\n")[0],
    "unknown flag --no-stpe (did you mean --no-step?)",
  );
});

/** The last line a child prints after `selectBackend(backend)` with CAEV2_THREADS set to `threads`. */
const threadsRun = async (threads: string, backend: "auto" | "wasm") => {
  const url = new URL("../lib/core/backend.ts", import.meta.url).href;
  const code = `import { selectBackend } from ${JSON.stringify(url)};
try { console.log("ok: " + (await selectBackend(${JSON.stringify(backend)})).detail); }
catch (e) { console.log("error: " + e.message); }`;
  const r = await child(["eval", "--ext=ts", code], { CAEV2_THREADS: threads });
  return r.lines.filter((l) => l.startsWith("ok: ") || l.startsWith("error: ")).at(-1) ?? r.lines.join("\n");
};

Deno.test("CAEV2_THREADS that is not a thread count is refused under auto too (no silent cpu fallback)", async () => {
  const got = await Promise.all(["abc", "-1", "1.5"].map((v) => threadsRun(v, "auto")));
  for (const [i, v] of ["abc", "-1", "1.5"].entries()) {
    assert(got[i].startsWith("error: "), got[i]);
    assertStringIncludes(got[i], `CAEV2_THREADS=${JSON.stringify(v)}`);
    assertStringIncludes(got[i], "unset it");
  }
});

Deno.test("CAEV2_THREADS=1000 is capped at the larger of 64 and the logical cores, and the backend line says so", async () => {
  const cap = Math.max(64, navigator.hardwareConcurrency);
  const got = await threadsRun("1000", "wasm");
  assert(got.startsWith("ok: "), got);
  assertStringIncludes(got, `matmul on ${cap} threads (CAEV2_THREADS=1000 capped at ${cap} threads`);
});

Deno.test("--seed beyond a safe integer is refused by the config, naming --seed", () => {
  const msg = left(resolvePretrainConfig(["--seed", "1e20"], { now: at }));
  assertStringIncludes(msg, "--seed");
  assertStringIncludes(msg, "9007199254740991");
  assert(!msg.includes("random.key"), msg);
  right(resolvePretrainConfig(["--seed", String(Number.MAX_SAFE_INTEGER)], { now: at }));
});

Deno.test("--batch-size 99999999999999999999 is refused by the config, naming --batch-size", () => {
  // Past 2^53 - 1 the number would not be the one typed: refused by the flag's codec, quoting the text.
  const msg = left(resolvePretrainConfig(["--batch-size", "99999999999999999999"], { now: at }));
  assertStringIncludes(msg, '--batch-size: expected a positive integer, got "99999999999999999999"');
  assert(!msg.includes("batchSize"), msg);
});

Deno.test("--batch-size x --accumulate past 2^53 is refused too; the largest micro-batch that fits is offered", () => {
  const msg = left(resolvePretrainConfig(["--accumulate", String(2 ** 50)], { now: at }));
  assertStringIncludes(msg, `--batch-size 16 x --accumulate ${2 ** 50}`);
  assertStringIncludes(
    left(resolvePretrainConfig(["--batch-size", "174763"], { now: at })),
    "use --batch-size 174762 or less",
  );
  right(resolvePretrainConfig(["--batch-size", "174762"], { now: at }));
});

Deno.test("--resume with another config: the differing settings, as --flag old -> new", () => {
  const saved = { ...defaultPretrainConfig(at), out: "runs/r1", lr: 0.001 };
  const read = (path: string) => {
    if (path !== "runs/r1/config.json") throw new Deno.errors.NotFound(path);
    return JSON.stringify(saved);
  };
  const cfg = right(resolvePretrainConfig(
    [
      "--resume",
      "runs/r1",
      "--lr",
      "0.01",
      "--seed",
      "3",
      "--teacher",
      "clip.safetensors",
      "--log-every",
      "1",
    ],
    { readTextFile: read },
  ));
  const before = right(readRunConfig("runs/r1/", read));
  // --log-every does not change the numbers (nor the hash): it is not listed.
  assertEquals(configChanges(before, cfg), [
    "--lr 0.001 -> 0.01",
    "--seed 0 -> 3",
    "--teacher none -> clip.safetensors",
  ]);
  const byEpochs = right(
    resolvePretrainConfig(["--resume", "runs/r1", "--epochs", "2"], { readTextFile: read }),
  );
  assertEquals(configChanges(before, byEpochs), ["--steps 150 -> (unset)", "--epochs (unset) -> 2"]);
  assertEquals(
    configChanges(before, right(resolvePretrainConfig(["--resume", "runs/r1"], { readTextFile: read }))),
    [],
  );
  assertStringIncludes(left(readRunConfig("runs/none", read)), "runs/none/config.json: file not found");
});

// ---------------------------------------------------------------------------------------------------------
// 8. CLIP teacher files with missing blocks.

const clipCfg: ClipConfig = {
  imageSize: 16,
  patchSize: 8,
  width: 64,
  layers: 3,
  heads: 1,
  outDim: 8,
  eps: 1e-5,
};

/** Writes a CLIP tower of `clipCfg` in OpenAI names, leaving out the blocks in `drop`. */
const writeClip = async (path: string, drop: readonly number[]) => {
  const p = clipInit(key(1), clipCfg);
  const named = toOfficial(p, clipOpenAiName, clipCfg.patchSize) as Record<string, tf.Tensor>;
  const kept = Object.entries(named).filter(([n]) => {
    const m = /^transformer\.resblocks\.(\d+)\./.exec(n);
    return m === null || !drop.includes(Number(m[1]));
  });
  try {
    await writeSafetensors(path, Object.fromEntries(kept.map(([n, x]) => [`visual.${n}`, x])));
  } finally {
    disposeTree(p);
    tf.dispose(Object.values(named));
  }
};

Deno.test("a CLIP file whose blocks are not numbered from 0 without gaps is refused, naming the block", async () => {
  await withTmp("clip-gap-", async (dir) => {
    await writeClip(`${dir}/gap.safetensors`, [1]);
    await assertRejects(
      () => loadClip(`${dir}/gap.safetensors`),
      Error,
      `${dir}/gap.safetensors: block 1 of the CLIP tower is missing (the file has blocks 0, 2)`,
    );
    await writeClip(`${dir}/no-first.safetensors`, [0]);
    await assertRejects(
      () => loadClip(`${dir}/no-first.safetensors`),
      Error,
      "block 0 of the CLIP tower is missing",
    );
  });
});

Deno.test("the loader says how deep the tower it read is; a cut file's depth is warned against released CLIP", async () => {
  await withTmp("clip-depth-", async (dir) => {
    // Blocks 0 and 1 of 3: contiguous, so it loads, as a 2-block tower, and the line says so.
    await writeClip(`${dir}/cut.safetensors`, [2]);
    const loaded = await loadClip(`${dir}/cut.safetensors`);
    try {
      assertEquals(loaded.config.layers, 2);
      assertEquals(
        describeClip(`${dir}/cut.safetensors`, loaded.config, loaded.naming),
        `teacher ${dir}/cut.safetensors: CLIP ViT with 2 blocks read from the file, 64 wide, 1 heads, 8px ` +
          "patches of 16px images, output 8 (OpenAI names)",
      );
    } finally {
      disposeTree(loaded.params);
    }
  });
  const vitB = { imageSize: 224, patchSize: 16, width: 768, layers: 10, heads: 12, outDim: 512, eps: 1e-5 };
  const line = describeClip("b16.safetensors", vitB, "huggingface");
  assertStringIncludes(
    line,
    "10 blocks read from the file, 768 wide, 12 heads, 16px patches of 224px images, output 512 (Hugging Face names)",
  );
  assertStringIncludes(line, "warning: released CLIP towers 768 wide have 12 blocks, is the file complete?");
  const full = describeClip("b16.safetensors", { ...vitB, layers: 12 });
  assert(!full.includes("warning"), full);
});
