/**
 * CAE v2 pretraining augmentation and the evaluation transform, as the official code runs them on PIL
 * images (github.com/Atten4Vis/CAE, furnace/datasets.py `DataAugmentationForCAE`, with the CAE v2 scripts'
 * flags `--color_jitter 0.4 --crop_min_size 0.4 --second_input_size 224 --second_interpolation bicubic
 * --imagenet_default_mean_and_std --discrete_vae_type clip`, project/CAEv2/scripts/caev2_*_300e.sh):
 *
 *   ColorJitter(0.4, 0.4, 0.4) -> RandomHorizontalFlip(0.5) ->
 *   RandomResizedCropAndInterpolationWithTwoPic(224, second_size 224, scale (0.4, 1), ratio 3/4..4/3,
 *   bicubic, second bicubic)
 *
 * The last step crops once and resizes the same crop twice; with equal sizes and interpolations the two
 * pictures are the same pixels, so this module resizes once and normalises twice: the student view with
 * ImageNet mean/std (`patch_transform`), the teacher view with CLIP mean/std (`visual_token_transform`
 * for `clip`). Evaluation (tools/run_linear.py `transform_val`, furnace/datasets.py `build_transform`):
 * Resize(256, bicubic) on the shorter side -> CenterCrop(224) -> ImageNet mean/std; sizes scale with
 * `size / 224` for small models.
 *
 * Colour jitter follows torchvision's `ColorJitter` on PIL images (torchvision/transforms/transforms.py
 * `ColorJitter.get_params`/`forward`, functional_pil.py): a random order of the three adjustments
 * (`torch.randperm(4)`, hue absent), each factor uniform in [0.6, 1.4], and each adjustment a Pillow
 * `ImageEnhance` blend on uint8 pixels (src/PIL/ImageEnhance.py, src/libImaging/Blend.c):
 * brightness blends with black, contrast with the mean of the greyscale image (`int(mean + 0.5)`),
 * saturation with the greyscale image itself; greyscale is Pillow's `L = (19595 R + 38470 G + 7471 B +
 * 0x8000) >> 16` (src/libImaging/Convert.c); blends compute in float32 and truncate, clipped to 0..255.
 * Random draws come from the sample's PRNG key in the official order (jitter order, brightness,
 * contrast, saturation, flip, crop attempts), not from a global generator.
 *
 * @module
 */
import type { Key } from "../lib/core/random.ts";
import { sampler } from "../lib/core/random.ts";
import { type RgbImage, rgbImage, roundHalfEven } from "./image.ts";
import { type Box, resizeBicubic } from "./resize.ts";

