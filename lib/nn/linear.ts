/**
 * Linear layer: `y = x W + b`, kernel stored `[in, out]` (the transpose of PyTorch's `[out, in]`).
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Tensor1D, Tensor2D } from "../core/tree.ts";
import type { Key } from "../core/random.ts";
import { xavierUniform } from "./init.ts";

/** Parameters of a linear layer. */
export type LinearParams = { readonly kernel: Tensor2D; readonly bias?: Tensor1D };

/** Xavier-uniform kernel and zero bias (official CAE `_init_weights`). */
export const linearInit = (k: Key, inDim: number, outDim: number, bias = true): LinearParams => {
  const kernel = xavierUniform(k, inDim, outDim) as Tensor2D;
  return bias ? { kernel, bias: tf.zeros([outDim]) as Tensor1D } : { kernel };
};

/** `x: [..., in] -> [..., out]`. Folds leading axes into one matmul. */
export const linear = (p: LinearParams, x: tf.Tensor, extraBias?: Tensor1D): tf.Tensor => {
  const inDim = p.kernel.shape[0], outDim = p.kernel.shape[1];
  const lead = x.shape.slice(0, -1);
  const x2 = x.rank === 2 ? x as Tensor2D : tf.reshape(x, [-1, inDim]) as Tensor2D;
  const bias = extraBias ?? p.bias;
  const y = bias ? tf.add(tf.matMul(x2, p.kernel), bias) : tf.matMul(x2, p.kernel);
  return x.rank === 2 ? y : tf.reshape(y, [...lead, outDim]);
};
