/**
 * Bicubic resampling exactly as Pillow does it for 8-bit images (`Image.resize(size, Image.BICUBIC)`),
 * which is what the official code runs: torchvision's `F.resized_crop` on a PIL image is
 * `img.crop(box).resize(size, BICUBIC)` (furnace/transforms.py, `RandomResizedCropAndInterpolationWithTwoPic`),
 * and the evaluation `transforms.Resize(256, interpolation=3)` is the same call on the whole image.
 *
 * Pillow's algorithm (src/libImaging/Resample.c, `ImagingResampleInner`, `precompute_coeffs`,
 * `normalize_coeffs_8bpc`, `ImagingResampleHorizontal_8bpc` / `Vertical_8bpc`):
 * - the cubic kernel with a = -0.5, support 2;
 * - when downscaling, the kernel is stretched by the scale factor (support * scale): this is the
 *   antialiasing that plain bicubic interpolation lacks, so small outputs (64 px) do not alias;
 * - separable: a horizontal pass over the needed source rows, rounded and clipped to uint8, then a
 *   vertical pass; each pass is skipped when that axis keeps its size;
 * - weights normalised to sum 1, then fixed point with 22 fractional bits, accumulated from 0.5 and
 *   clipped to 0..255.
 * The tests compare against Pillow 9.4's output on fixed inputs, byte for byte.
 *
 * @module
 */
import { type RgbImage, rgbImage } from "./image.ts";

/** A source rectangle in pixels (left, top, width, height). */
export interface Box {
  readonly x: number;
  readonly y: number;
  readonly w: number;
  readonly h: number;
}

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;

/** Pillow's bicubic kernel, a = -0.5 (Resample.c `bicubic_filter`). */
const bicubic = (x: number): number => {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
};

/** Per-output-pixel integer weights over [in0, in1) of an axis of `inSize` pixels (Resample.c). */
interface Coeffs {
  readonly ksize: number;
  readonly bounds: Int32Array; // [outSize * 2]: first source index, count
  readonly k: Int32Array; // [outSize * ksize], fixed point
}

