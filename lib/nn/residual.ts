/**
 * Addition that saves nothing for its gradient: residual connections and bias adds.
 *
 * tfjs's `Add` gradient keeps both inputs (`inputsToSave: ["a", "b"]`), only to read their shapes, so
 * every residual add held the branch's output until the end of the backward pass: one `[B, N, D]` per
 * branch, two per transformer block. The gradient of a sum needs no values: `dy` for each input, summed
 * over the axes that input was broadcast along.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { customOp } from "../core/autodiff.ts";

/** `dy` reduced to `shape` over the axes `shape` was broadcast along to reach `dy.shape`. */
export const unbroadcast = (dy: tf.Tensor, shape: readonly number[]): tf.Tensor => {
  const axes = tf.backend_util.getReductionAxes(shape as number[], dy.shape);
  return axes.length === 0 ? dy : tf.reshape(tf.sum(dy, axes), shape as number[]);
};

/**
 * `a + b` (broadcasting as `tf.add`) with a gradient that holds no tensor. Same values and gradients as
 * `tf.add`.
 */
export const add = (a: tf.Tensor, b: tf.Tensor): tf.Tensor => {
  const sa = a.shape, sb = b.shape;
  return customOp(
    (x: tf.Tensor, y: tf.Tensor) => ({ value: tf.add(x, y), save: [] }),
    (dy) => [unbroadcast(dy, sa), unbroadcast(dy, sb)],
  )(a, b);
};
