/**
 * The feature-extractor API (README "Features of your own images"): `loadEncoder` of a run directory, then
 * `embedImages` of a folder of image files gives `[N, D]`, row i for the i-th file in sorted order, the same
 * numbers as the evaluation loader gives for those files (the official evaluation transform: bicubic resize,
 * centre crop, ImageNet mean/std). Lists of paths and decoded pixels, mean pooling, and errors that name the
 * file.
 */
import { tf } from "../lib/deps.ts";
import { encodeJpeg, encodePng } from "../lib/deps.ts";
import { assert, assertAlmostEquals, assertEquals, assertRejects } from "../lib/core/std.ts";
import { key } from "../lib/core/random.ts";
import { flatten } from "../lib/core/tree.ts";
import { caev2Init } from "../lib/models/caev2.ts";
import { studentPreset } from "../lib/models/presets.ts";
import { saveCheckpoint } from "../lib/train/checkpoint.ts";
import { parseDataSource } from "../data/source.ts";
import { readImage } from "../data/decode.ts";
import type { RgbImage } from "../data/image.ts";
import { syntheticImage } from "../data/synthetic.ts";
import { splitFeatures } from "../lib/eval/features.ts";
import { embedImages, listImages } from "../lib/eval/embed.ts";
import { disposeEncoder, loadEncoder } from "../lib/eval/load.ts";
import { right, withTmp } from "./helpers.ts";

await tf.setBackend("cpu");

/** A synthetic image `side` px, cut to `w x h` (not square, so the resize and crop matter). */
const picture = (index: number, w: number, h: number): RgbImage => {
  const side = Math.max(w, h);
  const full = syntheticImage(0, index, side).image;
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) data.set(full.data.subarray(y * side * 3, (y * side + w) * 3), y * w * 3);
  return { width: w, height: h, data };
};

const rgba = (img: RgbImage): ImageData => {
  const out = new Uint8ClampedArray(img.width * img.height * 4);
  for (let p = 0; p < img.width * img.height; p++) {
    out.set([...img.data.subarray(3 * p, 3 * p + 3), 255], 4 * p);
  }
  return new ImageData(out, img.width, img.height);
};

const writePng = async (path: string, img: RgbImage) =>
  await Deno.writeFile(path, new Uint8Array(await encodePng(rgba(img))));

/** A pretraining run directory as `deno task pretrain --out DIR` leaves it: config.json and a checkpoint. */
const writeRun = async (dir: string) => {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({ model: "micro", imageSize: 32, patchSize: 8 }),
  );
  const p = caev2Init(key(4), studentPreset("micro", { imageSize: 32, patchSize: 8, dropPath: 0 }));
  const meta = {
    step: 7,
    key: [0, 1] as const,
    configHash: "h",
    dataPosition: { epoch: 0, index: 7 },
    optHost: null,
  };
  await saveCheckpoint(dir, 7, { params: flatten(p), opt: {}, meta });
  tf.dispose(Object.values(flatten(p)));
};

Deno.test("embed: a run's encoder over a folder gives [N, D] in sorted file order, as the evaluation loader does", () =>
  withTmp("caev2-embed-", async (dir) => {
    await writeRun(`${dir}/run`);
    // An image folder with a val/ split of two classes, files of several sizes, PNG and JPEG.
    const sizes = [[40, 30], [24, 50], [33, 33], [64, 20], [32, 32]];
    await Deno.mkdir(`${dir}/data/train/a`, { recursive: true });
    await writePng(`${dir}/data/train/a/0.png`, picture(0, 32, 32));
    for (const [i, [w, h]] of sizes.entries()) {
      const cls = `${dir}/data/val/${i % 2 ? "b" : "a"}`;
      await Deno.mkdir(cls, { recursive: true });
      if (i === 3) {
        const jpg = new Uint8Array(await encodeJpeg(rgba(picture(i, w, h)), { quality: 95 }));
        await Deno.writeFile(`${cls}/${i}.jpg`, jpg);
      } else await writePng(`${cls}/${i}.png`, picture(i, w, h));
    }
    await Deno.writeTextFile(`${dir}/data/val/a/notes.txt`, "not an image");

    // The README example's calls.
    const encoder = await loadEncoder(`${dir}/run`);
    const done: number[] = [];
    const { features, count, dim, names } = await embedImages(encoder, `${dir}/data/val`, {
      pooling: "cls",
      batchSize: 2,
      onBatch: (n, total) => done.push(n, total),
    });
    assertEquals([count, dim, features.length], [5, 64, 5 * 64]);
    assertEquals(
      names,
      ["a/0.png", "a/2.png", "a/4.png", "b/1.png", "b/3.jpg"].map((n) => `${dir}/data/val/${n}`),
    );
    assertEquals(done, [2, 5, 4, 5, 5, 5]);
    assert(features.every(Number.isFinite));

    // The same rows as the evaluation loader's features of the same files (folder source, val split).
    const ref = await splitFeatures(encoder, right(parseDataSource(`folder:${dir}/data`)), "val", {
      pooling: "cls",
      batchSize: 5,
    });
    assertEquals(ref.count, 5);
    features.forEach((v, i) => assertAlmostEquals(v, ref.features[i], 1e-5));

    // A list of paths and decoded pixels: the same rows; mean pooling differs from cls.
    const pixels = await readImage(names[4]);
    const mixed = await embedImages(encoder, [names[1], pixels]);
    assertEquals(mixed.names, [names[1], "#1"]);
    const expected = [...features.subarray(dim, 2 * dim), ...features.subarray(4 * dim, 5 * dim)];
    mixed.features.forEach((v, i) => assertAlmostEquals(v, expected[i], 1e-5));
    const mean = await embedImages(encoder, names[0], { pooling: "mean" });
    assertEquals([mean.count, mean.names], [1, [names[0]]]);
    assert(mean.features.some((v, i) => Math.abs(v - features[i]) > 1e-3));
    disposeEncoder(encoder);
  }));

Deno.test("embed: listImages walks sorted and follows links once; errors name the file", () =>
  withTmp("caev2-embed-", async (dir) => {
    const encoder = await loadEncoder("random", { imageSize: 16, patchSize: 8 });
    try {
      await Deno.mkdir(`${dir}/img/sub`, { recursive: true });
      await writePng(`${dir}/img/b.png`, picture(1, 20, 20));
      await writePng(`${dir}/img/sub/a.png`, picture(2, 20, 20));
      await Deno.symlink(`${dir}/img`, `${dir}/img/sub/loop`); // a link back up: walked once
      assertEquals(await listImages(`${dir}/img/`), [`${dir}/img/b.png`, `${dir}/img/sub/a.png`]);
      await assertRejects(() => listImages(`${dir}/img/b.png`), Error, "not a directory");

      await Deno.writeFile(`${dir}/img/c.png`, new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]));
      await assertRejects(() => embedImages(encoder, `${dir}/img`), Error, `${dir}/img/c.png: `);
      await assertRejects(() => embedImages(encoder, `${dir}/nope`), Error, `${dir}/nope: no such file`);
      await assertRejects(
        () => embedImages(encoder, [`${dir}/nope.png`]),
        Error,
        `${dir}/nope.png: cannot read`,
      );
      await Deno.mkdir(`${dir}/empty`);
      await assertRejects(() => embedImages(encoder, `${dir}/empty`), Error, "no images in this folder");
      await assertRejects(() => embedImages(encoder, [], { batchSize: 0 }), Error, "batchSize");
      assertEquals((await embedImages(encoder, [])).count, 0);
    } finally {
      disposeEncoder(encoder);
    }
  }));
