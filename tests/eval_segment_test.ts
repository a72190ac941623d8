/**
 * Semantic segmentation on frozen features (`deno task segment`): mmseg's mIoU against hand computations
 * (ignore index, classes absent from labels and predictions, a class predicted but never labelled), the
 * bilinear upsampling against tfjs's half-pixel resize (PyTorch's `align_corners=False`), the per-pixel
 * loss, label PNGs (grey, low-depth grey, palette; colour refused), the ADE20K folder reader on a tiny
 * generated folder (zero reduced, nearest-neighbour labels at the input size, full-size labels for
 * scoring), the synthetic source, the task end to end on a random encoder with `--out`, and a NaN
 * checkpoint that stops the task naming it.
 */
import { encodeJpeg, tf } from "../lib/deps.ts";
import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertStringIncludes,
  assertThrows,
} from "../lib/core/std.ts";
import { key } from "../lib/core/random.ts";
import { startRuntime } from "../lib/core/runtime.ts";
import { addSegCounts, segCounts, segScores } from "../lib/eval/seg_metrics.ts";
import {
  bilinearWeights,
  pixelCrossEntropy,
  runSegmentation,
  upsampleBilinear,
} from "../lib/eval/segment.ts";
import { disposeEncoder, loadEncoder } from "../lib/eval/load.ts";
import {
  listAde20k,
  parseSegSource,
  readLabelPng,
  reduceZeroLabel,
  resizeLabelsNearest,
  type SegBatch,
  segBatches,
  segSplitSize,
  SYNTHETIC_SEG_SEED,
  syntheticSegClasses,
  syntheticSegImage,
} from "../data/segmentation.ts";
import { syntheticImage } from "../data/synthetic.ts";
import { left, right, TEST_BACKEND, withTmp } from "./helpers.ts";
import { nanWeights, writeMicroRun } from "./run_fixture.ts";
import { pngChunk, pngFile } from "./png_fixture.ts";

// wasm (what "auto" picks without a hardware GPU): the head's training is 5x to 10x faster than on cpu.
await startRuntime(TEST_BACKEND);

// ---------------------------------------------------------------------------------------------------------
// A minimal PNG writer (grey or palette, 1 to 8 bits): the codecs of lib/deps.ts write RGBA only.

const deflate = async (b: Uint8Array<ArrayBuffer>) =>
  new Uint8Array(
    await new Response(new Blob([b]).stream().pipeThrough(new CompressionStream("deflate"))).arrayBuffer(),
  );

/** A grey (or, with `palette`, an indexed) PNG of `values`, `depth` bits per pixel. */
const indexPng = async (
  width: number,
  height: number,
  values: ArrayLike<number>,
  o: { palette?: readonly (readonly [number, number, number])[]; depth?: number } = {},
): Promise<Uint8Array> => {
  const depth = o.depth ?? 8;
  const rowBytes = Math.ceil((width * depth) / 8);
  const raw = new Uint8Array(height * (1 + rowBytes)); // filter byte 0 (none) per row
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const bit = x * depth;
      raw[y * (1 + rowBytes) + 1 + (bit >> 3)] |= values[y * width + x] << (8 - depth - (bit & 7));
    }
  }
  const ihdr = new Uint8Array(13);
  new DataView(ihdr.buffer).setUint32(0, width);
  new DataView(ihdr.buffer).setUint32(4, height);
  ihdr[8] = depth;
  ihdr[9] = o.palette ? 3 : 0;
  const chunks = [pngChunk("IHDR", ihdr)];
  if (o.palette) chunks.push(pngChunk("PLTE", Uint8Array.from(o.palette.flat())));
  chunks.push(pngChunk("IDAT", await deflate(raw)), pngChunk("IEND", new Uint8Array()));
  return pngFile(chunks);
};

