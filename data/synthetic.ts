/**
 * A procedural, labelled image dataset: the embedded default source and the test data. Each image is a
 * shape (disc, square, triangle, ring, cross) filled solid or with stripes, on a coloured gradient with a
 * smooth value-noise texture and a little pixel noise. The label is shape x fill (10 classes); colour,
 * position, size, rotation, stripe period and angle, and the background are nuisances, so a linear probe
 * has to read shape and texture from the features, which is what a ViT pretrained by latent
 * regression should learn to encode. Edges are antialiased (coverage from a signed distance), and all
 * sizes scale with the image, so 64 px images look like 224 px ones, only smaller.
 *
 * Deterministic: image `index` of dataset `seed` is a pure function of `(seed, index, size)`.
 *
 * @module
 */
import type { Key } from "../lib/core/random.ts";
import { foldIn, key, sampler } from "../lib/core/random.ts";
import { type RgbImage, rgbImage } from "./image.ts";

/** The shapes, in label order. */
export const SHAPES = ["disc", "square", "triangle", "ring", "cross"] as const;
/** The fills, in label order. */
export const FILLS = ["solid", "striped"] as const;
/** Number of classes: `label = shape * FILLS.length + fill`. */
export const numClasses: number = SHAPES.length * FILLS.length;

/** Class names, `numClasses` of them, e.g. "striped triangle". */
export const classNames: readonly string[] = SHAPES.flatMap((s) => FILLS.map((f) => `${f} ${s}`));

/** The label of image `index`: classes cycle, so any `numClasses` consecutive indices hold one of each. */
export const syntheticLabel = (index: number): number => index % numClasses;

type Rgb = [number, number, number];

const hsv = (h: number, s: number, v: number): Rgb => {
  const i = Math.floor(h * 6), f = h * 6 - i;
  const p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s);
  const m = ((i % 6) + 6) % 6;
  const rgb: Rgb = m === 0
    ? [v, t, p]
    : m === 1
    ? [q, v, p]
    : m === 2
    ? [p, v, t]
    : m === 3
    ? [p, q, v]
    : m === 4
    ? [t, p, v]
    : [v, p, q];
  return rgb.map((c) => c * 255) as Rgb;
};
const lum = (c: Rgb) => (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255;

const sdBox = (x: number, y: number, bx: number, by: number): number => {
  const qx = Math.abs(x) - bx, qy = Math.abs(y) - by;
  return Math.hypot(Math.max(qx, 0), Math.max(qy, 0)) + Math.min(Math.max(qx, qy), 0);
};

/** Equilateral triangle of half side `r` centred at the origin (Inigo Quilez's 2-D distance functions). */
const sdTriangle = (x: number, y: number, r: number): number => {
  const k = Math.sqrt(3);
  let px = Math.abs(x) - r, py = y + r / k;
  if (px + k * py > 0) [px, py] = [(px - k * py) / 2, (-k * px - py) / 2];
  px -= Math.min(Math.max(px, -2 * r), 0);
  return -Math.hypot(px, py) * Math.sign(py);
};

/** Signed distance (pixels, negative inside) of shape `s` with radius `r` at rotated coordinates (x, y). */
const shapeDistance = (s: number, x: number, y: number, r: number): number => {
  switch (s) {
    case 0:
      return Math.hypot(x, y) - r;
    case 1:
      return sdBox(x, y, 0.8 * r, 0.8 * r);
    case 2:
      return sdTriangle(x, y + 0.25 * r, 1.05 * r);
    case 3:
      return Math.abs(Math.hypot(x, y) - 0.78 * r) - 0.22 * r;
    default:
      return Math.min(sdBox(x, y, r, 0.3 * r), sdBox(x, y, 0.3 * r, r));
  }
};

const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);

/**
 * Image `index` of the synthetic dataset `seed`, `size x size` pixels, and its label.
 *
 * @example
 * ```ts
 * import { numClasses, syntheticImage } from "./synthetic.ts";
 * const a = syntheticImage(0, 7, 64), b = syntheticImage(0, 7, 64);
 * if (a.label !== 7 % numClasses || a.image.data.some((v, i) => v !== b.image.data[i])) throw new Error();
 * ```
 */
export const syntheticImage = (
  seed: Key | number,
  index: number,
  size = 224,
): { readonly image: RgbImage; readonly label: number } => {
  if (!Number.isInteger(size) || size < 8) {
    throw new Error(`syntheticImage: size must be an integer >= 8, got ${size}`);
  }
  return renderSynthetic(seed, index, size);
};

/**
 * The renderer behind {@link syntheticImage}. With `coverage` (`[size * size]`), it also writes there how
 * much of each pixel the shape covers (0 to 1, the antialiased edge included): the synthetic segmentation
 * source's label map (data/segmentation.ts). `size` is not checked here.
 */
