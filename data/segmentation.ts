/**
 * Data for semantic segmentation (`deno task segment`): images with a class per pixel, from
 *
 * - `synthetic-seg[:N]`: the images of the `synthetic` source (data/synthetic.ts: one shape, disc, square,
 *   triangle, ring or cross, filled solid or with stripes, on a gradient background with value noise),
 *   from dataset seed 1, which no pretraining run on `synthetic` (seed 0) has seen; N for training (default
 *   {@link DEFAULT_SYNTHETIC_SEG_SIZE}) and the `ceil(N / 4)` next ones held out. Each pixel's class is
 *   background (0), solid shape (1) or striped shape (2), from the shape's antialiased coverage (at least
 *   half the pixel; {@link syntheticSegClasses}). Colours, position, size, rotation and stripes are drawn
 *   independently of the class, so a patch's mean colour does not give it: a pixel is a shape's by its
 *   contrast with the rest of the image, and solid or striped by its local pattern.
 *   Deterministic: image `index` of dataset `seed` is a pure function of `(seed, index, size)`.
 * - `ade20k:PATH`: the ADE20K layout (ADEChallengeData2016, what mmsegmentation reads):
 *   `PATH/images/{training,validation}/*.jpg` and, for each image, the index PNG of the same name under
 *   `PATH/annotations/{training,validation}/`. As mmseg's `ADE20KDataset` (`reduce_zero_label=True`),
 *   label 0 ("other") becomes the ignore index 255 and labels 1..150 become classes 0..149
 *   ({@link reduceZeroLabel}).
 *
 * Labels are read as class indices ({@link readLabelPng}): a grey PNG's level, or a palette PNG's index
 * (the decoder expands palettes to colours; the colour is mapped back to its palette index). A PNG in
 * colour whose channels differ, a 16-bit one or a JPEG annotation is refused with the file named.
 *
 * Geometry (a frozen-feature evaluation at the encoder's fixed input size, not mmseg's 512 px crops): the
 * whole image is resized to `size x size` (Pillow's bicubic, data/resize.ts; the aspect ratio is not kept),
 * its labels with nearest neighbour ({@link resizeLabelsNearest}) for training; the held-out split keeps
 * its labels at their own resolution, where the predictions are scored (as mmseg scores the whole-image
 * inference, its logits resized to the label's shape).
 *
 * @module
 */
import { E } from "../lib/deps.ts";
import type { Key } from "../lib/core/random.ts";
import { decodeImage, sniffFormat } from "./decode.ts";
import { IMAGENET_MEAN, IMAGENET_STD, normalizeInto } from "./augment.ts";
import type { RgbImage } from "./image.ts";
import { FILLS, renderSynthetic } from "./synthetic.ts";
import { resizeBicubic } from "./resize.ts";

/** The label of pixels that are not scored and not trained on (mmseg's `ignore_index`). */
export const IGNORE_INDEX = 255;

/** A segmentation data source, as `--data` names it. */
export type SegSource =
  | {
    readonly kind: "synthetic-seg";
    /** Training images (default {@link DEFAULT_SYNTHETIC_SEG_SIZE}); `ceil(size / 4)` more are held out. */
    readonly size?: number;
    /** Which synthetic dataset (default {@link SYNTHETIC_SEG_SEED}). */
    readonly seed?: number;
  }
  /** `PATH/images/{training,validation}/`, `PATH/annotations/{training,validation}/`. */
  | { readonly kind: "ade20k"; readonly path: string };

/** Training images of `synthetic-seg` without a size. */
export const DEFAULT_SYNTHETIC_SEG_SIZE = 1000;

/** Classes of the synthetic source, in label order. */
export const syntheticSegClasses: readonly string[] = ["background", "solid shape", "striped shape"];

/** The synthetic dataset `synthetic-seg` draws from: not the pretraining source's (seed 0). */
export const SYNTHETIC_SEG_SEED = 1;

/**
 * The 150 classes of ADE20K's scene-parsing benchmark (ADEChallengeData2016), in label order after
 * {@link reduceZeroLabel}: mmsegmentation's `ADE20KDataset.METAINFO["classes"]` ("bed" without the
 * trailing space of mmseg's "bed ").
 */
// deno-fmt-ignore
export const ade20kClasses: readonly string[] = [
  "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
  "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
  "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence",
  "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
  "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
  "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
  "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
  "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
  "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
  "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
  "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
  "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
  "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
  "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
  "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
  "glass", "clock", "flag",
];

const EXPECTED = 'expected "synthetic-seg", "synthetic-seg:N" (N training images) or "ade20k:PATH"';

