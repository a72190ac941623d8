/**
 * How far a computed array lands from its reference: the one measure of the parity checks (fixture README),
 * the kernel checks (lib/bench/kernel_check.ts) and the tests.
 *
 * @module
 */

/**
 * The relative error `||x - ref||_2 / ||ref||_2`, summed in float64; the absolute `||x - ref||_2` when the
 * reference is all zeros, Infinity when the lengths differ, NaN when either holds a NaN (so that no
 * tolerance accepts it).
 *
 * @example
 * ```ts
 * import { relativeError } from "./compare.ts";
 * if (relativeError([3, 4.5], [3, 4]) !== 0.1) throw new Error("unexpected");
 * ```
 */
export const relativeError = (x: ArrayLike<number>, ref: ArrayLike<number>): number => {
  if (x.length !== ref.length) return Infinity;
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = x[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
};
