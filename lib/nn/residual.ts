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
import { toSaved, withRestored } from "../core/precision.ts";

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

/**
 * A block's residual branch with layer scale and stochastic depth, `x + dropPath(a * gamma)`
 * (`x, a: [B, N, D]`, `gamma: [D]`, `rowScale`: the `[B]` factors of lib/nn/drop_path.ts `dropPathScale` or undefined), keeping
 * only `a` and `gamma` (and the row factors) for the backward pass. Autodiff of the plain ops also keeps the
 * product `a * gamma`, which the drop-path multiply saves: one more `[B, N, D]` tensor per branch while
 * training. Same ops in the same order both ways, so the same numbers bit for bit.
 */
export const scaledResidual = (
  x: tf.Tensor,
  a: tf.Tensor,
  gamma: tf.Tensor,
  rowScale: Float32Array | undefined,
): tf.Tensor => {
  const [b] = a.shape;
  const s = rowScale === undefined ? undefined : tf.tensor(rowScale, [b, ...a.shape.slice(1).map(() => 1)]);
  const sx = x.shape, sg = gamma.shape;
  const y = customOp(
    (x: tf.Tensor, a: tf.Tensor, gamma: tf.Tensor) => {
      const ag = tf.mul(a, gamma);
      return {
        value: tf.add(x, s === undefined ? ag : tf.mul(ag, s)),
        // In f16, `a` is kept as packed f16 (lib/core/precision.ts): it only enters dgamma.
        save: s === undefined ? [toSaved(a), gamma] : [toSaved(a), gamma, s],
      };
    },
    (dy, [saved, gamma, s]) =>
      withRestored([saved], ([a]) => {
        // tfjs's Mul gradients, in its order: d(a gamma) = dy s; da = d(a gamma) gamma;
        // dgamma = sum(d(a gamma) a).
        const dag = s === undefined ? dy : tf.mul(dy, s);
        return [unbroadcast(dy, sx), tf.mul(dag, gamma), unbroadcast(tf.mul(dag, a), sg)];
      }),
  )(x, a, gamma);
  s?.dispose();
  return y;
};