/** timm `IMAGENET_DEFAULT_MEAN`, used by CAE v2 (`--imagenet_default_mean_and_std`) for the student. */
export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
/** timm `IMAGENET_DEFAULT_STD`. */
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];
/** CLIP's normalisation (furnace/datasets.py, `discrete_vae_type == 'clip'`; openai/CLIP clip.py `_transform`). */
export const CLIP_MEAN: readonly [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
/** CLIP's normalisation std. */
export const CLIP_STD: readonly [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** Pretraining augmentation settings; the defaults are the CAE v2 scripts'. */
export interface AugmentOptions {
  /** ColorJitter strength for brightness, contrast and saturation (0 disables it, as `--color_jitter 0`). */
  readonly colorJitter?: number;
  /** RandomResizedCrop area range (`--crop_min_size`, `--crop_max_size`). */
  readonly scale?: readonly [number, number];
  /** RandomResizedCrop aspect ratio range. */
  readonly ratio?: readonly [number, number];
  /** Probability of the horizontal flip. */
  readonly flipProb?: number;
}

const DEFAULTS: Required<AugmentOptions> = {
  colorJitter: 0.4,
  scale: [0.4, 1.0],
  ratio: [3 / 4, 4 / 3],
  flipProb: 0.5,
};

/** One colour-jitter draw: the order of the adjustments and their factors. */
export interface JitterParams {
  /** Adjustments in the order applied: 0 brightness, 1 contrast, 2 saturation (torchvision's fn_idx). */
  readonly order: readonly number[];
  readonly brightness: number;
  readonly contrast: number;
  readonly saturation: number;
}

/** All random choices of one pretraining sample, drawn from its key. */
export interface AugmentParams {
  readonly jitter: JitterParams | undefined;
  readonly flip: boolean;
  /** Crop in the (flipped) image: RandomResizedCrop's (j, i, w, h). */
  readonly crop: Box;
}

/** Greyscale as Pillow's `convert("L")` (ITU-R 601-2 luma, fixed point with rounding). */
const luma = (r: number, g: number, b: number): number => (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;

/** Pillow's `ImagingBlend` of one uint8 value: `in1 + alpha * (in2 - in1)` in float32, truncated, clipped. */
const blend1 = (in1: number, in2: number, alpha: number): number => {
  const t = Math.fround(in1 + Math.fround(alpha * (in2 - in1)));
  return t <= 0 ? 0 : t >= 255 ? 255 : Math.trunc(t);
};

/** Lookup table of `blend(constant, v, alpha)` for v in 0..255. */
const blendTable = (constant: number, alpha: number): Uint8Array => {
  const a = Math.fround(alpha);
  const t = new Uint8Array(256);
  for (let v = 0; v < 256; v++) t[v] = blend1(constant, v, a);
  return t;
};

/** Pillow `ImageEnhance.Brightness(img).enhance(f)`: blend with black. Returns a new image. */
export const adjustBrightness = (img: RgbImage, factor: number): RgbImage => {
  const t = blendTable(0, factor);
  const d = img.data, out = new Uint8Array(d.length);
  for (let i = 0; i < d.length; i++) out[i] = t[d[i]];
  return rgbImage(img.width, img.height, out);
};

/** Pillow `ImageEnhance.Contrast(img).enhance(f)`: blend with the rounded mean of the greyscale image. */
export const adjustContrast = (img: RgbImage, factor: number): RgbImage => {
  const d = img.data;
  let sum = 0;
  for (let i = 0; i < d.length; i += 3) sum += luma(d[i], d[i + 1], d[i + 2]);
  const mean = Math.trunc(sum / (img.width * img.height) + 0.5);
  const t = blendTable(mean, factor);
  const out = new Uint8Array(d.length);
  for (let i = 0; i < d.length; i++) out[i] = t[d[i]];
  return rgbImage(img.width, img.height, out);
};

/** Pillow `ImageEnhance.Color(img).enhance(f)`: blend with the greyscale image (per pixel). */
export const adjustSaturation = (img: RgbImage, factor: number): RgbImage => {
  const a = Math.fround(factor);
  const d = img.data, out = new Uint8Array(d.length);
  for (let i = 0; i < d.length; i += 3) {
    const l = luma(d[i], d[i + 1], d[i + 2]);
    out[i] = blend1(l, d[i], a);
    out[i + 1] = blend1(l, d[i + 1], a);
    out[i + 2] = blend1(l, d[i + 2], a);
  }
  return rgbImage(img.width, img.height, out);
};

/** Applies a colour-jitter draw (torchvision `ColorJitter.forward` on a PIL image) to the whole image. */
export const colorJitter = (img: RgbImage, p: JitterParams): RgbImage =>
  p.order.reduce(
    (acc, fn) =>
      fn === 0
        ? adjustBrightness(acc, p.brightness)
        : fn === 1
        ? adjustContrast(acc, p.contrast)
        : fn === 2
        ? adjustSaturation(acc, p.saturation)
        : acc,
    img,
  );

/**
 * `crop(colorJitter(img, p), box)`, computed on the box only. The adjustments are pointwise except
 * contrast, whose blend target is the mean grey of the whole image as it stands at that step; that mean
 * is taken in one read-only pass over the image with the earlier adjustments applied on the fly. The
 * result is identical to jittering everything and cropping (the tests check it), at the cost of the crop.
 */
export const colorJitterCrop = (img: RgbImage, p: JitterParams, box: Box): RgbImage => {
  const bright = blendTable(0, p.brightness);
  // Saturation: blend(grey, v), tabulated over (grey, v) pairs.
  const a = Math.fround(p.saturation), sat = new Uint8Array(65536);
  for (let l = 0; l < 256; l++) for (let v = 0; v < 256; v++) sat[(l << 8) | v] = blend1(l, v, a);
  const identity = Uint8Array.from({ length: 256 }, (_, v) => v);
  // A run of adjustments as: per-channel table, then saturation or not, then another per-channel table.
  const chain = (ops: readonly number[], contrast: Uint8Array) => {
    const si = ops.indexOf(2);
    const compose = (fs: readonly number[]) =>
      fs.reduce((t, fn) => t.map((v) => (fn === 0 ? bright[v] : contrast[v])), identity);
    return si < 0
      ? { pre: compose(ops), saturate: false, post: identity }
      : { pre: compose(ops.slice(0, si)), saturate: true, post: compose(ops.slice(si + 1)) };
  };
  const d = img.data;
  const ci = p.order.indexOf(1);
  let contrast: Uint8Array = identity;
  if (ci >= 0) {
    // The mean grey of the whole image after the adjustments that precede contrast.
    const { pre, saturate, post } = chain(p.order.slice(0, ci), identity);
    let sum = 0;
    for (let i = 0; i < d.length; i += 3) {
      let r = pre[d[i]], g = pre[d[i + 1]], b = pre[d[i + 2]];
      if (saturate) {
        const l = luma(r, g, b) << 8;
        r = sat[l | r];
        g = sat[l | g];
        b = sat[l | b];
      }
      sum += luma(post[r], post[g], post[b]);
    }
    contrast = blendTable(Math.trunc(sum / (img.width * img.height) + 0.5), p.contrast);
  }
  const { pre, saturate, post } = chain(p.order, contrast);
  const out = new Uint8Array(box.w * box.h * 3);
  for (let y = 0; y < box.h; y++) {
    let i = ((box.y + y) * img.width + box.x) * 3, o = y * box.w * 3;
    for (let x = 0; x < box.w; x++, i += 3, o += 3) {
      let r = pre[d[i]], g = pre[d[i + 1]], b = pre[d[i + 2]];
      if (saturate) {
        const l = luma(r, g, b) << 8;
        r = sat[l | r];
        g = sat[l | g];
        b = sat[l | b];
      }
      out[o] = post[r];
      out[o + 1] = post[g];
      out[o + 2] = post[b];
    }
  }
  return rgbImage(box.w, box.h, out);
};

type Sampler = ReturnType<typeof sampler>;

/**
 * RandomResizedCrop's `get_params` as the official `RandomResizedCropAndInterpolationWithTwoPic` (and
 * torchvision) write it: 10 attempts at an area in `scale` of the image and a log-uniform aspect ratio in
 * `ratio`, sides `int(round(sqrt(...)))`; the first crop that fits is placed uniformly; after 10 misses,
 * the central crop clamped to the ratio range (the whole image when its ratio is inside the range).
 */
export const randomResizedCropParams = (
  s: Sampler,
  width: number,
  height: number,
  scale: readonly [number, number] = DEFAULTS.scale,
  ratio: readonly [number, number] = DEFAULTS.ratio,
): Box => {
  const area = width * height;
  const logR0 = Math.log(ratio[0]), logR1 = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = s.uniform(scale[0], scale[1]) * area;
    const aspect = Math.exp(s.uniform(logR0, logR1));
    const w = roundHalfEven(Math.sqrt(targetArea * aspect));
    const h = roundHalfEven(Math.sqrt(targetArea / aspect));
    // torchvision also requires 0 < w, h; the official copy omits it, and a zero side cannot be resized.
    if (w > 0 && h > 0 && w <= width && h <= height) {
      const i = s.int(0, height - h);
      const j = s.int(0, width - w);
      return { x: j, y: i, w, h };
    }
  }
  const inRatio = width / height;
  let w: number, h: number;
  if (inRatio < Math.min(...ratio)) {
    w = width;
    h = roundHalfEven(w / Math.min(...ratio));
  } else if (inRatio > Math.max(...ratio)) {
    h = height;
    w = roundHalfEven(h * Math.max(...ratio));
  } else {
    w = width;
    h = height;
  }
  return { x: Math.trunc((width - w) / 2), y: Math.trunc((height - h) / 2), w, h };
};

/** Draws a sample's augmentation from its key, in the official order. */
export const augmentParams = (
  k: Key,
  width: number,
  height: number,
  opts: AugmentOptions = {},
): AugmentParams => {
  const o = { ...DEFAULTS, ...opts };
  const s = sampler(k);
  let jitter: JitterParams | undefined;
  if (o.colorJitter > 0) {
    // torch.randperm(4) (index 3 is hue, absent here), then the three factors in this order.
    const perm = [0, 1, 2, 3];
    for (let i = 3; i > 0; i--) {
      const j = Math.floor(s.next() * (i + 1));
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    const lo = Math.max(0, 1 - o.colorJitter), hi = 1 + o.colorJitter;
    const brightness = s.uniform(lo, hi);
    const contrast = s.uniform(lo, hi);
    const saturation = s.uniform(lo, hi);
    jitter = { order: perm.filter((f) => f !== 3), brightness, contrast, saturation };
  }
  const flip = s.next() < o.flipProb;
  const crop = randomResizedCropParams(s, width, height, o.scale, o.ratio);
  return { jitter, flip, crop };
};

/** Writes `(x / 255 - mean) / std` of uint8 RGB into `out` at `offset` (ToTensor + Normalize, NHWC). */
export const normalizeInto = (
  src: Uint8Array,
  mean: readonly [number, number, number],
  std: readonly [number, number, number],
  out: Float32Array,
  offset = 0,
): Float32Array => {
  // Per-channel lookup tables of the float32 values torch computes: ToTensor's x / 255, then
  // Normalize's (x - mean) / std, each op rounded to float32.
  const f = Math.fround;
  const lut = [0, 1, 2].map((c) =>
    Float32Array.from({ length: 256 }, (_, v) => f(f(f(v / 255) - f(mean[c])) / f(std[c])))
  );
  const [l0, l1, l2] = lut;
  for (let i = 0; i < src.length; i += 3) {
    out[offset + i] = l0[src[i]];
    out[offset + i + 1] = l1[src[i + 1]];
    out[offset + i + 2] = l2[src[i + 2]];
  }
  return out;
};

/** The augmented uint8 crop of a pretraining sample (before normalisation), and the draws that made it. */
export const augmentPixels = (
  img: RgbImage,
  k: Key,
  size: number,
  opts: AugmentOptions = {},
): { readonly pixels: RgbImage; readonly params: AugmentParams } => {
  const params = augmentParams(k, img.width, img.height, opts);
  const { x, y, w, h } = params.crop;
  if (!params.jitter) return { pixels: resizeBicubic(img, params.crop, size, size, params.flip), params };
  // The crop was drawn in the flipped image: jitter its mirror region, then resize it mirrored.
  const region = { x: params.flip ? img.width - x - w : x, y, w, h };
  const crop = colorJitterCrop(img, params.jitter, region);
  const pixels = resizeBicubic(crop, { x: 0, y: 0, w, h }, size, size, params.flip);
  return { pixels, params };
};

/**
 * The CAE v2 pretraining transform of one image: the student view `[size, size, 3]` (ImageNet mean/std)
 * and the teacher view `[size, size, 3]` (CLIP mean/std) of the same jittered, flipped, cropped pixels.
 *
 * @example
 * ```ts
 * import { pretrainTransform } from "./augment.ts";
 * import { rgbImage } from "./image.ts";
 * import { key } from "../lib/core/random.ts";
 * const img = rgbImage(40, 30, new Uint8Array(40 * 30 * 3).fill(128));
 * const { student, teacher } = pretrainTransform(img, key(0), 16);
 * if (student.length !== 16 * 16 * 3 || teacher.length !== student.length) throw new Error();
 * ```
 */
export const pretrainTransform = (
  img: RgbImage,
  k: Key,
  size: number,
  opts: AugmentOptions = {},
): { readonly student: Float32Array; readonly teacher: Float32Array } => {
  const { pixels } = augmentPixels(img, k, size, opts);
  const n = size * size * 3;
  return {
    student: normalizeInto(pixels.data, IMAGENET_MEAN, IMAGENET_STD, new Float32Array(n)),
    teacher: normalizeInto(pixels.data, CLIP_MEAN, CLIP_STD, new Float32Array(n)),
  };
};

/**
 * The evaluation crop in uint8: bicubic resize of the shorter side to `floor(size / (224 / 256))`
 * (`int(input_size / crop_pct)`, 256 for 224), the longer side `int(short * long / short_in)`
 * (torchvision `Resize(int)`), then the centred `size x size` window (`CenterCrop`, offsets
 * `int(round((H - size) / 2))`).
 */
export const evalPixels = (img: RgbImage, size: number): RgbImage => {
  const resizeTo = Math.floor(size / (224 / 256));
  const { width: w, height: h } = img;
  const [nw, nh] = w <= h
    ? [resizeTo, Math.trunc((resizeTo * h) / w)]
    : [Math.trunc((resizeTo * w) / h), resizeTo];
  const top = roundHalfEven((nh - size) / 2), left = roundHalfEven((nw - size) / 2);
  return resizeBicubic(img, { x: 0, y: 0, w, h }, nw, nh, false, { x: left, y: top, w: size, h: size });
};

/**
 * The evaluation transform: `[size, size, 3]` floats, ImageNet mean/std (tools/run_linear.py
 * `transform_val`).
 */
export const evalTransform = (img: RgbImage, size: number): Float32Array =>
  normalizeInto(evalPixels(img, size).data, IMAGENET_MEAN, IMAGENET_STD, new Float32Array(size * size * 3));
