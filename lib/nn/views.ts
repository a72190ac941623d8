/**
 * Reshape and slice whose gradients keep only shapes. tfjs 4.22's `Reshape` and `Slice` gradients save
 * their input tensor (to read its shape), which holds that tensor's data until the backward pass reaches
 * them: in a transformer block that is the `[B N, 3D]` qkv product, its transposed copy and the MLP's
 * hidden layer, each alive through the whole forward pass although no gradient reads their values.
 * These record the shape instead, so the data goes as soon as nothing else holds it. Off the tape they
 * are the plain tfjs ops.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { customOp } from "../core/autodiff.ts";

/**
 * `tf.reshape(x, shape)`; its gradient reshapes `dy` back to `x`'s shape.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { gradients } from "../core/autodiff.ts";
 * import { reshape } from "./views.ts";
 * await tf.setBackend("cpu");
 * const x = tf.tensor2d([[1, 2], [3, 4]]);
 * const { grads } = gradients((x) => tf.sum(tf.mul(reshape(x, [4]), tf.tensor1d([1, 2, 3, 4]))), [x]);
 * if ((await grads[0].data()).join() !== "1,2,3,4") throw new Error("unexpected gradient");
 * ```
 */
export const reshape = <T extends tf.Tensor = tf.Tensor>(x: tf.Tensor, shape: number[]): T => {
  const from = [...x.shape];
  return customOp(
    (x: tf.Tensor) => ({ value: tf.reshape(x, shape), save: [] }),
    (dy) => [tf.reshape(dy, from)],
  )(x) as T;
};

/** `tf.slice(x, begin, size)` (`size` -1: to the end); its gradient pads `dy` with zeros to `x`'s shape. */
export const slice = <T extends tf.Tensor = tf.Tensor>(x: tf.Tensor, begin: number[], size: number[]): T => {
  const from = [...x.shape];
  const sizes = size.map((s, d) => (s === -1 ? from[d] - begin[d] : s));
  const paddings = from.map((n, d) => [begin[d], n - begin[d] - sizes[d]] as [number, number]);
  return customOp(
    (x: tf.Tensor) => ({ value: tf.slice(x, begin, sizes), save: [] }),
    (dy) => [tf.pad(dy, paddings)],
  )(x) as T;
};
