/**
 * Evaluation issue (reproductions of 2026-11-30): the evaluations tell the truth about a model.
 *
 * 1. A diverged model (NaN or infinite weights, or weights so large that the features overflow) scored
 *    100%: top-k counted a NaN score as a hit. Now no top-k count takes a non-finite score, and knn,
 *    extract, fine-tuning and the `--knn-every` monitor stop with an error naming the checkpoint.
 * 2. `extract --out` overwrote any file, its own checkpoint included, and outputs were checked after the
 *    work. Now every output is checked first (lib/eval/outputs.ts): an existing file needs `--force`, a
 *    missing folder is refused, an input file is refused even with `--force`.
 *
 * Tasks run as child processes on tiny encoders (micro, 16 px, 4 patches) and `synthetic:64`-like data.
 */
import { tf } from "../lib/deps.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "../lib/core/std.ts";
import { key } from "../lib/core/random.ts";
import { flatten } from "../lib/core/tree.ts";
import { caev2Init } from "../lib/models/caev2.ts";
import { studentPreset } from "../lib/models/presets.ts";
import { saveCheckpoint } from "../lib/train/checkpoint.ts";
import { countTopK } from "../lib/eval/heads.ts";
import { splitFeatures } from "../lib/eval/features.ts";
import { knnClassify } from "../lib/eval/knn.ts";
import { knnEvaluator } from "../lib/eval/monitor.ts";
import { finetuneSettings } from "../lib/eval/finetune.ts";
import { runFinetune } from "../lib/eval/finetune_run.ts";
import { disposeEncoder, loadEncoder } from "../lib/eval/load.ts";
import { checkOutputs } from "../lib/eval/outputs.ts";
import { left, right, TEST_BACKEND, withTmp } from "./helpers.ts";

await tf.setBackend("cpu");

const cfg = studentPreset("micro", { imageSize: 16, patchSize: 8, dropPath: 0 });
const decoder = new TextDecoder();

/**
 * A pretraining run directory at `dir` with one checkpoint (step 1) whose parameters are `f` of a fresh
 * init; returns the checkpoint file's path.
 */
const writeRun = async (dir: string, f: (x: tf.Tensor) => tf.Tensor): Promise<string> => {
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({ model: "micro", imageSize: 16, patchSize: 8 }),
  );
  const flat = flatten(caev2Init(key(1), cfg));
  const params = Object.fromEntries(Object.entries(flat).map(([n, x]) => [n, f(x)]));
  const meta = {
    step: 1,
    key: [0, 1] as const,
    configHash: "h",
    dataPosition: { epoch: 0, index: 1 },
    optHost: null,
  };
  await saveCheckpoint(dir, 1, { params, opt: {}, meta });
  tf.dispose([...Object.values(flat), ...Object.values(params)]);
  return `${dir}/checkpoints/step-000001.safetensors`;
};
const nanWeights = (x: tf.Tensor) => tf.fill(x.shape, NaN);

/** Runs a task file with deno; its exit code, stdout and stderr. */
const task = async (name: string, args: string[]) => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`../tasks/${name}.ts`, import.meta.url).pathname, ...args],
    env: { NO_COLOR: "1", CAEV2_BACKEND: TEST_BACKEND },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
};

const small = ["--data", "synthetic:64", "--max-train", "32", "--max-val", "16", "--backend", TEST_BACKEND];

// ---------------------------------------------------------------------------------------------------------
// 1. A diverged model is never scored.

Deno.test("truth: countTopK never counts a row holding a NaN or an infinite score as a hit", () => {
  const labels = Int32Array.from([0, 1, 2]);
  // Row 0 all NaN (a NaN model), row 1 the label's score is +Inf, row 2 a NaN rival of a finite label.
  const scores = [NaN, NaN, NaN, /**/ 0, Infinity, 0, /**/ 1, NaN, 2];
  for (const k of [1, 2, 3]) assertEquals(countTopK(scores, labels, 3, k), 0, `top-${k}`);
  // Finite rows are still ranked as before (ties go to the lower class).
  assertEquals(countTopK([0, 1, 1, /**/ 3, 2, 1], Int32Array.from([2, 0]), 3, 1), 1);
});

Deno.test("truth: knn on a checkpoint whose weights are NaN stops, naming the checkpoint, with no score", () =>
  withTmp("caev2-truth-", async (dir) => {
    const ckpt = await writeRun(dir, nanWeights);
    const r = await task("knn", ["--checkpoint", dir, ...small, "--out", `${dir}/knn.json`]);
    assertEquals(r.code, 1, r.stdout + r.stderr);
    assertStringIncludes(r.stderr, ckpt);
    assertStringIncludes(r.stderr, "NaN");
    assert(!r.stdout.includes("knn top1"), r.stdout);
    assertEquals(await Deno.stat(`${dir}/knn.json`).then(() => true, () => false), false);
  }));

