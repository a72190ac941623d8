/**
 * Finiteness checks of a training state, so that no checkpoint ever holds a NaN or an Inf.
 *
 * The loss alone cannot tell: it is computed before the update, so a step whose update overflows (a huge
 * learning rate, a gradient whose square overflows AdamW's second moment) reports a finite loss and leaves
 * Inf in the new parameters, which the next checkpoint would then keep as "the last good one". The device
 * check here costs one multiply and one sum per tensor and rides on the step's single metrics readback.
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { HostTensor } from "../core/safetensors.ts";

/**
 * A `[n]` vector with one entry per tensor: 0 where the tensor is all finite, NaN where it holds a NaN or
 * an Inf. `x * 0` is 0 for every finite x and NaN for NaN and +-Inf, and a sum of zeros cannot overflow
 * (a plain `sum(x)` of large finite values could, and would stop a healthy run). Each `x * 0` is freed as
 * soon as it is summed, so the check holds at most one tensor-sized temporary. The caller owns the result.
 */
export const nonFiniteProbe = (tensors: readonly tf.Tensor[]): tf.Tensor1D => {
  const sums: tf.Tensor[] = [];
  try {
    // One tidy per tensor: its `x * 0` goes as soon as it is summed.
    for (const x of tensors) {
      sums.push(tf.tidy(() => tf.reshape(tf.cast(tf.sum(tf.mul(x, 0)), "float32"), [1])));
    }
    return (sums.length === 0 ? tf.zeros([0]) : tf.concat(sums)) as tf.Tensor1D;
  } finally {
    tf.dispose(sums);
  }
};

/**
 * Names of the tensors whose probe entry is not 0, given `names` in probe order.
 *
 * @example
 * ```ts
 * import { nonFiniteNames } from "./finite.ts";
 * const bad = nonFiniteNames(["a", "b", "c"], new Float32Array([0, NaN, 0]));
 * if (bad.join() !== "b") throw new Error();
 * ```
 */
export const nonFiniteNames = (names: readonly string[], probe: ArrayLike<number>): string[] =>
  names.filter((_, i) => probe[i] !== 0);

/** Names of the host tensors holding a NaN or an Inf (integer tensors are always finite). */
export const nonFiniteHost = (tensors: Readonly<Record<string, HostTensor>>): string[] =>
  Object.entries(tensors).filter(([, x]) => {
    if (x.data instanceof Int32Array) return false;
    for (let i = 0; i < x.data.length; i++) if (!Number.isFinite(x.data[i])) return true;
    return false;
  }).map(([n]) => n);

/** "a, b, c and 61 more" (at most `show` names). */
export const someNames = (names: readonly string[], show = 3): string =>
  names.length <= show
    ? names.join(", ")
    : `${names.slice(0, show).join(", ")} and ${names.length - show} more`;
