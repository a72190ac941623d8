/**
 * The loaders: shapes and exact masks, the same batches for any number of workers and after a resume,
 * epochs, splits, and files that cannot be used skipped, counted and named. Image-folder fixtures are
 * written here with the decoder package's own encoders.
 */
import { evalTransform } from "../data/augment.ts";
import { toBatch, toEvalBatch } from "../data/batch.ts";
import { datasetSize, evalLoader, type Loader, type LoaderConfig, pretrainLoader } from "../data/loader.ts";
import { formatDataSource, parseDataSource } from "../data/source.ts";
import { syntheticImage } from "../data/synthetic.ts";
import { key } from "../lib/core/random.ts";
import { E, encodeJpeg, encodePng, tf } from "../lib/deps.ts";
import {
  assert,
  assertEquals,
  assertNotEquals,
  assertRejects,
  assertStringIncludes,
} from "../lib/core/std.ts";

const base: LoaderConfig = {
  source: { kind: "synthetic", size: 20 },
  batchSize: 8,
  imageSize: 32,
  patchSize: 8,
  numMasked: 6,
  masking: "block",
  minBlockPatches: 4,
  workers: 0,
};

const take = async <T>(l: Loader<T>, n: number): Promise<T[]> => {
  const out: T[] = [];
  for await (const b of l) {
    out.push(b);
    if (out.length === n) break;
  }
  await l.close();
  return out;
};

/** Warnings printed while `f` runs. */
const captureWarnings = async <T>(f: () => Promise<T>): Promise<[T, string[]]> => {
  const warn = console.warn;
  const seen: string[] = [];
  console.warn = (...a: unknown[]) => seen.push(a.join(" "));
  try {
    return [await f(), seen];
  } finally {
    console.warn = warn;
  }
};

Deno.test("parseDataSource reads the --data spellings and says what it expected", () => {
  for (const s of ["synthetic", "synthetic:5000", "folder:/data/imagenet", "wds:shards/a-{000..009}.tar"]) {
    const r = parseDataSource(s);
    assert(E.isRight(r), s);
    assertEquals(formatDataSource(r.right), s);
  }
  assertEquals(parseDataSource("folder:C:/x"), E.right({ kind: "folder", path: "C:/x" }));
  for (const s of ["imagenet", "synthetic:0", "synthetic:1e3", "folder:", "wds:", ""]) {
    const r = parseDataSource(s);
    assert(E.isLeft(r), s);
    assertStringIncludes(r.left, '"folder:PATH"');
  }
});

Deno.test("pretraining batches: shapes, exactly numMasked per row, both views, labels, positions", async () => {
  const [b1, b2, b3] = await take(pretrainLoader(base, key(1)), 3);
  for (const b of [b1, b2, b3]) {
    assertEquals([b.size, b.height, b.width], [8, 32, 32]);
    assertEquals(b.studentImages.length, 8 * 32 * 32 * 3);
    assertEquals(b.teacherImages.length, 8 * 32 * 32 * 3);
    assertEquals(b.mask.length, 8 * 16);
    for (let r = 0; r < 8; r++) {
      assertEquals(b.mask.subarray(r * 16, r * 16 + 16).reduce((a, v) => a + v, 0), 6);
    }
    assert(b.labels.every((l) => l >= 0 && l < 10));
    assert(b.studentImages.every((v) => v > -2.2 && v < 2.7), "ImageNet-normalised range");
  }
  // 20 images, batch 8, dropLast: two batches per epoch.
  assertEquals([b1.position, b2.position, b3.position], [{ epoch: 0, index: 8 }, { epoch: 0, index: 16 }, {
    epoch: 1,
    index: 8,
  }]);
});

Deno.test("the same key gives the same batches; another key, other batches", async () => {
  const a = await take(pretrainLoader(base, key(2)), 2);
  const b = await take(pretrainLoader(base, key(2)), 2);
  const c = await take(pretrainLoader(base, key(3)), 2);
  assertEquals(a, b);
  assertNotEquals(a[0].studentImages, c[0].studentImages);
  assertNotEquals(a[0].mask, c[0].mask);
});

Deno.test("workers (2) and inline (0) produce identical batches across an epoch boundary", async () => {
  const cfg = { ...base, batchSize: 6, prefetch: 3 };
  const inline = await take(pretrainLoader(cfg, key(4)), 5);
  const parallel = await take(pretrainLoader({ ...cfg, workers: 2 }, key(4)), 5);
  assertEquals(parallel, inline);
});

Deno.test("resuming from a batch's position continues exactly as the uninterrupted loader", async () => {
  const all = await take(pretrainLoader(base, key(5)), 6);
  const resumed = await take(pretrainLoader(base, key(5), all[1].position), 4);
  assertEquals(resumed, all.slice(2));
});