const jpeg = async (width: number, height: number, seed: number) => {
  const data = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    data.set([(i * 7 + seed * 40) % 256, (i * 3) % 256, 128, 255], 4 * i);
  }
  return new Uint8Array(
    await encodeJpeg({ data, width, height, colorSpace: "srgb" } as ImageData, { quality: 90 }),
  );
};

// ---------------------------------------------------------------------------------------------------------
// Scores.

Deno.test("seg metrics: mmseg's mIoU, mAcc, aAcc by hand (ignore index, absent classes)", () => {
  // 4 classes. Image 1: labels with one ignored pixel; image 2 adds class 1 and a prediction of class 3,
  // which is never labelled (IoU 0, counted). Class 2 is neither labelled nor predicted (left out).
  const c = segCounts(4);
  addSegCounts(c, [0, 0, 1, 1, 2], [0, 1, 1, 255, 255]);
  addSegCounts(c, [1, 3, 0], [1, 1, 0]);
  // Class 0: labelled at pixels {0, img2 #2} = 2, predicted there (labelled pixels only) 2 + 0... count:
  // predictions on labelled pixels: img1 #0 -> 0, #1 -> 0, #2 -> 1; img2 #0 -> 1, #1 -> 3, #2 -> 0.
  // label 0: img1 #0, img2 #2 -> area 2, hits 2; pred 0 area: img1 #0, #1, img2 #2 = 3 -> IoU 2 / 3.
  // label 1: img1 #1, #2, img2 #0, #1 -> area 4, hits img1 #2, img2 #0 = 2; pred 1 area 2 -> IoU 2 / 4.
  // class 3: label 0, pred 1 -> IoU 0. class 2: pred 0 (img1 #4 is ignored), label 0 -> left out.
  const s = segScores(c);
  assertEquals(s.iou[2], null);
  assertEquals(s.acc[2], null);
  assertEquals(s.acc[3], null); // never labelled: no accuracy, but its IoU is 0 and counts
  assertAlmostEquals(s.iou[0]!, 100 * 2 / 3, 1e-9);
  assertAlmostEquals(s.iou[1]!, 100 * 2 / 4, 1e-9);
  assertEquals(s.iou[3], 0);
  assertAlmostEquals(s.mIoU, 100 * (2 / 3 + 2 / 4 + 0) / 3, 1e-9);
  assertAlmostEquals(s.mAcc, 100 * (2 / 2 + 2 / 4) / 2, 1e-9);
  assertAlmostEquals(s.aAcc, 100 * 4 / 6, 1e-9);
  assertEquals(s.pixels, 6);
  // Summed over the set, not averaged per image: one image alone scores differently.
  const one = segCounts(4);
  addSegCounts(one, [1, 3, 0], [1, 1, 0]);
  assertAlmostEquals(segScores(one).mIoU, 100 * (1 + 1 / 2 + 0) / 3, 1e-9);
  // A label that is neither a class nor the ignore index is an error, not a silent miss.
  assertThrows(() => addSegCounts(segCounts(2), [0], [5]), Error, "outside the 2 classes");
  // Nothing labelled: no score (NaN), not 0 or 100.
  assert(Number.isNaN(segScores(segCounts(2)).mIoU));
});