Deno.test("truth: extract of a NaN checkpoint fails naming it and writes no features", () =>
  withTmp("caev2-truth-", async (dir) => {
    const ckpt = await writeRun(dir, nanWeights);
    const r = await task("extract", ["--checkpoint", ckpt, ...small, "--out", `${dir}/f.safetensors`]);
    assertEquals(r.code, 1, r.stdout + r.stderr);
    assertStringIncludes(r.stderr, ckpt);
    assertEquals(await Deno.stat(`${dir}/f.safetensors`).then(() => true, () => false), false);
  }));

Deno.test("truth: finite but huge weights (a run at --lr 1e9) whose features overflow are refused too", () =>
  withTmp("caev2-truth-", async (dir) => {
    // What the reproduction's step-1 checkpoint held: every weight moved by about 1e9, none NaN.
    const ckpt = await writeRun(dir, (x) => tf.add(tf.mul(x, 1e9), 1e9));
    const enc = right(await loadEncoder(dir));
    try {
      const err = await assertRejects(() =>
        splitFeatures(enc, { kind: "synthetic", size: 20 }, "train", { pooling: "cls", limit: 8 })
      );
      assertStringIncludes((err as Error).message, ckpt);
      assertStringIncludes((err as Error).message, "not finite");
    } finally {
      disposeEncoder(enc);
    }
  }));

Deno.test("truth: knnClassify refuses non-finite features, naming the model it is given", async () => {
  const ok = { features: Float32Array.from([1, 0, 0, 1]), labels: Int32Array.from([0, 1]), count: 2, dim: 2 };
  const bad = { ...ok, features: Float32Array.from([NaN, 0, 0, 1]) };
  for (const [train, test] of [[bad, ok], [ok, bad]]) {
    const err = await assertRejects(() => knnClassify(train, test, { numClasses: 2, modelName: "model M" }));
    assertStringIncludes((err as Error).message, "model M");
  }
});

Deno.test("truth: the --knn-every monitor stops on a diverged student, naming the step, instead of logging 100%", () =>
  withTmp("caev2-truth-", async (dir) => {
    await writeRun(dir, nanWeights);
    const enc = right(await loadEncoder(dir));
    try {
      const knn = knnEvaluator({ kind: "synthetic", size: 20 }, 5);
      const err = await assertRejects(() => knn.run({ step: 5, steps: 10, encoder: enc }));
      assertStringIncludes((err as Error).message, "step 5");
      assertStringIncludes((err as Error).message, "NaN");
    } finally {
      disposeEncoder(enc);
    }
  }));

Deno.test("truth: fine-tuning a NaN checkpoint stops at step 1 naming the checkpoint (not 'lower --lr')", () =>
  withTmp("caev2-truth-", async (dir) => {
    const ckpt = await writeRun(dir, nanWeights);
    const enc = right(await loadEncoder(dir));
    try {
      const err = await assertRejects(() =>
        runFinetune(enc, {
          source: { kind: "synthetic", size: 16 },
          numClasses: 10,
          settings: { ...finetuneSettings.micro, batchSize: 8, epochs: 1 },
          key: key(0),
        })
      );
      assertStringIncludes((err as Error).message, ckpt);
      assertStringIncludes((err as Error).message, "step 1");
      assert(!(err as Error).message.includes("lower --lr"), (err as Error).message);
    } finally {
      disposeEncoder(enc);
    }
  }));

// ---------------------------------------------------------------------------------------------------------
// 2. No task overwrites a file without --force, nor ever its own input; outputs are checked before any work.