Deno.test("epochs are permutations; dropLast and epochs bound the stream", async () => {
  const cfg = {
    ...base,
    source: { kind: "synthetic" as const, size: 20 },
    batchSize: 6,
    dropLast: false,
    epochs: 2,
  };
  const batches = await take(pretrainLoader(cfg, key(6)), 100);
  assertEquals(batches.map((b) => b.size), [6, 6, 6, 2, 6, 6, 6, 2]);
  for (const epoch of [batches.slice(0, 4), batches.slice(4)]) {
    const labels = epoch.flatMap((b) => Array.from(b.labels)).sort();
    assertEquals(labels, Array.from({ length: 20 }, (_, i) => i % 10).sort());
  }
  assertNotEquals(batches[0].labels, batches[4].labels);
  const unshuffled = await take(pretrainLoader({ ...cfg, shuffle: false, augment: false }, key(6)), 1);
  assertEquals(Array.from(unshuffled[0].labels), [0, 1, 2, 3, 4, 5]);
});

Deno.test("augment: false gives the evaluation transform in both views", async () => {
  const [b] = await take(pretrainLoader({ ...base, shuffle: false, augment: false }, key(7)), 1);
  const want = evalTransform(syntheticImage(0, 0, 32).image, 32);
  assertEquals(b.studentImages.subarray(0, want.length), want);
});

Deno.test("toBatch uploads [B, H, W, 3] tensors", async () => {
  await tf.setBackend("cpu");
  const [h] = await take(pretrainLoader(base, key(8)), 1);
  const b = toBatch(h);
  assertEquals(b.studentImages.shape, [8, 32, 32, 3]);
  assertEquals(b.teacherImages.shape, [8, 32, 32, 3]);
  assertEquals(await b.studentImages.data(), h.studentImages);
  tf.dispose([b.studentImages, b.teacherImages]);
});

Deno.test("evalLoader: one ordered pass over a split, last batch smaller; synthetic val is fresh images", async () => {
  const cfg = { source: { kind: "synthetic" as const, size: 30 }, batchSize: 4, imageSize: 16, workers: 0 };
  const val = await take(evalLoader(cfg, "val"), 100);
  assertEquals(val.map((b) => b.size), [3]);
  assertEquals(Array.from(val[0].labels), [0, 1, 2]);
  assertEquals(val[0].images.subarray(0, 16 * 16 * 3), evalTransform(syntheticImage(0, 30, 16).image, 16));
  const train = await take(evalLoader(cfg, "train"), 100);
  assertEquals(train.map((b) => b.size), [4, 4, 4, 4, 4, 4, 4, 2]);
  assertEquals(toEvalBatch(val[0]).images.shape, [3, 16, 16, 3]);
  assertEquals(await datasetSize(cfg.source, "val"), 3);
});

/** A 24 x 16 image of one colour per class and index, as RGBA ImageData. */
const image = (r: number, g: number) => {
  const d = new Uint8ClampedArray(24 * 16 * 4);
  for (let i = 0; i < 24 * 16; i++) d.set([r, g, (i * 7) % 256, 255], i * 4);
  return new ImageData(d, 24, 16);
};

/** root/cat/*.png (6) and root/dog/*.jpg (6), plus files that must be skipped. */
const writeFolder = async (root: string) => {
  await Deno.mkdir(`${root}/cat/sub`, { recursive: true });
  await Deno.mkdir(`${root}/dog`, { recursive: true });
  for (let i = 0; i < 6; i++) {
    const dir = i < 4 ? `${root}/cat` : `${root}/cat/sub`;
    await Deno.writeFile(`${dir}/c${i}.png`, new Uint8Array(await encodePng(image(200, i * 10))));
    await Deno.writeFile(`${root}/dog/d${i}.jpg`, new Uint8Array(await encodeJpeg(image(20, i * 10))));
  }
  const jpg = new Uint8Array(await encodeJpeg(image(1, 2)));
  await Deno.writeFile(`${root}/dog/truncated.jpg`, jpg.slice(0, jpg.length >> 1));
  await Deno.writeFile(`${root}/dog/corrupt.jpg`, Uint8Array.from({ length: 300 }, (_, i) => (i * 31) % 256));
  await Deno.writeFile(`${root}/dog/pic.bmp`, new TextEncoder().encode("BM this is not decoded"));
  await Deno.writeTextFile(`${root}/dog/notes.txt`, "not an image: not listed");
};