Deno.test("seg head: bilinear upsampling is align_corners=False (tfjs half-pixel); the loss skips ignored pixels", async () => {
  assertEquals([...bilinearWeights(2, 4)], [1, 0, 0.75, 0.25, 0.25, 0.75, 0, 1]);
  assertEquals([...bilinearWeights(3, 3)], [1, 0, 0, 0, 1, 0, 0, 0, 1]);
  const x = tf.randomNormal([2, 3, 4, 5], 0, 1, "float32", 7) as tf.Tensor4D;
  const ours = upsampleBilinear(x, 7, 9);
  const ref = tf.image.resizeBilinear(x, [7, 9], false, true);
  assert((await tf.max(tf.abs(tf.sub(ours, ref))).data())[0] < 1e-5);
  const rows = upsampleBilinear(x, 7, 9, [2, 5]);
  const refRows = tf.slice(ref, [0, 2, 0, 0], [2, 3, 9, 5]);
  assert((await tf.max(tf.abs(tf.sub(rows, refRows))).data())[0] < 1e-5);
  // Cross-entropy: mean over the labelled pixels only.
  const z = [[2, 0, -1], [0, 0, 0], [1, 5, 2]];
  const lse = (r: number[]) => Math.log(r.reduce((s, v) => s + Math.exp(v), 0));
  const loss = await pixelCrossEntropy(tf.tensor2d(z), Int32Array.from([0, 255, 2])).data();
  assertAlmostEquals(loss[0], ((lse(z[0]) - 2) + (lse(z[2]) - 2)) / 2, 1e-5);
  assertEquals((await pixelCrossEntropy(tf.tensor2d(z), Int32Array.from([255, 255, 255])).data())[0], 0);
  tf.dispose([x, ours, ref, rows, refRows]);
});

Deno.test("segment: the score follows what the patch tokens hold; no tensor is left behind", async () => {
  // A random encoder against the same encoder blinded (patch embedding zeroed: every token holds only its
  // position, so the head can learn where shapes tend to be, not where they are), with the task's defaults
  // on 200 images of 32 px.
  const m = await loadEncoder("random", { imageSize: 32, patchSize: 8, seed: 0 });
  const kernel = tf.zerosLike(m.params.patchEmbed.kernel) as tf.Tensor2D;
  const blind = { ...m, params: { ...m.params, patchEmbed: { ...m.params.patchEmbed, kernel } } };
  const o = {
    source: { kind: "synthetic-seg", size: 200 } as const,
    numClasses: 3,
    epochs: 10,
    batchSize: 16,
    lr: 1e-2,
    warmupEpochs: 1,
    weightDecay: 1e-4,
    key: key(0),
  };
  const before = tf.memory().numTensors;
  const seeing = await runSegmentation(m, o);
  const blinded = await runSegmentation(blind, o);
  assertEquals(tf.memory().numTensors, before);
  assertEquals([seeing.train, seeing.val, seeing.steps], [200, 50, 120]);
  const [s, b] = [seeing.scores, blinded.scores];
  assert(s.mIoU > b.mIoU + 5, `random init ${s.mIoU.toFixed(2)}, blinded ${b.mIoU.toFixed(2)}`);
  // Stripes in particular are only seen through the pixels.
  assert(s.iou[2]! > b.iou[2]! + 5, `striped IoU ${s.iou[2]} vs ${b.iou[2]}`);
  disposeEncoder(m);
  kernel.dispose();
});

// ---------------------------------------------------------------------------------------------------------
// Data.

