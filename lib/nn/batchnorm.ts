/**
 * BatchNorm over features without an affine transform, as the official linear probe puts in front of its
 * head: `torch.nn.BatchNorm1d(D, affine=False, eps=1e-6)` (CAE `tools/run_linear.py`, from MAE). Training
 * normalises with the batch's mean and biased variance and moves the running statistics towards the
 * batch's mean and *unbiased* variance (momentum 0.1); evaluation normalises with the running statistics.
 * No parameters, so nothing to differentiate: the statistics are state, threaded through like any other.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { type Tensor1D, tidy } from "../core/tree.ts";

/** Running statistics, `[D]` each. */
export interface BatchNormState {
  /** Running mean `[D]`. */
  readonly mean: Tensor1D;
  /** Running (unbiased) variance `[D]`. */
  readonly variance: Tensor1D;
}

/** PyTorch's defaults for the probe: eps 1e-6 (official), momentum 0.1 (PyTorch default). */
export interface BatchNormOptions {
  /** Added to the variance (official 1e-6). */
  readonly eps?: number;
  /** Weight of the batch statistics in the running ones (PyTorch 0.1). */
  readonly momentum?: number;
}

/** Running mean 0, running variance 1 (PyTorch's initial buffers). */
export const batchNormInit = (dim: number): BatchNormState => ({
  mean: tf.zeros([dim]) as tf.Tensor1D,
  variance: tf.ones([dim]) as tf.Tensor1D,
});

/**
 * Training mode: `x: [B, D]` -> normalised `[B, D]` and the new running statistics (fresh tensors; the
 * caller disposes the old state). Needs `B > 1` (PyTorch refuses a batch of one as well).
 */
export const batchNormTrain = (
  x: tf.Tensor2D,
  state: BatchNormState,
  opts: BatchNormOptions = {},
): { readonly y: tf.Tensor2D; readonly state: BatchNormState } => {
  const { eps = 1e-6, momentum = 0.1 } = opts;
  const n = x.shape[0];
  if (n < 2) throw new Error(`batchNormTrain: needs at least 2 samples per batch, got ${n}`);
  return tidy(() => {
    const { mean, variance } = tf.moments(x, 0);
    const y = tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, eps))) as tf.Tensor2D;
    const unbiased = tf.mul(variance, n / (n - 1));
    const runMean = tf.add(tf.mul(state.mean, 1 - momentum), tf.mul(mean, momentum)) as tf.Tensor1D;
    const runVar = tf.add(tf.mul(state.variance, 1 - momentum), tf.mul(unbiased, momentum)) as tf.Tensor1D;
    return { y, state: { mean: runMean, variance: runVar } };
  });
};

/** Evaluation mode: `x: [B, D]` normalised with the running statistics. */
export const batchNormEval = (
  x: tf.Tensor2D,
  state: BatchNormState,
  opts: BatchNormOptions = {},
): tf.Tensor2D =>
  tf.tidy(() =>
    tf.div(tf.sub(x, state.mean), tf.sqrt(tf.add(state.variance, opts.eps ?? 1e-6))) as tf.Tensor2D
  );

/** Disposes the running statistics. */
export const disposeBatchNorm = (s: BatchNormState): void => {
  s.mean.dispose();
  s.variance.dispose();
};
