/**
 * Evaluation issue (reproductions of 2026-11-30): the evaluations tell the truth about a model.
 *
 * 1. A diverged model (NaN or infinite weights, or weights so large that the features overflow) scored
 *    100%: top-k counted a NaN score as a hit. Now no top-k count takes a non-finite score, and knn,
 *    extract, fine-tuning and the `--knn-every` monitor stop with an error naming the checkpoint.
 * 2. `extract --out` overwrote any file, its own checkpoint included, and outputs were checked after the
 *    work. Now every output is checked first (lib/eval/outputs.ts): an existing file needs `--force`, a
 *    missing folder is refused, an input file is refused even with `--force`.
 * 3. Fine-tuning was a dead end. Now `--out` keeps the class names with the model and writes a metrics
 *    line per epoch and a results JSON beside it, `deno task classify` prints an image's top classes, and
 *    extract's rows sidecar names each row's file and class. No top-5 is printed with fewer than 6 classes.
 *
 * Tasks run as child processes on tiny encoders (micro, 16 px, 4 patches) and `synthetic:64`-like data.
 */
import { encodePng, tf } from "../lib/deps.ts";
import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertRejects,
  assertStringIncludes,
} from "../lib/core/std.ts";
import { key } from "../lib/core/random.ts";
import { disposeTree } from "../lib/core/tree.ts";
import { readSafetensors } from "../lib/core/safetensors.ts";
import { decodeImage } from "../data/decode.ts";
import { evalLoader } from "../data/loader.ts";
import { syntheticImage } from "../data/synthetic.ts";
import { studentPreset } from "../lib/models/presets.ts";
import { countTopK } from "../lib/eval/heads.ts";
import { splitFeatures } from "../lib/eval/features.ts";
import { knnClassify } from "../lib/eval/knn.ts";
import { knnEvaluator } from "../lib/eval/monitor.ts";
import { classifierApply, classifierInit, finetuneSettings } from "../lib/eval/finetune.ts";
import {
  classifyImage,
  disposeClassifier,
  loadClassifier,
  saveClassifier,
} from "../lib/eval/classifier_io.ts";
import { runFinetune } from "../lib/eval/finetune_run.ts";
import { disposeEncoder, loadEncoder, randomEncoder } from "../lib/eval/load.ts";
import { checkOutputs } from "../lib/eval/outputs.ts";
import { left, right, runTaskFile, TEST_BACKEND, withTmp } from "./helpers.ts";
import { nanWeights, writeMicroRun } from "./run_fixture.ts";

await tf.setBackend("cpu");

const cfg = studentPreset("micro", { imageSize: 16, patchSize: 8, dropPath: 0 });

const writeRun = writeMicroRun;

const task = runTaskFile;

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
    const enc = await loadEncoder(dir);
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
    const enc = await loadEncoder(dir);
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
    const enc = await loadEncoder(dir);
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
    disposeEncoder(await loadEncoder(ckpt)); // still a checkpoint
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

// ---------------------------------------------------------------------------------------------------------
// 3. Fine-tuning leads somewhere: metrics, results, class names with the model, `deno task classify`; extract
//    names each row's file and class.

/** An image folder with train/ and val/ of three classes (synthetic images of labels 0, 1, 2), 24 px PNGs. */
const writeFolder = async (root: string, perClass: { train: number; val: number }) => {
  const names = ["alpha", "beta", "gamma"];
  for (const split of ["train", "val"] as const) {
    for (const [c, name] of names.entries()) {
      await Deno.mkdir(`${root}/${split}/${name}`, { recursive: true });
      for (let i = 0; i < perClass[split]; i++) {
        const index = (split === "val" ? 500 : 0) + 10 * i + c; // label c (labels cycle every 10)
        const im = syntheticImage(0, index, 24).image;
        const rgba = new Uint8ClampedArray(24 * 24 * 4);
        for (let p = 0; p < 24 * 24; p++) rgba.set([...im.data.subarray(3 * p, 3 * p + 3), 255], 4 * p);
        const png = new Uint8Array(await encodePng(new ImageData(rgba, 24, 24)));
        await Deno.writeFile(`${root}/${split}/${name}/${i}.png`, png);
      }
    }
  }
  return names;
};