Deno.test("seg data: label PNGs are read as indices (grey, 4-bit grey, palette); colour and JPEG refused", async () => {
  const g = right(readLabelPng(await indexPng(3, 2, [0, 1, 2, 150, 255, 7]), "g.png"));
  assertEquals([g.width, g.height, [...g.labels]], [3, 2, [0, 1, 2, 150, 255, 7]]);
  // 4-bit grey: the decoder scales levels to 0..255 (1 -> 17); the reader gives back the level.
  const g4 = right(readLabelPng(await indexPng(4, 1, [0, 1, 5, 15], { depth: 4 }), "g4.png"));
  assertEquals([...g4.labels], [0, 1, 5, 15]);
  // Palette: the decoder returns the colours; the reader maps them back to the indices.
  const pal = [[0, 0, 0], [10, 20, 30], [200, 0, 0], [0, 255, 0]] as const;
  const p = right(readLabelPng(await indexPng(2, 2, [3, 1, 2, 0], { palette: pal }), "p.png"));
  assertEquals([...p.labels], [3, 1, 2, 0]);
  const p2 = right(readLabelPng(await indexPng(4, 1, [0, 1, 2, 3], { palette: pal, depth: 2 }), "p2.png"));
  assertEquals([...p2.labels], [0, 1, 2, 3]);
  const twin = [[0, 0, 0], [5, 5, 5], [5, 5, 5]] as const;
  assertStringIncludes(
    left(readLabelPng(await indexPng(1, 1, [1], { palette: twin }), "t.png")),
    "same colour",
  );
  // An RGB image whose channels differ is an RGB-encoded label map, not indices.
  const rgba = new Uint8ClampedArray([10, 20, 30, 255]);
  const { encodePng } = await import("../lib/deps.ts");
  const colour = new Uint8Array(
    await encodePng({ data: rgba, width: 1, height: 1, colorSpace: "srgb" } as ImageData),
  );
  assertStringIncludes(left(readLabelPng(colour, "c.png")), "c.png: a colour image");
  assertStringIncludes(left(readLabelPng(await jpeg(8, 8, 0), "a.jpg")), "a.jpg: a label map must be a PNG");
  // mmseg's reduce_zero_label and nearest-neighbour resizing.
  assertEquals([...reduceZeroLabel(Uint8Array.from([0, 1, 2, 150, 255]))], [255, 0, 1, 149, 255]);
  // 3x2 -> 2x1, sampling output pixel centres: row floor(0.5 * 2) = 1, columns floor(0.5 * 1.5) = 0 and
  // floor(1.5 * 1.5) = 2.
  assertEquals([...resizeLabelsNearest(Uint8Array.from([1, 2, 3, 4, 5, 6]), 3, 2, 2, 1)], [4, 6]);
});

Deno.test("seg data: the ADE20K folder reader on a tiny generated folder", () =>
  withTmp("caev2-ade-", async (dir) => {
    for (
      const sub of [
        "images/training/sub",
        "images/validation",
        "annotations/training/sub",
        "annotations/validation",
      ]
    ) {
      await Deno.mkdir(`${dir}/${sub}`, { recursive: true });
    }
    // Training: b.jpg (grey labels 0..3 in quadrants of 16x12) and sub/a.jpg (palette labels); sorted by
    // path, "b.jpg" < "sub/a.jpg".
    const quad = Array.from(
      { length: 16 * 12 },
      (_, i) => ((i % 16) < 8 ? 0 : 1) + (Math.floor(i / 16) < 6 ? 0 : 2),
    );
    await Deno.writeFile(`${dir}/images/training/b.jpg`, await jpeg(16, 12, 1));
    await Deno.writeFile(`${dir}/annotations/training/b.png`, await indexPng(16, 12, quad));
    await Deno.writeFile(`${dir}/images/training/sub/a.jpg`, await jpeg(8, 8, 2));
    const pal = [[0, 0, 0], [1, 1, 1], [9, 9, 9], [200, 10, 10]] as const;
    await Deno.writeFile(
      `${dir}/annotations/training/sub/a.png`,
      await indexPng(8, 8, Array.from({ length: 64 }, (_, i) => i % 4), { palette: pal }),
    );
    await Deno.writeFile(`${dir}/images/validation/v.jpg`, await jpeg(12, 10, 3));
    await Deno.writeFile(
      `${dir}/annotations/validation/v.png`,
      await indexPng(12, 10, new Array(120).fill(151)),
    );

    const source = right(parseSegSource(`ade20k:${dir}`));
    const train = await listAde20k(dir, "train");
    assertEquals(train.map((t) => t.image.slice(dir.length)), [
      "/images/training/b.jpg",
      "/images/training/sub/a.jpg",
    ]);
    assertEquals(train[1].annotation, `${dir}/annotations/training/sub/a.png`);
    assertEquals(await segSplitSize(source, "val"), 1);

    const batches: SegBatch[] = [];
    for await (const b of segBatches(source, "train", { imageSize: 8, batchSize: 2 })) batches.push(b);
    assertEquals(batches.length, 1);
    const [b] = batches;
    assertEquals(b.size, 2);
    assertEquals(b.images.length, 2 * 8 * 8 * 3);
    // b.png, zero reduced (0 -> 255, v -> v - 1), nearest to 8x8: quadrants of 4x4.
    const first = [...b.labels.subarray(0, 64)];
    const want = Array.from(
      { length: 64 },
      (_, i) => [255, 0, 1, 2][((i % 8) < 4 ? 0 : 1) + (Math.floor(i / 8) < 4 ? 0 : 2)],
    );
    assertEquals(first, want);
    // Full-size labels are kept for scoring, reduced too.
    assertEquals([b.full[0].width, b.full[0].height], [16, 12]);
    assertEquals(b.full[0].labels[0], 255);
    assertEquals(b.full[0].labels[15], 0);
    // The palette map: indices 0..3 -> 255, 0, 1, 2.
    assertEquals([...b.labels.subarray(64, 68)], [255, 0, 1, 2]);
    for await (const v of segBatches(source, "val", { imageSize: 8, batchSize: 4 })) {
      assertEquals([v.full[0].width, v.full[0].height, v.full[0].labels[0]], [12, 10, 150]);
    }
    // An image without its label map is named.
    await Deno.writeFile(`${dir}/images/training/c.jpg`, await jpeg(8, 8, 4));
    let message = "";
    try {
      await listAde20k(dir, "train");
    } catch (e) {
      message = (e as Error).message;
    }
    assertStringIncludes(message, `${dir}/annotations/training/c.png`);
    // A classification source is refused with what to use.
    assertStringIncludes(left(parseSegSource("synthetic")), "no per-pixel labels");
  }));