/**
 * Parses a segmentation `--data` value.
 *
 * @example
 * ```ts
 * import { parseSegSource } from "./segmentation.ts";
 * const r = parseSegSource("synthetic-seg:200");
 * if (r._tag !== "Right" || r.right.kind !== "synthetic-seg" || r.right.size !== 200) throw new Error();
 * if (parseSegSource("synthetic")._tag !== "Left") throw new Error("a classification source is refused");
 * ```
 */
export const parseSegSource = (s: string): E.Either<string, SegSource> => {
  const colon = s.indexOf(":");
  const kind = colon < 0 ? s : s.slice(0, colon);
  const rest = colon < 0 ? undefined : s.slice(colon + 1);
  switch (kind) {
    case "synthetic-seg": {
      if (rest === undefined) return E.right({ kind: "synthetic-seg" });
      const n = Number(rest);
      return /^\d+$/.test(rest) && Number.isSafeInteger(n) && n > 0
        ? E.right({ kind: "synthetic-seg", size: n })
        : E.left(
          `data source "${s}": the size after "synthetic-seg:" must be a positive integer; ${EXPECTED}`,
        );
    }
    case "ade20k":
      return rest
        ? E.right({ kind: "ade20k", path: rest })
        : E.left(`data source "${s}": "ade20k:" needs the dataset's folder; ${EXPECTED}`);
    case "synthetic":
    case "folder":
    case "wds":
      return E.left(
        `data source "${s}": a classification source has no per-pixel labels; ${EXPECTED} ` +
          "(deno task segment --help)",
      );
    default:
      return E.left(`data source "${s}": ${EXPECTED}`);
  }
};

/** The `--data` spelling of a source. */
export const formatSegSource = (s: SegSource): string =>
  s.kind === "ade20k"
    ? `ade20k:${s.path}`
    : s.size === undefined
    ? "synthetic-seg"
    : `synthetic-seg:${s.size}`;

// ---------------------------------------------------------------------------------------------------------
// The synthetic source: data/synthetic.ts's renderer, with the shape's coverage kept as the label map.

/** An image and its labels, row-major. */
export interface SegImage {
  /** The pixels. */
  readonly image: RgbImage;
  /** `[height * width]` class indices, {@link IGNORE_INDEX} where unlabelled. */
  readonly labels: Uint8Array;
}

/**
 * Image `index` of the synthetic segmentation dataset `seed`: exactly `syntheticImage(seed, index, size)`
 * of data/synthetic.ts, and its labels: 0 (background) where the shape covers less than half of a pixel,
 * else 1 (solid shape) or 2 (striped shape) ({@link syntheticSegClasses}).
 *
 * @example
 * ```ts
 * import { syntheticSegImage } from "./segmentation.ts";
 * import { syntheticImage } from "./synthetic.ts";
 * const a = syntheticSegImage(1, 3, 64), b = syntheticImage(1, 3, 64);
 * if (a.image.data.some((v, i) => v !== b.image.data[i]) || !a.labels.includes(0)) throw new Error();
 * ```
 */
export const syntheticSegImage = (seed: Key | number, index: number, size: number): SegImage => {
  if (!Number.isInteger(size) || size < 8) {
    throw new Error(`syntheticSegImage: size must be an integer >= 8, got ${size}`);
  }
  const coverage = new Float32Array(size * size);
  const { image, label } = renderSynthetic(seed, index, size, coverage);
  const objectClass = label % FILLS.length === 1 ? 2 : 1;
  const labels = coverage.map((alpha) => (alpha >= 0.5 ? objectClass : 0));
  return { image, labels: Uint8Array.from(labels) };
};

// ---------------------------------------------------------------------------------------------------------
// Label maps.

/**
 * mmseg's `reduce_zero_label` (ADE20K): 0 -> 255, `v` -> `v - 1` otherwise, 255 stays 255 (mmseg's
 * `label[label == 0] = 255; label = label - 1; label[label == 254] = 255`). In place; returns `labels`.
 *
 * @example
 * ```ts
 * import { reduceZeroLabel } from "./segmentation.ts";
 * const l = reduceZeroLabel(Uint8Array.from([0, 1, 150, 255]));
 * if (l.join() !== "255,0,149,255") throw new Error(l.join());
 * ```
 */
export const reduceZeroLabel = (labels: Uint8Array): Uint8Array => {
  for (let i = 0; i < labels.length; i++) {
    const v = labels[i];
    labels[i] = v === 0 || v === 255 ? 255 : v - 1;
  }
  return labels;
};

