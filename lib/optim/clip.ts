/**
 * Gradient clipping by global norm, with PyTorch's `torch.nn.utils.clip_grad_norm_` semantics (what the
 * official CAE loop calls through `NativeScalerWithGradNormCount`, `--clip_grad 3.0`).
 *
 * @module
 */
import { tf } from "../deps.ts";
import { flatten, mapTree, type Params } from "../core/tree.ts";
import { type EmptyState, type GradientTransformation, tidy } from "./transform.ts";

// The WebGPU AddN kernel binds every input as a storage buffer (the device allows 8 by default), so
// many scalars are summed in groups.
const ADDN_GROUP = 6;

const sumScalars = (xs: readonly tf.Scalar[]): tf.Scalar => {
  if (xs.length === 0) return tf.scalar(0);
  let level = xs;
  while (level.length > 1) {
    const next: tf.Scalar[] = [];
    for (let i = 0; i < level.length; i += ADDN_GROUP) {
      const group = level.slice(i, i + ADDN_GROUP);
      next.push(group.length === 1 ? group[0] : tf.addN(group));
    }
    level = next;
  }
  return level[0];
};

/**
 * Global L2 norm of every leaf together: `sqrt(sum_i ||g_i||^2)`, as a scalar tensor (no readback).
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { globalNorm } from "./clip.ts";
 * await tf.setBackend("cpu");
 * const n = globalNorm({ a: tf.tensor1d([3]), b: { c: tf.tensor1d([4]) } });
 * if (Math.abs((await n.data())[0] - 5) > 1e-6) throw new Error("unexpected");
 * ```
 */
export const globalNorm = (grads: Params): tf.Scalar =>
  tf.tidy(() => tf.sqrt(sumScalars(Object.values(flatten(grads)).map((g) => tf.sum(tf.square(g))))));

/**
 * Scales all updates by `min(1, maxNorm / (globalNorm + 1e-6))`, PyTorch `clip_grad_norm_` exactly
 * (the 1e-6 is PyTorch's). The factor stays on the device.
 */
export const clipByGlobalNorm = (maxNorm: number): GradientTransformation<EmptyState> => {
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) {
    throw new Error(`clipByGlobalNorm: maxNorm must be a positive finite number, got ${maxNorm}`);
  }
  return {
    init: () => ({}),
    update: (updates, state) =>
      tidy(() => {
        const factor = tf.minimum(1, tf.div(maxNorm, tf.add(globalNorm(updates), 1e-6)));
        return [mapTree(updates, (u) => tf.mul(u, factor)), state] as const;
      }),
  };
};