Deno.test("seg data: synthetic-seg is the synthetic source's images (seed 1) with their shapes' masks", async () => {
  for (let i = 0; i < 10; i++) {
    const a = syntheticSegImage(SYNTHETIC_SEG_SEED, i, 32), b = syntheticImage(SYNTHETIC_SEG_SEED, i, 32);
    assertEquals(a.image.data, b.image.data, `image ${i}: the pixels of data/synthetic.ts`);
    // Background where the shape is absent, its fill (label % 2: solid 1, striped 2) where it covers.
    const fill = (b.label % 2) + 1;
    assert(a.labels.every((v) => v === 0 || v === fill), `image ${i}`);
    const covered = a.labels.filter((v) => v === fill).length;
    assert(covered > 32 && covered < 32 * 32 - 32, `image ${i}: ${covered} shape pixels`);
  }
  assertEquals(syntheticSegImage(1, 5, 32).labels, syntheticSegImage(1, 5, 32).labels);
  assertEquals(syntheticSegClasses, ["background", "solid shape", "striped shape"]);
  const source = right(parseSegSource("synthetic-seg:8"));
  assertEquals([await segSplitSize(source, "train"), await segSplitSize(source, "val")], [8, 2]);
  for await (const v of segBatches(source, "val", { imageSize: 32, batchSize: 8 })) {
    assertEquals(v.names, ["synthetic-seg #8", "synthetic-seg #9"]);
    assertEquals(v.labels.subarray(0, 32 * 32), syntheticSegImage(SYNTHETIC_SEG_SEED, 8, 32).labels);
  }
});

// ---------------------------------------------------------------------------------------------------------
// The task.

const decoder = new TextDecoder();
const task = async (args: string[]) => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../tasks/segment.ts", import.meta.url).pathname, ...args],
    env: { NO_COLOR: "1", CAEV2_BACKEND: TEST_BACKEND },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
};
const tiny = ["--data", "synthetic-seg:8", "--epochs", "1", "--batch-size", "4", "--backend", TEST_BACKEND];