export const renderSynthetic = (
  seed: Key | number,
  index: number,
  size: number,
  coverage?: Float32Array,
): { readonly image: RgbImage; readonly label: number } => {
  const base = typeof seed === "number" ? key(seed) : seed;
  const k = foldIn(base, index);
  const s = sampler(k);
  const label = syntheticLabel(index);
  const shape = Math.floor(label / FILLS.length), striped = label % FILLS.length === 1;

  // Background: a gradient between two muted colours, plus smooth value noise on a 5 x 5 grid.
  const bgHue = s.next();
  const bg0 = hsv(bgHue, s.uniform(0.1, 0.5), s.uniform(0.25, 0.95));
  const bg1 = hsv((bgHue + s.uniform(-0.15, 0.15) + 1) % 1, s.uniform(0.1, 0.5), s.uniform(0.25, 0.95));
  const gAngle = s.uniform(0, 2 * Math.PI), gx = Math.cos(gAngle), gy = Math.sin(gAngle);
  const G = 5;
  const noise = Float64Array.from({ length: G * G }, () => s.uniform(-1, 1));
  const noiseAmp = s.uniform(8, 28);

  // Foreground: a saturated colour that stands out from the background's mean brightness.
  const fgHue = s.next();
  let fg = hsv(fgHue, s.uniform(0.55, 1), s.uniform(0.5, 1));
  const bgLum = (lum(bg0) + lum(bg1)) / 2;
  if (Math.abs(lum(fg) - bgLum) < 0.25) fg = hsv(fgHue, 0.8, bgLum > 0.5 ? 0.3 : 1);
  const fg2 = hsv((fgHue + s.uniform(0.3, 0.7)) % 1, s.uniform(0.3, 1), s.uniform(0.15, 0.5));
  const r = size * s.uniform(0.18, 0.3);
  const cx = s.uniform(r * 1.05, size - r * 1.05);
  const cy = s.uniform(r * 1.05, size - r * 1.05);
  const rot = s.uniform(0, 2 * Math.PI), cr = Math.cos(rot), sr = Math.sin(rot);
  const period = size * s.uniform(0.08, 0.12);
  const sAngle = s.uniform(0, Math.PI), sx = Math.cos(sAngle) / period, sy = Math.sin(sAngle) / period;
  const reach2 = (1.5 * r + 1) ** 2;
  const seedBits = (k[0] ^ (k[1] * 0x9e3779b1)) >>> 0;

  const data = new Uint8Array(size * size * 3);
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      const x = px + 0.5, y = py + 0.5;
      // Background colour.
      const t = clamp01(0.5 + ((x / size - 0.5) * gx + (y / size - 0.5) * gy));
      const nx = (x / size) * (G - 1), ny = (y / size) * (G - 1);
      const ix = Math.min(G - 2, Math.floor(nx)), iy = Math.min(G - 2, Math.floor(ny));
      const fx = nx - ix, fy = ny - iy;
      const ux = fx * fx * (3 - 2 * fx), uy = fy * fy * (3 - 2 * fy);
      const n = (noise[iy * G + ix] * (1 - ux) + noise[iy * G + ix + 1] * ux) * (1 - uy) +
        (noise[(iy + 1) * G + ix] * (1 - ux) + noise[(iy + 1) * G + ix + 1] * ux) * uy;
      // Shape coverage with a one-pixel antialiased edge.
      const dx = x - cx, dy = y - cy;
      const rx = cr * dx + sr * dy, ry = -sr * dx + cr * dy;
      // Every shape lies within 1.5 r of its centre (the triangle reaches 1.46 r).
      const alpha = dx * dx + dy * dy > reach2 ? 0 : clamp01(0.5 - shapeDistance(shape, rx, ry, r));
      // Stripes: distance to the nearest stripe edge, antialiased the same way.
      let beta = 1;
      if (striped && alpha > 0) {
        const phase = x * sx + y * sy;
        const q = phase - Math.floor(phase) - 0.25;
        const w = q - Math.round(q);
        beta = clamp01(0.5 + (0.25 - Math.abs(w)) * period);
      }
      // Cheap per-pixel noise from an integer hash (a few grey levels of sensor-like grain).
      let h = (seedBits ^ Math.imul(px + 1, 0x85ebca6b) ^ Math.imul(py + 1, 0xc2b2ae35)) >>> 0;
      h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
      const grain = ((h >>> 24) / 255 - 0.5) * 8;
      const o = (py * size + px) * 3;
      if (coverage !== undefined) coverage[py * size + px] = alpha;
      for (let c = 0; c < 3; c++) {
        const bg = bg0[c] * (1 - t) + bg1[c] * t + n * noiseAmp;
        const fill = fg[c] * beta + fg2[c] * (1 - beta);
        const v = fill * alpha + bg * (1 - alpha) + grain;
        data[o + c] = v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
      }
    }
  }
  return { image: rgbImage(size, size, data), label };
};