Deno.test("finetune: --out keeps the class names with the model, one metrics line per epoch and a results JSON; top-1 alone with 3 classes", () =>
  withTmp("caev2-truth-", async (dir) => {
    const names = await writeFolder(`${dir}/data`, { train: 4, val: 1 });
    const r = await task("finetune", [
      ...["--checkpoint", "random", "--image-size", "16", "--patch-size", "8", "--backend", TEST_BACKEND],
      ...[
        "--data",
        `folder:${dir}/data`,
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--out",
        `${dir}/m.safetensors`,
      ],
    ]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    const last = r.stdout.trim().split("\n").at(-1)!;
    assert(/^finetune top1=\d+\.\d\d$/.test(last), last);
    assert(!/top[2-5]/.test(r.stdout), r.stdout);
    // One line per epoch (12 training images, batch 4: 3 steps each).
    const lines = (await Deno.readTextFile(`${dir}/m.metrics.jsonl`)).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    assertEquals(lines.map((l) => [l.epoch, l.step, l.count]), [[1, 3, 3], [2, 6, 3]]);
    for (const l of lines) {
      assertEquals(Object.keys(l), ["epoch", "step", "loss", "lr", "top1", "count"]);
      assert(Number.isFinite(l.loss) && l.lr > 0);
    }
    const results = JSON.parse(await Deno.readTextFile(`${dir}/m.results.json`));
    assertEquals(results.classNames, names);
    assertEquals([results.numClasses, results.train, results.val, results.steps, results.epochs], [
      3,
      12,
      3,
      6,
      2,
    ]);
    assertEquals(results.top1, lines[1].top1);
    assertEquals(results.top5, undefined);
    assertEquals(results.model, `${dir}/m.safetensors`);
    const c = right(await loadClassifier(`${dir}/m.safetensors`));
    assertEquals(c.classNames, names);
    assertEquals(c.warnings, []);
    disposeClassifier(c);
  }));

Deno.test("classify: the top classes of each image, through the held-out evaluation's own preprocessing", () =>
  withTmp("caev2-truth-", async (dir) => {
    const names = await writeFolder(`${dir}/data`, { train: 0, val: 2 });
    // A classifier with a trained-looking head: the random encoder plus a head scaled up so classes differ.
    const enc = randomEncoder(cfg, key(2));
    const init = classifierInit(key(3), enc, 3, 1);
    await saveClassifier(`${dir}/m.safetensors`, init, cfg, { origin: "test", classNames: names });
    disposeTree(init);
    disposeEncoder(enc);
    const c = right(await loadClassifier(`${dir}/m.safetensors`));
    // The evaluation loader's batch of the val split (evaluation transform) against classifyImage per file.
    const loader = evalLoader(
      { source: { kind: "folder", path: `${dir}/data` }, batchSize: 6, imageSize: 16, workers: 0 },
      "val",
    );
    const batch = (await loader.next()).value!;
    await loader.close();
    const probs = await tf.tidy(() =>
      tf.softmax(classifierApply(c.params, c.config, c.pos, tf.tensor4d(batch.images, [6, 16, 16, 3]), {
        training: false,
      }))
    ).data();
    const files = names.flatMap((n) => [0, 1].map((i) => `${dir}/data/val/${n}/${i}.png`));
    for (const [row, path] of files.entries()) {
      const img = decodeImage(await Deno.readFile(path), path);
      assert(img._tag === "Right");
      const top = await classifyImage(c, img.right);
      assertEquals(top.length, 2); // 3 classes: the top 2, never a top-5
      for (const p of top) assertAlmostEquals(p.probability, probs[row * 3 + p.index], 1e-6, path);
      assert(top[0].probability >= top[1].probability);
      assertEquals(top[0].name, names[top[0].index]);
    }
    disposeClassifier(c);
    // The task: each image's path, then its top 2 classes by name with their probabilities.
    const r = await task("classify", [
      "--model",
      `${dir}/m.safetensors`,
      "--backend",
      TEST_BACKEND,
      ...files.slice(0, 2),
    ]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    const out = r.stdout.trim().split("\n");
    const at = out.indexOf(files[0]);
    assert(at > 0, r.stdout);
    assertEquals(out.length, at + 6, r.stdout);
    for (const line of [...out.slice(at + 1, at + 3), ...out.slice(at + 4, at + 6)]) {
      assert(/^ {2}[12]\. (alpha|beta|gamma) +\d+\.\d\d%$/.test(line), line);
    }
    // A file that does not exist is refused before the model is loaded.
    const missing = await task("classify", ["--model", `${dir}/m.safetensors`, `${dir}/nope.png`]);
    assertEquals(missing.code, 1);
    assertStringIncludes(missing.stderr, `${dir}/nope.png: no such file`);
  }));

Deno.test("extract: the rows sidecar names each row's file and class, past the files the loader skipped", () =>
  withTmp("caev2-truth-", async (dir) => {
    const names = await writeFolder(`${dir}/data`, { train: 3, val: 1 });
    // Corrupt files early in their class (00.png sorts after 0.png): the loader skips them, rows must not shift.
    await Deno.writeFile(`${dir}/data/train/alpha/00.png`, new Uint8Array([1, 2, 3]));
    await Deno.writeFile(`${dir}/data/train/beta/00.png`, new Uint8Array([1, 2, 3]));
    const r = await task("extract", [
      ...["--checkpoint", "random", "--image-size", "16", "--patch-size", "8", "--backend", TEST_BACKEND],
      ...["--data", `folder:${dir}/data`, "--out", `${dir}/f.safetensors`],
    ]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    assertStringIncludes(r.stderr, "train/beta/00.png"); // skipped, with a warning
    const file = await readSafetensors(`${dir}/f.safetensors`);
    assertEquals(JSON.parse(file.metadata.classNames), names);
    assertEquals(file.metadata.rows, "f.rows.json");
    const rows = JSON.parse(await Deno.readTextFile(`${dir}/f.rows.json`));
    assertEquals(rows.classNames, names);
    for (const split of ["train", "val"]) {
      const labels = file.tensors[`${split}.labels`].data;
      const { paths, labels: labelNames } = rows[split];
      assertEquals(paths.length, labels.length);
      assertEquals(labelNames, Array.from(labels, (y) => names[y]));
      // Each row's file lies in the folder of its class, and no skipped file is named.
      paths.forEach((p: string, i: number) => assertEquals(p.split("/").at(-2), labelNames[i], p));
      assert(!paths.some((p: string) => p.endsWith("/00.png")), paths.join());
    }
    assertEquals(rows.train.paths.length, 9);
    assertEquals(rows.train.paths[0], `${dir}/data/train/alpha/0.png`);
  }));