Deno.test("segment task: a random encoder end to end, --out JSON, an existing --out needs --force", () =>
  withTmp("caev2-seg-", async (dir) => {
    const rand = ["--checkpoint", "random", "--image-size", "16", "--patch-size", "8"];
    const r = await task([...rand, ...tiny, "--out", `${dir}/seg.json`]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    assert(/segment mIoU=\d+\.\d\d mAcc=\d+\.\d\d aAcc=\d+\.\d\d\n$/.test(r.stdout), r.stdout);
    const j = JSON.parse(await Deno.readTextFile(`${dir}/seg.json`));
    assertEquals([j.checkpoint, j.data, j.numClasses, j.train, j.val], [
      "random",
      "synthetic-seg:8",
      3,
      8,
      2,
    ]);
    assertEquals(j.perClass.map((p: { name: string }) => p.name), syntheticSegClasses);
    assertEquals(
      r.stdout.trim().split("\n").at(-1),
      `segment mIoU=${j.mIoU.toFixed(2)} mAcc=${j.mAcc.toFixed(2)} aAcc=${j.aAcc.toFixed(2)}`,
    );
    const again = await task([...rand, ...tiny, "--out", `${dir}/seg.json`]);
    assertEquals(again.code, 1);
    assertStringIncludes(again.stderr, "pass --force");
    assert(!again.stdout.includes("backend:"), "refused before any work");
    const wrong = await task([...rand, "--data", "synthetic:8"]);
    assertEquals(wrong.code, 1);
    assertStringIncludes(wrong.stderr, "no per-pixel labels");
  }));

Deno.test("segment task: a checkpoint whose weights are NaN stops, naming it, with no score", () =>
  withTmp("caev2-seg-nan-", async (dir) => {
    await writeMicroRun(dir, nanWeights);
    const r = await task(["--checkpoint", dir, ...tiny, "--out", `${dir}/seg.json`]);
    assertEquals(r.code, 1, r.stdout + r.stderr);
    assertStringIncludes(r.stderr, `${dir}/checkpoints/step-000001.safetensors`);
    assertStringIncludes(r.stderr, "NaN");
    assert(!r.stdout.includes("segment mIoU"), r.stdout);
    let exists = true;
    await Deno.stat(`${dir}/seg.json`).catch(() => (exists = false));
    assert(!exists, "no results file for a NaN model");
  }));

// ---------------------------------------------------------------------------------------------------------
// Does pretraining help? Only past a few hundred steps. Measured on the 2-core dev machine with the task's
// defaults: the default 150-step run scores within about one point of the weights it started from (seeds
// 0, 1, 2: +1.0, +0.3, +0.1 mIoU), and runs of 60 to 200 steps at 32 px score below them (29 to 33 against
// 37.5). The 150-step student's patch tokens are low-rank (4 directions hold 90% of their variance, 7 at
// random init) and 55% of their variance lies between images (6% at random init): they hold more of the
// image and less of the patch. After 600 steps the student is ahead on every seed measured (+4.5 to +6
// mIoU). This test takes 4 to 8 minutes on 2 cores, too long for the suite: CAEV2_SLOW_TESTS=1 runs it.

Deno.test({
  name: "segment: after 600 steps of pretraining the encoder beats the weights it started from (slow)",
  ignore: Deno.env.get("CAEV2_SLOW_TESTS") !== "1",
  fn: () =>
    withTmp("caev2-seg-proof-", async (dir) => {
      const pre = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../tasks/pretrain.ts", import.meta.url).pathname,
          ...["--seed", "0", "--steps", "600", "--out", `${dir}/run`, "--backend", TEST_BACKEND],
        ],
        env: { NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(pre.code, 0, decoder.decode(pre.stderr));
      const score = async (checkpoint: string) => {
        const r = await task(["--checkpoint", checkpoint, "--seed", "0", "--backend", TEST_BACKEND]);
        assertEquals(r.code, 0, r.stdout + r.stderr);
        return Number(/segment mIoU=(\d+\.\d+)/.exec(r.stdout)![1]);
      };
      const pretrained = await score(`${dir}/run`), random = await score("random");
      assert(pretrained > random + 3, `pretrained ${pretrained}, random init ${random}`);
    }),
});