/**
 * Nearest-neighbour resize of a label map, sampling each output pixel's centre (Pillow's NEAREST:
 * source `floor((x + 0.5) * w / outW)`); labels are never blended.
 *
 * @example
 * ```ts
 * import { resizeLabelsNearest } from "./segmentation.ts";
 * const l = resizeLabelsNearest(Uint8Array.from([1, 2, 3, 4]), 2, 2, 4, 4);
 * if (l.join() !== "1,1,2,2,1,1,2,2,3,3,4,4,3,3,4,4") throw new Error(l.join());
 * ```
 */
export const resizeLabelsNearest = (
  labels: Uint8Array,
  width: number,
  height: number,
  outW: number,
  outH: number,
): Uint8Array => {
  if (labels.length !== width * height) {
    throw new Error(`resizeLabelsNearest: ${labels.length} labels for a ${width}x${height} map`);
  }
  const out = new Uint8Array(outW * outH);
  const xs = Int32Array.from(
    { length: outW },
    (_, x) => Math.min(width - 1, Math.floor((x + 0.5) * width / outW)),
  );
  for (let y = 0; y < outH; y++) {
    const sy = Math.min(height - 1, Math.floor((y + 0.5) * height / outH));
    const row = sy * width;
    for (let x = 0; x < outW; x++) out[y * outW + x] = labels[row + xs[x]];
  }
  return out;
};

/** A decoded label map. */
export interface LabelMap {
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /** `[height * width]` raw indices as stored in the file (before any {@link reduceZeroLabel}). */
  readonly labels: Uint8Array;
}

const u32 = (b: Uint8Array, i: number) =>
  ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;

/** IHDR's bit depth and colour type, and the PLTE entries, read from the chunk list. */
const pngInfo = (b: Uint8Array): { depth: number; colourType: number; palette?: Uint8Array } | undefined => {
  if (b.length < 33 || String.fromCharCode(b[12], b[13], b[14], b[15]) !== "IHDR") return undefined;
  const info: { depth: number; colourType: number; palette?: Uint8Array } = {
    depth: b[24],
    colourType: b[25],
  };
  let i = 8;
  while (i + 8 <= b.length) {
    const len = u32(b, i);
    const type = String.fromCharCode(b[i + 4], b[i + 5], b[i + 6], b[i + 7]);
    if (type === "PLTE") info.palette = b.subarray(i + 8, Math.min(b.length, i + 8 + len));
    if (type === "IDAT" || type === "IEND") break;
    i += 12 + len;
  }
  return info;
};

/**
 * Reads a label PNG as class indices: the grey level of a grey PNG (8 bits, or 1/2/4 bits), the palette
 * index of a palette PNG, the common value of an RGB PNG whose three channels agree. Left, naming the
 * file: not a PNG, 16 bits per sample, colours that differ between channels (an RGB-encoded label map),
 * a palette that holds one colour twice (its indices cannot be told apart once decoded), or a corrupt
 * file.
 *
 * @example
 * ```ts
 * import { readLabelPng } from "./segmentation.ts";
 * const r = readLabelPng(new Uint8Array([0xff, 0xd8, 0xff, 0]), "a.jpg");
 * if (r._tag !== "Left" || !r.left.startsWith("a.jpg: ")) throw new Error("a JPEG annotation is refused");
 * ```
 */