Deno.test("outputs: checkOutputs refuses an existing file without --force, a missing folder, a folder, twins, and inputs even with --force", () =>
  withTmp("caev2-truth-", async (dir) => {
    await Deno.writeTextFile(`${dir}/old.json`, "{}");
    await Deno.writeTextFile(`${dir}/ckpt.safetensors`, "weights");
    await Deno.symlink(`${dir}/ckpt.safetensors`, `${dir}/alias.safetensors`);
    await Deno.link(`${dir}/ckpt.safetensors`, `${dir}/hard.safetensors`);
    await Deno.mkdir(`${dir}/images/cat`, { recursive: true });
    const inputs = [
      { what: "the checkpoint", path: `${dir}/ckpt.safetensors` },
      { what: "the data folder's image", path: `${dir}/images`, images: true },
    ];
    const check = (path: string, force = false) => checkOutputs([{ flag: "--out", path }], { force, inputs });
    // A new file in an existing folder is fine; an existing one needs --force.
    right(await check(`${dir}/new.json`));
    const exists = left(await check(`${dir}/old.json`));
    assertStringIncludes(exists, `--out ${dir}/old.json`);
    assertStringIncludes(exists, "pass --force");
    right(await check(`${dir}/old.json`, true));
    // A folder that does not exist, and a folder given as the file.
    assertStringIncludes(left(await check(`${dir}/nope/out.json`, true)), `mkdir -p ${dir}/nope`);
    assertStringIncludes(left(await check(`${dir}/images`, true)), "is a folder");
    // The input, however it is spelled or linked, even with --force; an image in the data folder too.
    for (
      const p of ["ckpt.safetensors", "./ckpt.safetensors", "images/../ckpt.safetensors", "alias.safetensors"]
    ) {
      const m = left(await check(`${dir}/${p}`, true));
      assertStringIncludes(m, "is the checkpoint this task reads");
      assertStringIncludes(m, "--force does not allow this");
    }
    assertStringIncludes(left(await check(`${dir}/hard.safetensors`, true)), "the checkpoint");
    assertStringIncludes(left(await check(`${dir}/images/cat/x.png`, true)), "the data folder's image");
    right(await check(`${dir}/images/features.safetensors`)); // not an image: not read as data
    // Two outputs of one task on the same file.
    const twins = left(
      await checkOutputs([{ flag: "--results", path: `${dir}/r.json` }, {
        flag: "--metrics",
        path: `${dir}/./r.json`,
      }]),
    );
    assertStringIncludes(twins, "the same file as --results");
  }));

Deno.test("outputs: extract --out its own checkpoint is refused even with --force, before any work; the checkpoint is intact", () =>
  withTmp("caev2-truth-", async (dir) => {
    const ckpt = await writeRun(dir, (x) => tf.clone(x));
    const before = await Deno.readFile(ckpt);
    for (const out of [ckpt, `${dir}/checkpoints/step-000001.json`, `${dir}/config.json`]) {
      const r = await task("extract", ["--checkpoint", dir, ...small, "--out", out, "--force"]);
      assertEquals(r.code, 1, r.stdout + r.stderr);
      assertStringIncludes(r.stderr, "--force does not allow this");
      assert(!r.stdout.includes("images,"), `features were extracted first:\n${r.stdout}`);
    }
    assertEquals(await Deno.readFile(ckpt), before);
    disposeEncoder(right(await loadEncoder(ckpt))); // still a checkpoint
  }));

Deno.test("outputs: an existing --out is kept without --force and refused before any work (extract, knn, finetune); --force replaces it", () =>
  withTmp("caev2-truth-", async (dir) => {
    const out = `${dir}/old.out`;
    await Deno.writeTextFile(out, "keep me");
    const rand = ["--checkpoint", "random", "--image-size", "16", "--patch-size", "8"];
    const runs = [
      task("extract", [...rand, ...small, "--out", out]),
      task("knn", [...rand, ...small, "--out", out]),
      task("finetune", [
        ...rand,
        "--data",
        "synthetic:16",
        "--batch-size",
        "8",
        "--steps",
        "1",
        "--out",
        out,
      ]),
    ];
    for (const r of await Promise.all(runs)) {
      assertEquals(r.code, 1, r.stdout + r.stderr);
      assertStringIncludes(r.stderr, `--out ${out}: the file exists; pass --force`);
      // Refused before the backend started: nothing of the work was logged.
      assertEquals(r.stdout, "");
    }
    assertEquals(await Deno.readTextFile(out), "keep me");
    const forced = await task("knn", [...rand, ...small, "--out", out, "--force"]);
    assertEquals(forced.code, 0, forced.stderr);
    assertEquals(JSON.parse(await Deno.readTextFile(out)).checkpoint, "random");
  }));

Deno.test("outputs: an --out in a folder that does not exist is refused before any work", () =>
  withTmp("caev2-truth-", async (dir) => {
    const rand = ["--checkpoint", "random", "--image-size", "16", "--patch-size", "8"];
    const r = await task("knn", [...rand, ...small, "--out", `${dir}/missing/knn.json`]);
    assertEquals(r.code, 1, r.stdout + r.stderr);
    assertStringIncludes(r.stderr, `the folder ${dir}/missing does not exist`);
    assertEquals(r.stdout, "");
  }));
