/**
 * LayerNorm over the last axis: `(x - mean) / sqrt(var + eps) * scale + bias` (biased variance, as
 * `torch.nn.LayerNorm`). The student uses eps 1e-6 (official `partial(nn.LayerNorm, eps=1e-6)`), CLIP 1e-5.
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Tensor1D } from "../core/tree.ts";
import { fusedLayerNorm } from "../core/kernels/dispatch.ts";

/** Parameters of a LayerNorm. */
export type LayerNormParams = { readonly scale: Tensor1D; readonly bias: Tensor1D };

/** Weight 1, bias 0. */
export const layerNormInit = (dim: number): LayerNormParams => ({
  scale: tf.ones([dim]) as Tensor1D,
  bias: tf.zeros([dim]) as Tensor1D,
});

/** `x: [..., D] -> [..., D]`. */
export const layerNorm = (p: LayerNormParams, x: tf.Tensor, eps: number): tf.Tensor => {
  // The fused WebGPU kernel when lib/core/kernels is on (same math); this reference otherwise.
  const fused = fusedLayerNorm(x, p.scale, p.bias, eps);
  if (fused !== undefined) return fused;
  const axis = x.rank - 1;
  const mean = tf.mean(x, axis, true);
  const centred = tf.sub(x, mean);
  const variance = tf.mean(tf.square(centred), axis, true);
  const normed = tf.mul(centred, tf.rsqrt(tf.add(variance, eps)));
  return tf.add(tf.mul(normed, p.scale), p.bias);
};

/** L2-normalises the last axis (`F.normalize(x, dim=-1)`, eps 1e-12 on the norm). */
export const l2Normalize = (x: tf.Tensor): tf.Tensor => {
  const norm = tf.sqrt(tf.sum(tf.square(x), x.rank - 1, true));
  return tf.div(x, tf.maximum(norm, 1e-12));
};
