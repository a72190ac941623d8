/**
 * Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) as timm's `Mixup` applies them in the official
 * fine-tuning (`mode="batch"`, `prob=1.0`, `switch_prob=0.5`, `correct_lam=True`): one mixing factor
 * `lam ~ Beta(alpha, alpha)` per batch; each image is mixed with the batch's reverse (`x.flip(0)`); when
 * both are enabled, CutMix is chosen with probability 0.5. CutMix pastes a box of side `sqrt(1 - lam)`
 * times the image's, centred uniformly and clipped at the borders, then sets `lam` to the area actually
 * kept. Targets are `lam * smooth(y) + (1 - lam) * smooth(y.flip(0))` (timm `mixup_target`).
 * Host-side, on the `[B, H, W, 3]` float images of a batch; randomness from an explicit key.
 *
 * @module
 */
import { type Key, sampler } from "../core/random.ts";
import { smoothTargets } from "./heads.ts";

/** Mixing settings (the official per-preset values are in finetune.ts). */
export interface MixupOptions {
  /** Beta alpha of mixup; 0 disables it. */
  readonly mixup: number;
  /** Beta alpha of CutMix; 0 disables it. */
  readonly cutmix: number;
  /** Label smoothing folded into the targets. */
  readonly smoothing: number;
  /** Classes of the targets. */
  readonly numClasses: number;
  /** Probability of mixing a batch at all (timm `prob`, 1). */
  readonly prob?: number;
  /** Probability of CutMix when both are enabled (timm `switch_prob`, 0.5). */
  readonly switchProb?: number;
}

type Draw = ReturnType<typeof sampler>;

const normal = (s: Draw): number => {
  // Box-Muller; 1 - u keeps the log finite.
  const u = 1 - s.next(), v = s.next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
};

/** Gamma(a, 1) by Marsaglia and Tsang (2000); for a < 1 via Gamma(a + 1) * U^(1/a). */
const gamma = (s: Draw, a: number): number => {
  if (a < 1) return gamma(s, a + 1) * Math.pow(1 - s.next(), 1 / a);
  const d = a - 1 / 3, c = 1 / Math.sqrt(9 * d);
  for (;;) {
    const x = normal(s);
    const v0 = 1 + c * x;
    if (v0 <= 0) continue;
    const v = v0 * v0 * v0, u = 1 - s.next();
    if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
};

/** Beta(a, b) as Gamma(a) / (Gamma(a) + Gamma(b)). */
export const betaSample = (s: Draw, a: number, b: number): number => {
  const x = gamma(s, a), y = gamma(s, b);
  return x / (x + y);
};

/** A mixed batch. */
export interface Mixed {
  /** `[B, H, W, 3]`, a new array. */
  readonly images: Float32Array;
  /** `[B, C]` soft targets. */
  readonly targets: Float32Array;
  /** Weight of each image's own label (1: not mixed). */
  readonly lam: number;
  /** Whether CutMix (rather than mixup) was applied. */
  readonly cutmix: boolean;
}

/**
 * Mixes one batch. `images: [B, H, W, 3]` row-major, `labels: [B]`.
 *
 * @example
 * ```ts
 * import { key } from "../core/random.ts";
 * import { mixBatch } from "./mixup.ts";
 * const images = new Float32Array(2 * 4 * 4 * 3).map((_, i) => (i < 48 ? 0 : 1));
 * const m = mixBatch(images, Int32Array.from([0, 1]), 4, 4, { mixup: 0.8, cutmix: 0, smoothing: 0, numClasses: 2 }, key(0));
 * // Image 0 is lam * zeros + (1 - lam) * ones; its targets are [lam, 1 - lam].
 * if (Math.abs(m.images[0] - (1 - m.lam)) > 1e-6 || Math.abs(m.targets[0] - m.lam) > 1e-6) throw new Error();
 * ```
 */
export const mixBatch = (
  images: Float32Array,
  labels: Int32Array,
  height: number,
  width: number,
  o: MixupOptions,
  k: Key,
): Mixed => {
  const b = labels.length, px = height * width * 3;
  if (images.length !== b * px) {
    throw new Error(`mixBatch: ${images.length} image values for ${b} images of ${height}x${width}x3`);
  }
  const s = sampler(k);
  let lam = 1, cutmix = false;
  const enabled = o.mixup > 0 || o.cutmix > 0;
  if (enabled && s.next() < (o.prob ?? 1)) {
    if (o.mixup > 0 && o.cutmix > 0) cutmix = s.next() < (o.switchProb ?? 0.5);
    else cutmix = o.cutmix > 0;
    const alpha = cutmix ? o.cutmix : o.mixup;
    lam = betaSample(s, alpha, alpha);
  }
  const out = new Float32Array(images);
  if (lam !== 1) {
    if (cutmix) {
      // timm rand_bbox: cut = int(side * sqrt(1 - lam)), centre = randint(0, side), clipped.
      const ratio = Math.sqrt(1 - lam);
      const ch = Math.trunc(height * ratio), cw = Math.trunc(width * ratio);
      const cy = s.int(0, height - 1), cx = s.int(0, width - 1);
      const clip = (v: number, hi: number) => Math.min(Math.max(v, 0), hi);
      const yl = clip(cy - (ch >> 1), height), yh = clip(cy + (ch >> 1), height);
      const xl = clip(cx - (cw >> 1), width), xh = clip(cx + (cw >> 1), width);
      for (let i = 0; i < b; i++) {
        const j = b - 1 - i;
        for (let y = yl; y < yh; y++) {
          const rowI = i * px + (y * width) * 3, rowJ = j * px + (y * width) * 3;
          out.set(images.subarray(rowJ + xl * 3, rowJ + xh * 3), rowI + xl * 3);
        }
      }
      lam = 1 - ((yh - yl) * (xh - xl)) / (height * width);
    } else {
      for (let i = 0; i < b; i++) {
        const j = b - 1 - i;
        for (let p = 0; p < px; p++) {
          out[i * px + p] = images[i * px + p] * lam + images[j * px + p] * (1 - lam);
        }
      }
    }
  }
  const y1 = smoothTargets(labels, o.numClasses, o.smoothing);
  const targets = new Float32Array(y1.length);
  const C = o.numClasses;
  for (let i = 0; i < b; i++) {
    const j = b - 1 - i;
    for (let c = 0; c < C; c++) targets[i * C + c] = lam * y1[i * C + c] + (1 - lam) * y1[j * C + c];
  }
  return { images: out, targets, lam, cutmix };
};