export const readLabelPng = (bytes: Uint8Array, name: string): E.Either<string, LabelMap> => {
  const format = sniffFormat(bytes);
  if (format !== "png") {
    return E.left(
      `${name}: a label map must be a PNG of class indices (grey or palette), not ${
        format === "unknown" ? "this file" : `a ${format.toUpperCase()}`
      } (a lossy format changes the labels)`,
    );
  }
  const info = pngInfo(bytes);
  if (info === undefined) return E.left(`${name}: corrupt PNG (no IHDR header)`);
  if (info.depth === 16) {
    return E.left(`${name}: 16 bits per sample; label maps are read as 8-bit indices (0..255): convert it`);
  }
  const img = decodeImage(bytes, name);
  if (E.isLeft(img)) return img;
  const { width, height, data } = img.right;
  const labels = new Uint8Array(width * height);
  if (info.colourType === 3) {
    const pal = info.palette;
    if (pal === undefined) return E.left(`${name}: palette PNG without a PLTE chunk`);
    const index = new Map<number, number>();
    for (let j = 0; j + 2 < pal.length; j += 3) {
      const c = (pal[j] << 16) | (pal[j + 1] << 8) | pal[j + 2];
      const seen = index.get(c);
      if (seen !== undefined) {
        return E.left(
          `${name}: palette entries ${seen} and ${
            j / 3
          } are the same colour, so their pixels cannot be told ` +
            "apart; save the label map as a grey PNG of class indices",
        );
      }
      index.set(c, j / 3);
    }
    for (let p = 0; p < labels.length; p++) {
      const c = (data[3 * p] << 16) | (data[3 * p + 1] << 8) | data[3 * p + 2];
      const v = index.get(c);
      if (v === undefined) {
        return E.left(`${name}: pixel ${p} has a colour outside the palette (corrupt file?)`);
      }
      labels[p] = v;
    }
    return E.right({ width, height, labels });
  }
  for (let p = 0; p < labels.length; p++) {
    const r = data[3 * p];
    if (r !== data[3 * p + 1] || r !== data[3 * p + 2]) {
      return E.left(
        `${name}: a colour image (pixel (${p % width}, ${Math.floor(p / width)}) is ` +
          `${data[3 * p]},${data[3 * p + 1]},${data[3 * p + 2]}); label maps are grey or palette PNGs of ` +
          "class indices (ADEChallengeData2016's annotations are grey)",
      );
    }
    labels[p] = r;
  }
  // Grey below 8 bits is expanded to 0..255 by the decoder; its levels are the indices.
  if ((info.colourType === 0 || info.colourType === 4) && info.depth < 8) {
    const levels = (1 << info.depth) - 1;
    for (let p = 0; p < labels.length; p++) labels[p] = Math.round((labels[p] * levels) / 255);
  }
  return E.right({ width, height, labels });
};

// ---------------------------------------------------------------------------------------------------------
// The ADE20K folder.

/** An image and its label map. */
export interface SegItem {
  /** The image file. */
  readonly image: string;
  /** The label PNG. */
  readonly annotation: string;
}

/** The folder names of a split in the ADE20K layout. */
export const ade20kSplitFolder = (
  split: "train" | "val",
): string => (split === "train" ? "training" : "validation");

const IMAGE_EXT = /\.(jpe?g|png)$/i;

const walk = async (root: string, rel = ""): Promise<string[]> => {
  const out: string[] = [];
  for await (const e of Deno.readDir(rel ? `${root}/${rel}` : root)) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...(await walk(root, r)));
    else if (e.isFile && IMAGE_EXT.test(e.name)) out.push(r);
  }
  return out;
};

/**
 * The images of one split of an ADE20K-layout folder and their label maps, sorted by path (as mmseg
 * sorts them). Sub-folders are walked. Throws, naming the folder, when the split's folder is missing or
 * empty, and naming up to five images when an image has no `.png` of the same name under
 * `annotations/<split>/`.
 */
export const listAde20k = async (path: string, split: "train" | "val"): Promise<SegItem[]> => {
  const sub = ade20kSplitFolder(split);
  const images = `${path}/images/${sub}`, annotations = `${path}/annotations/${sub}`;
  let rel: string[];
  try {
    rel = (await walk(images)).sort();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      throw new Error(
        `ade20k:${path}: no folder ${images} (the ADE20K layout is images/{training,validation}/*.jpg and ` +
          "annotations/{training,validation}/*.png, as in ADEChallengeData2016.zip)",
      );
    }
    throw e;
  }
  if (rel.length === 0) throw new Error(`ade20k:${path}: no images in ${images}`);
  const items: SegItem[] = [];
  const missing: string[] = [];
  for (const r of rel) {
    const annotation = `${annotations}/${r.replace(IMAGE_EXT, ".png")}`;
    try {
      if (!(await Deno.stat(annotation)).isFile) missing.push(annotation);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory)) throw e;
      missing.push(annotation);
    }
    items.push({ image: `${images}/${r}`, annotation });
  }
  if (missing.length > 0) {
    throw new Error(
      `ade20k:${path}: ${missing.length} image(s) of ${images} have no label map: ${
        missing.slice(0, 5).join(", ")
      }${missing.length > 5 ? ", ..." : ""}`,
    );
  }
  return items;
};

// ---------------------------------------------------------------------------------------------------------
// Samples and batches.

/** Images of a split of a source (read from the folder for ade20k). */
export const segSplitSize = async (source: SegSource, split: "train" | "val"): Promise<number> => {
  if (source.kind === "ade20k") return (await listAde20k(source.path, split)).length;
  const n = source.size ?? DEFAULT_SYNTHETIC_SEG_SIZE;
  return split === "train" ? n : Math.ceil(n / 4);
};

