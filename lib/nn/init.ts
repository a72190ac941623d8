/**
 * Initialisers, seeded by explicit keys. Each returns a fresh tensor.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { type Key, seedOf, uniform } from "../core/random.ts";

/**
 * Xavier/Glorot uniform, as `torch.nn.init.xavier_uniform_`: U(-a, a), a = sqrt(6 / (fanIn + fanOut)).
 * The official CAE init applies it to every Linear (`_init_weights`).
 */
export const xavierUniform = (k: Key, fanIn: number, fanOut: number, shape: number[] = [fanIn, fanOut]) => {
  const a = Math.sqrt(6 / (fanIn + fanOut));
  return tf.randomUniform(shape, -a, a, "float32", seedOf(k));
};

/** Inverse of the standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9). */
export const normalQuantile = (p: number): number => {
  const a = [
    -3.969683028665376e1,
    2.209460984245205e2,
    -2.759285104469687e2,
    1.38357751867269e2,
    -3.066479806614716e1,
    2.506628277459239,
  ];
  const b = [
    -5.447609879822406e1,
    1.615858368580409e2,
    -1.556989798598866e2,
    6.680131188771972e1,
    -1.328068155288572e1,
  ];
  const c = [
    -7.784894002430293e-3,
    -3.223964580411365e-1,
    -2.400758277161838,
    -2.549732539343734,
    4.374664141464968,
    2.938163982698783,
  ];
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
      ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - lo) return -normalQuantile(1 - p);
  const q = p - 0.5, r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
};

/**
 * Truncated normal N(0, std^2) restricted to [-std, std], sampled exactly by inverting the CDF. The official
 * CAE/BEiT `trunc_normal_(t, std=.02)` wrapper passes `a=-std, b=std`, so cls token, mask token and the
 * patch-embedding kernel are cut at one standard deviation (docs/design.md, "The method").
 */
export const truncNormal = (k: Key, shape: number[], std = 0.02): tf.Tensor => {
  const n = shape.reduce((a, b) => a * b, 1);
  const u = uniform(k, n);
  // Phi(-1) and Phi(1): the CDF mass inside one standard deviation.
  const lo = 0.15865525393145707, hi = 0.8413447460685429;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = std * normalQuantile(lo + (hi - lo) * u[i]);
  return tf.tensor(out, shape);
};
