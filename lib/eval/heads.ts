/**
 * Classification heads and what scores them: the linear head of the probe and of fine-tuning, the
 * soft-target cross-entropy (which is also label smoothing and mixup's loss), and top-k accuracy.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { type Key, seedOf } from "../core/random.ts";
import type { LinearParams } from "../nn/linear.ts";

/**
 * A Linear `[D] -> [C]` with kernel ~ N(0, std^2) and zero bias. The official probe re-draws the head
 * with timm's `trunc_normal_(head.weight, std=0.01)`, whose cut is at +-2 in absolute value, i.e. 200
 * standard deviations: a plain normal. Fine-tuning draws std 0.02 and then multiplies weight and bias by
 * `init_scale` (0.001, official `--init_scale`).
 */
export const linearHeadInit = (k: Key, dim: number, classes: number, std: number): LinearParams => ({
  kernel: tf.randomNormal([dim, classes], 0, std, "float32", seedOf(k)) as tf.Tensor2D,
  bias: tf.zeros([classes]) as tf.Tensor1D,
});

/**
 * Soft targets `[B, C]`: one-hot labels smoothed as timm's `mixup_target` (`off = s / C`,
 * `on = 1 - s + off`), so that the soft-target cross-entropy equals `LabelSmoothingCrossEntropy(s)` and
 * plain cross-entropy when `s = 0`. Labels must lie in `0..C-1`.
 */
export const smoothTargets = (labels: Int32Array, classes: number, smoothing = 0): Float32Array => {
  const off = smoothing / classes, on = 1 - smoothing + off;
  const out = new Float32Array(labels.length * classes).fill(off);
  labels.forEach((y, i) => {
    if (!(y >= 0 && y < classes)) {
      throw new Error(`label ${y} of sample ${i} is outside 0..${classes - 1}: is --num-classes right?`);
    }
    out[i * classes + y] = on;
  });
  return out;
};

/** `mean_b( -sum_c t[b, c] * log_softmax(z)[b, c] )`, timm's `SoftTargetCrossEntropy`. */
export const softCrossEntropy = (logits: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar =>
  tf.tidy(() => tf.mean(tf.neg(tf.sum(tf.mul(targets, tf.logSoftmax(logits, -1)), -1))) as tf.Scalar);

/**
 * How many of the rows of `logits` (host `[B * C]`) have their label among the top `k` scores. A row that
 * holds a NaN or an infinity is never a hit: a NaN compares false against everything, so ranking the
 * label by "scores above it" would find none and call a diverged model's every sample a hit (the
 * evaluations also stop on such scores, lib/eval/finite.ts; this keeps the count itself honest).
 *
 * @example
 * ```ts
 * import { countTopK } from "./heads.ts";
 * const labels = Int32Array.from([0, 1]);
 * if (countTopK([2, 1, 0, 3], labels, 2, 1) !== 2) throw new Error("both rows rank their label first");
 * if (countTopK([NaN, NaN, Infinity, 0], labels, 2, 1) !== 0) throw new Error("non-finite rows never hit");
 * ```
 */
export const countTopK = (
  logits: ArrayLike<number>,
  labels: Int32Array,
  classes: number,
  k: number,
): number => {
  let hits = 0;
  rows: for (let i = 0; i < labels.length; i++) {
    const y = labels[i], row = i * classes;
    const sy = logits[row + y];
    // Rank of the label: classes scoring strictly higher, plus ties before it (a stable top-k).
    let above = 0;
    for (let c = 0; c < classes; c++) {
      const s = logits[row + c];
      if (!Number.isFinite(s)) continue rows;
      if (s > sy || (s === sy && c < y)) above++;
    }
    if (above < k) hits++;
  }
  return hits;
};

/**
 * The k that the scorers count into {@link Accuracy.top5}: 5, or `classes - 1` with fewer than 6 classes (a
 * top-5 over 5 classes or fewer is 100% whatever the model does), and 1 with 2 classes or fewer. Only
 * k = 5 is reported ({@link accuracyFigures}); the smaller ks are kept off the reports.
 *
 * @example
 * ```ts
 * import { secondTopK } from "./heads.ts";
 * if ([1000, 6, 5, 3, 2, 1].map(secondTopK).join() !== "5,5,4,2,1,1") throw new Error();
 * ```
 */
export const secondTopK = (classes: number): number => Math.max(1, Math.min(5, classes - 1));

/** Accuracy figures in percent, as the official `evaluate` reports them (`acc1`, `acc5`). */
export interface Accuracy {
  /** Top-1 accuracy, percent. */
  readonly top1: number;
  /**
   * Top-5 accuracy, percent, with 6 classes or more. With fewer, the scorers count top-(classes - 1)
   * here ({@link secondTopK}), which no report shows: print an accuracy with {@link accuracyFigures} or
   * {@link formatAccuracy}, which leave it out below 6 classes.
   */
  readonly top5: number;
  /** Samples scored. */
  readonly count: number;
}

/** How a trained head scored and how it was trained: what every probe reports. */
export interface FitSummary {
  /** Held-out accuracy after the last epoch (the official scripts' last-epoch figure). */
  readonly accuracy: Accuracy;
  /** The best held-out top-1 over epochs (the official "Max accuracy"). */
  readonly bestTop1: number;
  /** The absolute (peak) lr used. */
  readonly lr: number;
  /** The batch used (clamped to the training set). */
  readonly batchSize: number;
  /** Optimizer steps per epoch (incomplete batches dropped). */
  readonly stepsPerEpoch: number;
  /** Epochs run. */
  readonly epochs: number;
}

/** A running top-1 / top-5 tally. */
export const accuracyOf = (hits1: number, hits5: number, count: number): Accuracy => ({
  top1: count > 0 ? (100 * hits1) / count : 0,
  top5: count > 0 ? (100 * hits5) / count : 0,
  count,
});

/** Fewest classes for which a top-5 accuracy says something (below it, top-5 is 100% by construction). */
const TOP5_MIN_CLASSES = 6;

/**
 * The figures worth reporting of an {@link Accuracy} over `classes` classes: `top1` and `top5` with 6
 * classes or more, `top1` alone with fewer. For every task's last line, metrics lines and results JSON
 * alike, so that no task prints a top-k whose k is not 5, nor a top-5 that is 100% by construction.
 *
 * @example
 * ```ts
 * import { accuracyFigures, formatAccuracy } from "./heads.ts";
 * const acc = { top1: 50, top5: 75, count: 4 };
 * if (JSON.stringify(accuracyFigures(acc, 6)) !== '{"top1":50,"top5":75}') throw new Error();
 * if (JSON.stringify(accuracyFigures(acc, 5)) !== '{"top1":50}') throw new Error();
 * if (formatAccuracy(acc, 10) !== "top1=50.00 top5=75.00" || formatAccuracy(acc, 3) !== "top1=50.00") {
 *   throw new Error();
 * }
 * ```
 */
export const accuracyFigures = (acc: Accuracy, classes: number): Record<string, number> =>
  classes >= TOP5_MIN_CLASSES ? { top1: acc.top1, top5: acc.top5 } : { top1: acc.top1 };

/** `top1=<pct> top5=<pct>` (two decimals), or `top1=<pct>` alone below 6 classes ({@link accuracyFigures}). */
export const formatAccuracy = (acc: Accuracy, classes: number): string =>
  Object.entries(accuracyFigures(acc, classes)).map(([k, v]) => `${k}=${v.toFixed(2)}`).join(" ");
