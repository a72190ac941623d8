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

/** How many of the rows of `logits` (host `[B * C]`) have their label among the top `k` scores. */
export const countTopK = (
  logits: ArrayLike<number>,
  labels: Int32Array,
  classes: number,
  k: number,
): number => {
  let hits = 0;
  for (let i = 0; i < labels.length; i++) {
    const y = labels[i], row = i * classes;
    const sy = logits[row + y];
    // Rank of the label: classes scoring strictly higher, plus ties before it (a stable top-k).
    let above = 0;
    for (let c = 0; c < classes; c++) {
      const s = logits[row + c];
      if (s > sy || (s === sy && c < y)) above++;
    }
    if (above < k) hits++;
  }
  return hits;
};

/** Accuracy figures in percent, as the official `evaluate` reports them (`acc1`, `acc5`). */
export interface Accuracy {
  /** Top-1 accuracy, percent. */
  readonly top1: number;
  /** Top-5 accuracy, percent (top-C when there are fewer than 5 classes). */
  readonly top5: number;
  /** Samples scored. */
  readonly count: number;
}

/** A running top-1 / top-5 tally. */
export const accuracyOf = (hits1: number, hits5: number, count: number): Accuracy => ({
  top1: count > 0 ? (100 * hits1) / count : 0,
  top5: count > 0 ? (100 * hits5) / count : 0,
  count,
});