const precomputeCoeffs = (inSize: number, in0: number, in1: number, outSize: number): Coeffs => {
  const scale = (in1 - in0) / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = 2 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const k = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const ss = 1 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    // C's (int) truncates toward zero; the values are > -1 here, so `Math.trunc` is exact.
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const v = bicubic((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? w[x] / ww : w[x];
      // normalize_coeffs_8bpc: round half away from zero into fixed point.
      k[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { ksize, bounds, k };
};

/** Pillow's clip8: fixed point to 0..255 (truncating the fraction, the 0.5 was added up front). */
const clip8 = (ss: number): number => (ss >= ONE * 256 ? 255 : ss <= 0 ? 0 : ss >> PRECISION_BITS);

/**
 * Resizes the `box` region of `src` to `outW x outH` with Pillow's bicubic filter, optionally mirrored
 * left-right first (`flip`: the box is then read in the mirrored image, as `RandomHorizontalFlip` before
 * `RandomResizedCrop` does), and returns only the output window `win` (default: all of it). Computing a
 * window of the full output is what `Resize` followed by `CenterCrop` needs, without the pixels the crop
 * throws away; each output pixel depends only on its own coordinates, so the window is bit-identical to
 * the same region of the full resize.
 *
 * @example
 * ```ts
 * import { resizeBicubic } from "./resize.ts";
 * import { rgbImage } from "./image.ts";
 * const grey = rgbImage(4, 4, new Uint8Array(48).fill(77));
 * const out = resizeBicubic(grey, { x: 0, y: 0, w: 4, h: 4 }, 3, 2);
 * if (out.width !== 3 || out.height !== 2 || out.data.some((v) => v !== 77)) throw new Error();
 * ```
 */
export const resizeBicubic = (
  src: RgbImage,
  box: Box,
  outW: number,
  outH: number,
  flip = false,
  win: Box = { x: 0, y: 0, w: outW, h: outH },
): RgbImage => {
  const { x: bx, y: by, w: bw, h: bh } = box;
  if (bx < 0 || by < 0 || bw < 1 || bh < 1 || bx + bw > src.width || by + bh > src.height) {
    throw new Error(
      `resizeBicubic: box ${bw}x${bh}+${bx}+${by} does not fit in a ${src.width}x${src.height} image`,
    );
  }
  if (win.x < 0 || win.y < 0 || win.x + win.w > outW || win.y + win.h > outH) {
    throw new Error(`resizeBicubic: window ${win.w}x${win.h}+${win.x}+${win.y} is outside ${outW}x${outH}`);
  }
  const sw = src.width, sd = src.data;
  // Byte offset within a source row of box column c, in the (possibly mirrored) image.
  const col = (c: number) => (flip ? sw - 1 - bx - c : bx + c) * 3;
  const ch = outW !== bw ? precomputeCoeffs(bw, 0, bw, outW) : undefined;
  const cv = outH !== bh ? precomputeCoeffs(bh, 0, bh, outH) : undefined;

  // Rows of the box that the vertical pass reads for the window's output rows.
  let r0 = win.y, r1 = win.y + win.h;
  if (cv) {
    r0 = cv.bounds[2 * win.y];
    r1 = cv.bounds[2 * (win.y + win.h - 1)] + cv.bounds[2 * (win.y + win.h - 1) + 1];
  }
  // Horizontal pass (or a plain copy) into tmp: rows r0..r1 of the box, columns of the window.
  const tw = win.w, th = r1 - r0, tw3 = tw * 3;
  const tmp = new Uint8Array(tw3 * th);
  const half = ONE / 2;
  if (!ch) {
    for (let r = 0; r < th; r++) {
      const srow = (by + r0 + r) * sw * 3;
      for (let xx = 0; xx < tw; xx++) {
        const s = srow + col(win.x + xx);
        tmp[r * tw3 + 3 * xx] = sd[s];
        tmp[r * tw3 + 3 * xx + 1] = sd[s + 1];
        tmp[r * tw3 + 3 * xx + 2] = sd[s + 2];
      }
    }
  } else {
    // Per output column: source byte offsets and weights of its taps, flattened (computed once).
    const ks = ch.ksize;
    const taps = new Int32Array(tw), offs = new Int32Array(tw * ks), ws = new Int32Array(tw * ks);
    for (let xx = 0; xx < tw; xx++) {
      const ox = win.x + xx, xmin = ch.bounds[2 * ox];
      taps[xx] = ch.bounds[2 * ox + 1];
      for (let x = 0; x < taps[xx]; x++) {
        offs[xx * ks + x] = col(xmin + x);
        ws[xx * ks + x] = ch.k[ox * ks + x];
      }
    }
    for (let r = 0; r < th; r++) {
      const srow = (by + r0 + r) * sw * 3, trow = r * tw3;
      for (let xx = 0; xx < tw; xx++) {
        let s0 = half, s1 = half, s2 = half;
        const n = taps[xx], kb = xx * ks;
        for (let x = 0; x < n; x++) {
          const kv = ws[kb + x], s = srow + offs[kb + x];
          s0 += sd[s] * kv;
          s1 += sd[s + 1] * kv;
          s2 += sd[s + 2] * kv;
        }
        tmp[trow + 3 * xx] = clip8(s0);
        tmp[trow + 3 * xx + 1] = clip8(s1);
        tmp[trow + 3 * xx + 2] = clip8(s2);
      }
    }
  }
  if (!cv) return rgbImage(tw, th, tmp);
  // Vertical pass, a row at a time: accumulate each tap's source row into `acc`.
  const out = new Uint8Array(tw3 * win.h);
  const acc = new Float64Array(tw3);
  for (let yy = 0; yy < win.h; yy++) {
    const oy = win.y + yy;
    const ymin = cv.bounds[2 * oy] - r0, yn = cv.bounds[2 * oy + 1], kb = oy * cv.ksize;
    acc.fill(half);
    for (let y = 0; y < yn; y++) {
      const kv = cv.k[kb + y], row = (ymin + y) * tw3;
      for (let xx = 0; xx < tw3; xx++) acc[xx] += tmp[row + xx] * kv;
    }
    const orow = yy * tw3;
    for (let xx = 0; xx < tw3; xx++) out[orow + xx] = clip8(acc[xx]);
  }
  return rgbImage(win.w, win.h, out);
};
