/**
 * The encoder as a feature extractor: images in, one feature vector per image out (`[N, D]`).
 *
 * Images are files (JPEG, PNG; a folder is every image below it) or decoded RGB pixels. Each goes through
 * the official evaluation preprocessing, the one the probe, k-NN and the evaluation loader use
 * (data/augment.ts `evalTransform`: bicubic resize of the shorter side to `size / 0.875`, 256 for 224,
 * centre crop to the encoder's image size, ImageNet mean/std), then through the encoder in inference mode
 * (lib/eval/features.ts `encodeRows` and `encodeImages`: the cls token or the mean of the patch tokens,
 * after the final LayerNorm). Files are decoded one batch at a time, so a folder of any size takes the
 * memory of one batch plus the features.
 *
 * @module
 */
import type { HostEvalBatch } from "../../data/batch.ts";
import { evalTransform } from "../../data/augment.ts";
import { readImage } from "../../data/decode.ts";
import { IMAGE_EXTENSIONS } from "../../data/folder.ts";
import type { RgbImage } from "../../data/image.ts";
import type { FrozenEncoder } from "../models/encoder_model.ts";
import { encodeImages, encodeRows, modelNameOf, type Pooling } from "./features.ts";
import { assertFinite } from "./finite.ts";

/** One image to embed: a file path (JPEG or PNG), or decoded 8-bit RGB pixels (data/decode.ts `readImage`). */
export type ImageInput = string | RgbImage;

/** Options of {@link embedImages}. */
export interface EmbedOptions {
  /** `cls` (default: the cls token, the official linear probe's feature) or `mean` (of the patch tokens). */
  readonly pooling?: Pooling;
  /** Images per forward pass (default 32). */
  readonly batchSize?: number;
  /** Called after each batch with the images done and the total. */
  readonly onBatch?: (done: number, total: number) => void;
}

/** Features of a list of images, row `i` for image `i`. */
export interface Embeddings {
  /** `[count, dim]`, row-major: `features.subarray(i * dim, (i + 1) * dim)` is image `i`'s. */
  readonly features: Float32Array;
  /** Images N. */
  readonly count: number;
  /** Feature width D (the encoder's width). */
  readonly dim: number;
  /** What row `i` is: the file path, or `#i` for pixels passed in. */
  readonly names: readonly string[];
}

const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const isImageName = (name: string) => IMAGE_EXTENSIONS.some((e) => name.toLowerCase().endsWith(e));
const statOf = (path: string) => Deno.stat(path).catch(() => undefined);

/**
 * The image files below `dir`, recursively, sorted by name at each level (directories are walked where
 * they sort), symlinks followed and every real directory walked once. Names with an image extension
 * (data/folder.ts `IMAGE_EXTENSIONS`); only JPEG and PNG decode. Rejects when `dir` is not a directory.
 *
 * @example
 * ```ts
 * import { listImages } from "./embed.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.mkdir(`${dir}/b`);
 * for (const f of ["b/2.png", "a.JPG", "notes.txt"]) await Deno.writeFile(`${dir}/${f}`, new Uint8Array());
 * const files = await listImages(dir);
 * await Deno.remove(dir, { recursive: true });
 * if (files.join() !== `${dir}/a.JPG,${dir}/b/2.png`) throw new Error(files.join());
 * ```
 */
export const listImages = async (dir: string): Promise<string[]> => {
  const root = dir.replace(/\/+$/, "") || "/";
  if (!(await statOf(root))?.isDirectory) throw new Error(`${dir}: not a directory`);
  const out: string[] = [];
  const walked = new Set<string>();
  const walk = async (d: string): Promise<void> => {
    const real = await Deno.realPath(d);
    if (walked.has(real)) return;
    walked.add(real);
    const entries: Deno.DirEntry[] = [];
    for await (const e of Deno.readDir(d)) entries.push(e);
    entries.sort((a, b) => byName(a.name, b.name));
    for (const e of entries) {
      const p = `${d === "/" ? "" : d}/${e.name}`;
      if (e.isDirectory || (e.isSymlink && (await statOf(p))?.isDirectory)) await walk(p);
      else if (isImageName(e.name)) out.push(p);
    }
  };
  await walk(root);
  return out;
};

/** A path names a folder (its images) or one image; pixels are themselves. */
const expand = async (images: string | readonly ImageInput[]): Promise<ImageInput[]> => {
  if (typeof images !== "string") return [...images];
  const st = await statOf(images);
  if (st === undefined) throw new Error(`${images}: no such file or directory`);
  if (!st.isDirectory) return [images];
  const files = await listImages(images);
  if (files.length === 0) {
    throw new Error(`${images}: no images in this folder (looked for ${IMAGE_EXTENSIONS.join(" ")})`);
  }
  return files;
};

/**
 * Embeds images with a frozen encoder: a folder (every image below it, sorted), one image file, or a list
 * of paths and decoded images; returns their features `[N, D]` with each row's name. Preprocessing is the
 * official evaluation transform at the encoder's image size (module doc), so features match what
 * `deno task extract` writes for the same files. Rejects, naming the file, when an image cannot be read
 * or decoded (nothing is skipped silently), and, naming the encoder, when its features are not finite.
 *
 * @example
 * ```ts
 * import { embedImages } from "./embed.ts";
 * import { disposeEncoder, loadEncoder } from "./load.ts";
 * import { rgbImage } from "../../data/image.ts";
 * import { tf } from "../deps.ts";
 * await tf.setBackend("cpu");
 * const encoder = await loadEncoder("random", { imageSize: 32, patchSize: 8 });
 * const grey = rgbImage(40, 30, new Uint8Array(40 * 30 * 3).fill(128));
 * const { features, count, dim, names } = await embedImages(encoder, [grey, grey], { pooling: "mean" });
 * disposeEncoder(encoder);
 * if (count !== 2 || dim !== 64 || features.length !== 128 || names.join() !== "#0,#1") throw new Error();
 * ```
 */
export const embedImages = async (
  encoder: FrozenEncoder,
  images: string | readonly ImageInput[],
  o: EmbedOptions = {},
): Promise<Embeddings> => {
  const pooling = o.pooling ?? "cls";
  const batchSize = o.batchSize ?? 32;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`embedImages: batchSize must be a positive integer, got ${batchSize}`);
  }
  if (pooling !== "cls" && pooling !== "mean") {
    throw new Error(`embedImages: pooling must be "cls" or "mean", got ${JSON.stringify(pooling)}`);
  }
  const inputs = await expand(images);
  const names = inputs.map((x, i) => (typeof x === "string" ? x : `#${i}`));
  const S = encoder.config.imageSize;
  const px = S * S * 3;
  async function* batches(): AsyncGenerator<HostEvalBatch> {
    for (let at = 0; at < inputs.length; at += batchSize) {
      const part = inputs.slice(at, at + batchSize);
      const pixels = new Float32Array(part.length * px);
      for (const [i, x] of part.entries()) {
        pixels.set(evalTransform(typeof x === "string" ? await readImage(x) : x, S), i * px);
      }
      yield {
        size: part.length,
        height: S,
        width: S,
        images: pixels,
        labels: new Int32Array(part.length).fill(-1),
      };
    }
  }
  const r = await encodeRows(encoder, batches(), {
    who: "embedImages",
    encode: (x) => encodeImages(encoder, x, pooling),
    check: (data, first, last) =>
      assertFinite(data, `the features of images ${first}..${last}`, modelNameOf(encoder)),
    onBatch: (done) => o.onBatch?.(done, inputs.length),
  });
  return { features: r.rows, count: r.count, dim: encoder.config.dim, names };
};