/** The classes of a source: names, in label order. */
export const segClassNames = (source: SegSource): readonly string[] =>
  source.kind === "ade20k" ? ade20kClasses : syntheticSegClasses;

/** A batch of segmentation samples on the host. */
export interface SegBatch {
  /** Images B. */
  readonly size: number;
  /** `[B, S, S, 3]`, ImageNet mean/std normalised. */
  readonly images: Float32Array;
  /** `[B, S, S]` labels at the input size (nearest neighbour), {@link IGNORE_INDEX} unlabelled. */
  readonly labels: Uint8Array;
  /** Per image, its labels at their own resolution (what the held-out split is scored at). */
  readonly full: readonly LabelMap[];
  /** Per image, where it came from (a file path, or `synthetic-seg #index`). */
  readonly names: readonly string[];
}

/** Options of {@link segBatches}. */
export interface SegBatchOptions {
  /** The encoder's input side S. */
  readonly imageSize: number;
  /** Images per batch. */
  readonly batchSize: number;
  /** Read at most this many images of the split (its first ones). */
  readonly limit?: number;
}

/** One sample at input size: the image resized (bicubic) and normalised, its labels resized (nearest). */
const sample = (
  img: RgbImage,
  map: LabelMap,
  size: number,
): { images: Float32Array; labels: Uint8Array } => {
  const resized = img.width === size && img.height === size
    ? img
    : resizeBicubic(img, { x: 0, y: 0, w: img.width, h: img.height }, size, size);
  const labels = map.width === size && map.height === size
    ? map.labels
    : resizeLabelsNearest(map.labels, map.width, map.height, size, size);
  return {
    images: normalizeInto(resized.data, IMAGENET_MEAN, IMAGENET_STD, new Float32Array(size * size * 3)),
    labels,
  };
};

/** Reads one ADE20K item: the image, and its label map with zero reduced, checked against the image. */
export const readAde20kItem = async (item: SegItem): Promise<{ image: RgbImage; map: LabelMap }> => {
  const img = decodeImage(await Deno.readFile(item.image), item.image);
  if (E.isLeft(img)) {
    throw new Error(`${img.left} (a segmentation set is read whole: fix or remove the pair)`);
  }
  const map = readLabelPng(await Deno.readFile(item.annotation), item.annotation);
  if (E.isLeft(map)) throw new Error(map.left);
  const { width, height } = map.right;
  if (width !== img.right.width || height !== img.right.height) {
    throw new Error(
      `${item.annotation}: ${width}x${height} labels for the ${img.right.width}x${img.right.height} image ` +
        `${item.image}`,
    );
  }
  return { image: img.right, map: { width, height, labels: reduceZeroLabel(map.right.labels) } };
};

/**
 * The samples of one split, in order, in batches (the last one smaller). ADE20K files are read on the
 * main thread; a file that cannot be read stops the stream with its name.
 */
export async function* segBatches(
  source: SegSource,
  split: "train" | "val",
  o: SegBatchOptions,
): AsyncGenerator<SegBatch> {
  const S = o.imageSize;
  const items = source.kind === "ade20k" ? await listAde20k(source.path, split) : undefined;
  const total = Math.min(items?.length ?? (await segSplitSize(source, split)), o.limit ?? Infinity);
  const trainSize = source.kind === "synthetic-seg" ? source.size ?? DEFAULT_SYNTHETIC_SEG_SIZE : 0;
  for (let at = 0; at < total; at += o.batchSize) {
    const n = Math.min(o.batchSize, total - at);
    const images = new Float32Array(n * S * S * 3), labels = new Uint8Array(n * S * S);
    const full: LabelMap[] = [], names: string[] = [];
    for (let i = 0; i < n; i++) {
      let img: RgbImage, map: LabelMap;
      if (items !== undefined) {
        const item = items[at + i];
        ({ image: img, map } = await readAde20kItem(item));
        names.push(item.image);
      } else {
        // The held-out images are fresh ones after the training range.
        const index = (split === "train" ? 0 : trainSize) + at + i;
        const g = syntheticSegImage(
          source.kind === "synthetic-seg" ? source.seed ?? SYNTHETIC_SEG_SEED : SYNTHETIC_SEG_SEED,
          index,
          S,
        );
        img = g.image;
        map = { width: S, height: S, labels: g.labels };
        names.push(`synthetic-seg #${index}`);
      }
      const s = sample(img, map, S);
      images.set(s.images, i * S * S * 3);
      labels.set(s.labels, i * S * S);
      full.push(map);
    }
    yield { size: n, images, labels, full, names };
  }
}
