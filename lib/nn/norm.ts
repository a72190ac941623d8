/**
 * LayerNorm over the last axis: `(x - mean) / sqrt(var + eps) * scale + bias` (biased variance, as
 * `torch.nn.LayerNorm`). The student uses eps 1e-6 (official `partial(nn.LayerNorm, eps=1e-6)`), CLIP 1e-5.
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Tensor1D } from "../core/tree.ts";
import { fusedKernelOn, fusedLayerNorm, fusedLayerNormGrad } from "../core/kernels/dispatch.ts";
import { precision, toSaved, withRestored } from "../core/precision.ts";
import { customOp } from "../core/autodiff.ts";

/** Parameters of a LayerNorm. */
export type LayerNormParams = { readonly scale: Tensor1D; readonly bias: Tensor1D };

/** Weight 1, bias 0. */
export const layerNormInit = (dim: number): LayerNormParams => ({
  scale: tf.ones([dim]) as Tensor1D,
  bias: tf.zeros([dim]) as Tensor1D,
});

/** The forward pass of the reference, returning the statistics the backward pass keeps. */
const normalise = (x: tf.Tensor, scale: tf.Tensor, bias: tf.Tensor, eps: number) => {
  const axis = x.rank - 1;
  const mean = tf.mean(x, axis, true);
  const centred = tf.sub(x, mean);
  const variance = tf.mean(tf.square(centred), axis, true);
  const rstd = tf.rsqrt(tf.add(variance, eps));
  const normed = tf.mul(centred, rstd);
  return { y: tf.add(tf.mul(normed, scale), bias), mean, rstd };
};

/** Leading axes of `x` (all but the last), the axes the scale and bias gradients sum over. */
/**
 * The fused LayerNorm keeping its input as packed f16 for the backward pass (`--precision f16`): the
 * residual stream `[B, N, D]` that every block's two norms keep. The backward pass recomputes the
 * statistics, in f32, from the f16-rounded input.
 */
const halfLayerNorm = (eps: number) =>
  customOp(
    (x: tf.Tensor, scale: tf.Tensor, bias: tf.Tensor) => ({
      value: fusedLayerNorm(x, scale, bias, eps)!,
      save: [toSaved(x), scale],
    }),
    (dy, [saved, scale]) => withRestored([saved], ([x]) => fusedLayerNormGrad(x, scale, dy, eps)!),
  );

const leading = (x: tf.Tensor) => Array.from({ length: x.rank - 1 }, (_, i) => i);

/**
 * LayerNorm with a backward pass that keeps `x`, the mean and `1/std` (`[..., 1]` each), as PyTorch's
 * does, instead of the five full-size intermediates tfjs autodiff of {@link layerNormReference} keeps.
 * With `xhat = (x - mean) rstd` and `g = dy scale`:
 * `dx = rstd (g - mean(g) - xhat mean(g xhat))`, `dscale = sum(dy xhat)`, `dbias = sum(dy)`.
 */
const layerNormOp = (eps: number) =>
  customOp(
    (x: tf.Tensor, scale: tf.Tensor, bias: tf.Tensor) => {
      const { y, mean, rstd } = normalise(x, scale, bias, eps);
      return { value: y, save: [x, scale, mean, rstd] };
    },
    (dy, [x, scale, mean, rstd]) => {
      const axis = x.rank - 1;
      const xhat = tf.mul(tf.sub(x, mean), rstd);
      const g = tf.mul(dy, scale);
      const dx = tf.mul(
        rstd,
        tf.sub(tf.sub(g, tf.mean(g, axis, true)), tf.mul(xhat, tf.mean(tf.mul(g, xhat), axis, true))),
      );
      return [dx, tf.sum(tf.mul(dy, xhat), leading(x)), tf.sum(dy, leading(x))];
    },
  );

/** `x: [..., D] -> [..., D]`. */
export const layerNorm = (p: LayerNormParams, x: tf.Tensor, eps: number): tf.Tensor => {
  // In f16 on the fused kernels: the input is kept as packed f16 (lib/core/precision.ts).
  if (precision() === "f16" && fusedKernelOn("CaeLayerNorm")) return halfLayerNorm(eps)(x, p.scale, p.bias);
  // The fused WebGPU kernel when lib/core/kernels is on (same math, its gradient keeps x and the scale).
  const fused = fusedLayerNorm(x, p.scale, p.bias, eps);
  if (fused !== undefined) return fused;
  return layerNormOp(eps)(x, p.scale, p.bias);
};

/** {@link layerNorm} by tfjs autodiff of plain ops: the reference its gradient is tested against. */
export const layerNormReference = (p: LayerNormParams, x: tf.Tensor, eps: number): tf.Tensor =>
  normalise(x, p.scale, p.bias, eps).y;

/** L2-normalises the last axis (`F.normalize(x, dim=-1)`, eps 1e-12 on the norm). */
export const l2Normalize = (x: tf.Tensor): tf.Tensor => {
  const norm = tf.sqrt(tf.sum(tf.square(x), x.rank - 1, true));
  return tf.div(x, tf.maximum(norm, 1e-12));
};
