/**
 * Linear layer: `y = x W + b`, kernel stored `[in, out]` (the transpose of PyTorch's `[out, in]`).
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Tensor1D, Tensor2D } from "../core/tree.ts";
import type { Key } from "../core/random.ts";
import { customOp } from "../core/autodiff.ts";
import { toSaved, withRestored } from "../core/precision.ts";
import { matMulBias } from "../core/kernels/matmul.ts";
import { xavierUniform } from "./init.ts";
import { reshape } from "./views.ts";

/** Parameters of a linear layer. */
export type LinearParams = { readonly kernel: Tensor2D; readonly bias?: Tensor1D };

/** Xavier-uniform kernel and zero bias (official CAE `_init_weights`). */
export const linearInit = (k: Key, inDim: number, outDim: number, bias = true): LinearParams => {
  const kernel = xavierUniform(k, inDim, outDim) as Tensor2D;
  return bias ? { kernel, bias: tf.zeros([outDim]) as Tensor1D } : { kernel };
};

/**
 * `x W (+ b)` on `x: [M, in]` with a backward pass that keeps only `x` and `W` (both alive anyway: the
 * layer's input and its parameter; in f16, `x` as packed f16). Autodiff of `add(matMul(x, W), b)` would
 * also keep the product `[M, out]`, which tfjs's `Add` saves for its shape. Same products as tfjs's `BatchMatMul` gradient:
 * `dx = dy W^T`, `dW = x^T dy`, `db = sum(dy, 0)`. On WebGPU with the tiled matmul registered the
 * forward is one kernel with the bias in the GEMM's epilogue ({@link matMulBias}); elsewhere (wasm, cpu,
 * stock kernels) the two ops as before.
 */
const affine = customOp(
  (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => ({
    value: matMulBias(x as Tensor2D, w as Tensor2D, b as Tensor1D) ?? tf.add(tf.matMul(x, w), b),
    save: [toSaved(x), w],
  }),
  (dy, [x, w]) => [tf.matMul(dy, w, false, true), weightGrad(x, dy), tf.sum(dy, 0)],
);
const product = customOp(
  (x: tf.Tensor, w: tf.Tensor) => ({ value: tf.matMul(x, w), save: [toSaved(x), w] }),
  (dy, [x, w]) => [tf.matMul(dy, w, false, true), weightGrad(x, dy)],
);

/**
 * `dW = x^T dy` from the saved input, which `--precision f16` keeps as packed f16 (lib/core/precision.ts):
 * the forward product rounded x to f16 too, so the widened copy gives the same `dW`.
 */
const weightGrad = (saved: tf.Tensor, dy: tf.Tensor): tf.Tensor =>
  withRestored([saved], ([x]) => tf.matMul(x, dy, true, false));

/** `x: [..., in] -> [..., out]`. Folds leading axes into one matmul. */
export const linear = (p: LinearParams, x: tf.Tensor, extraBias?: Tensor1D): tf.Tensor => {
  const inDim = p.kernel.shape[0], outDim = p.kernel.shape[1];
  const lead = x.shape.slice(0, -1);
  const x2 = x.rank === 2 ? x as Tensor2D : reshape<Tensor2D>(x, [-1, inDim]);
  const bias = extraBias ?? p.bias;
  const y = bias ? affine(x2, p.kernel, bias) : product(x2, p.kernel);
  if (x.rank === 2) return y;
  // The 2-D handles go now, not when the caller's scope ends: a caller that releases the result early
  // (lib/nn/mlp.ts, attention.ts) then really frees its data (a reshape shares it with every handle).
  const out = reshape(y, [...lead, outDim]);
  tf.dispose([x2, y]);
  return out;
};

/** {@link linear} by tfjs autodiff of plain ops: the reference its gradient is tested against. */
export const linearReference = (p: LinearParams, x: tf.Tensor, extraBias?: Tensor1D): tf.Tensor => {
  const inDim = p.kernel.shape[0], outDim = p.kernel.shape[1];
  const lead = x.shape.slice(0, -1);
  const x2 = x.rank === 2 ? x as Tensor2D : tf.reshape(x, [-1, inDim]) as Tensor2D;
  const bias = extraBias ?? p.bias;
  const y = bias ? tf.add(tf.matMul(x2, p.kernel), bias) : tf.matMul(x2, p.kernel);
  return x.rank === 2 ? y : tf.reshape(y, [...lead, outDim]);
};
