/**
 * The host-side image type of the data pipeline: 8-bit RGB, row-major, 3 bytes per pixel. This is what
 * decoders produce, what the synthetic dataset draws and what the augmentations read, so the pipeline
 * works on the same integers PIL works on in the official code (`Image.convert("RGB")`).
 *
 * @module
 */

/** An 8-bit RGB image: `data[(y * width + x) * 3 + c]`, c = 0 (R), 1 (G), 2 (B). */
export interface RgbImage {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
}

/**
 * Wraps pixel data as an {@link RgbImage}, checking that the buffer holds `width * height * 3` bytes.
 *
 * @example
 * ```ts
 * import { rgbImage } from "./image.ts";
 * const img = rgbImage(2, 1, new Uint8Array([255, 0, 0, 0, 0, 255]));
 * if (img.data.length !== 6) throw new Error("two RGB pixels");
 * ```
 */
export const rgbImage = (width: number, height: number, data: Uint8Array): RgbImage => {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`rgbImage: width and height must be positive integers, got ${width}x${height}`);
  }
  if (data.length !== width * height * 3) {
    throw new Error(
      `rgbImage: a ${width}x${height} RGB image needs ${width * height * 3} bytes, got ${data.length}`,
    );
  }
  return { width, height, data };
};

/**
 * Drops the alpha channel of RGBA data (or replicates a grey channel), as PIL's `convert("RGB")` does:
 * alpha is discarded, not composited. `channels` is 1 (grey), 2 (grey + alpha), 3 or 4.
 */
export const toRgb = (width: number, height: number, src: ArrayLike<number>, channels: number): RgbImage => {
  const n = width * height;
  if (channels === 3 && src instanceof Uint8Array) return rgbImage(width, height, src.slice(0, n * 3));
  const out = new Uint8Array(n * 3);
  if (channels >= 3) {
    for (let i = 0, j = 0; i < n; i++, j += channels) {
      out[3 * i] = src[j];
      out[3 * i + 1] = src[j + 1];
      out[3 * i + 2] = src[j + 2];
    }
  } else {
    for (let i = 0, j = 0; i < n; i++, j += channels) {
      const v = src[j];
      out[3 * i] = v;
      out[3 * i + 1] = v;
      out[3 * i + 2] = v;
    }
  }
  return rgbImage(width, height, out);
};

/**
 * Python 3's `round(x)`: to the nearest integer, ties to even. The official code writes
 * `int(round(math.sqrt(...)))` for crop and mask-block sizes (furnace/transforms.py,
 * furnace/masking_generator.py), and torchvision's CenterCrop uses `int(round((h - size) / 2.0))`;
 * `Math.round` rounds ties up and would pick different sizes at exact halves.
 *
 * @example
 * ```ts
 * import { roundHalfEven } from "./image.ts";
 * if (roundHalfEven(2.5) !== 2 || roundHalfEven(3.5) !== 4 || roundHalfEven(-0.5) !== 0) throw new Error();
 * ```
 */
export const roundHalfEven = (x: number): number => {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
};