Deno.test("image folder: class labels, unusable files skipped with a warning, counted and named", async () => {
  const root = await Deno.makeTempDir();
  try {
    await writeFolder(root);
    // No val/: every 10th file of the sorted list is held out. Sorted: cat (6), dog (9 images listed).
    assertEquals(await datasetSize({ kind: "folder", path: root }, "train"), 14);
    assertEquals(await datasetSize({ kind: "folder", path: root }, "val"), 1);
    const cfg = {
      ...base,
      source: { kind: "folder" as const, path: root },
      batchSize: 4,
      dropLast: false,
      epochs: 1,
    };
    const loader = pretrainLoader(cfg, key(9));
    const [batches, warnings] = await captureWarnings(() => take(loader, 100));
    const labels = batches.flatMap((b) => Array.from(b.labels));
    assertEquals(labels.length, 11);
    assertEquals(labels.filter((l) => l === 0).length, 6);
    assertEquals(labels.filter((l) => l === 1).length, 5);
    assertEquals(loader.stats.decoded, 11);
    assertEquals(loader.stats.skipped, 3);
    assertEquals([...loader.stats.skippedFiles].sort(), [
      "dog/corrupt.jpg",
      "dog/pic.bmp",
      "dog/truncated.jpg",
    ]);
    assertEquals(warnings.length, 3);
    assertStringIncludes(warnings.join("\n"), "dog/truncated.jpg: truncated JPEG");
    assertStringIncludes(warnings.join("\n"), "dog/pic.bmp: BMP images are not supported");
    assertStringIncludes(warnings.join("\n"), "dog/corrupt.jpg: not a JPEG or PNG");
    // The same with two workers.
    const [again] = await captureWarnings(() => take(pretrainLoader({ ...cfg, workers: 2 }, key(9)), 100));
    assertEquals(again, batches);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("image folder with train/ and val/: val/ is the held-out split", async () => {
  const root = await Deno.makeTempDir();
  try {
    await writeFolder(`${root}/train`);
    await Deno.mkdir(`${root}/val/dog`, { recursive: true });
    await Deno.writeFile(`${root}/val/dog/v.png`, new Uint8Array(await encodePng(image(9, 9))));
    const src = { kind: "folder" as const, path: root };
    assertEquals(await datasetSize(src, "train"), 15);
    const [val] = await captureWarnings(() =>
      take(evalLoader({ source: src, batchSize: 8, imageSize: 16, workers: 0 }, "val"), 10)
    );
    assertEquals(val.map((b) => Array.from(b.labels)), [[1]]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("a missing folder rejects the first batch with the path and what was expected", async () => {
  const l = pretrainLoader({ ...base, source: { kind: "folder", path: "/no/such/dir" } }, key(0));
  await assertRejects(() => l.next(), Error, "/no/such/dir");
  await l.close();
});

Deno.test("bad settings are refused up front", () => {
  for (
    const [bad, msg] of [
      [{ patchSize: 5 }, "dividing imageSize"],
      [{ numMasked: 17 }, "0..16"],
      [{ batchSize: 0 }, "batchSize"],
      [{ workers: -1 }, "workers"],
    ] as const
  ) {
    let err = "";
    try {
      pretrainLoader({ ...base, ...bad }, key(0));
    } catch (e) {
      err = (e as Error).message;
    }
    assertStringIncludes(err, msg);
  }
});

Deno.test("shards: two ranks' batches are the halves of one process's batches, positions shared, resume too", async () => {
  // 20 images, global batch 8 = 2 ranks x 4, two global batches per epoch (dropLast), across an epoch.
  const whole = await take(pretrainLoader(base, key(6)), 3);
  const half = { ...base, batchSize: 4 };
  const ranks = await Promise.all(
    [0, 1].map((rank) => take(pretrainLoader({ ...half, shard: { rank, size: 2 } }, key(6)), 3)),
  );
  const px = 32 * 32 * 3, L = 16;
  for (let i = 0; i < 3; i++) {
    for (const [rank, b] of ranks.map((r, k) => [k, r[i]] as const)) {
      assertEquals(b.size, 4);
      assertEquals(
        b.studentImages,
        whole[i].studentImages.slice(rank * 4 * px, (rank + 1) * 4 * px),
        `batch ${i} rank ${rank}`,
      );
      assertEquals(b.teacherImages, whole[i].teacherImages.slice(rank * 4 * px, (rank + 1) * 4 * px));
      assertEquals(b.mask, whole[i].mask.slice(rank * 4 * L, (rank + 1) * 4 * L));
      assertEquals(b.labels, whole[i].labels.slice(rank * 4, (rank + 1) * 4));
      assertEquals(b.position, whole[i].position, "positions are global batch ends, the same on every rank");
    }
  }
  // Resuming a rank from the shared position continues its own share.
  const resumed = await take(
    pretrainLoader({ ...half, shard: { rank: 1, size: 2 } }, key(6), whole[0].position),
    2,
  );
  assertEquals(resumed, ranks[1].slice(1, 3));
});
