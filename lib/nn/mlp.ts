/**
 * The transformer MLP: `fc2(act(fc1(x)))` with hidden width `ratio * D` (4 in every preset).
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Key } from "../core/random.ts";
import { split } from "../core/random.ts";
import { fusedActivation } from "../core/kernels/dispatch.ts";
import { linear, linearInit, type LinearParams } from "./linear.ts";

/** Parameters of an MLP. */
export type MlpParams = { readonly fc1: LinearParams; readonly fc2: LinearParams };

/** Activation functions used by the two towers. */
export type Activation = "gelu" | "quickGelu";

/** Exact GELU, `0.5 x (1 + erf(x / sqrt 2))` (`nn.GELU()` default, the student's activation). */
export const gelu = (x: tf.Tensor): tf.Tensor =>
  tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));

/** QuickGELU, `x * sigmoid(1.702 x)` (OpenAI CLIP `QuickGELU`). */
export const quickGelu = (x: tf.Tensor): tf.Tensor => tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));

/** Xavier-uniform init of both layers. */
export const mlpInit = (k: Key, dim: number, hidden: number): MlpParams => {
  const [k1, k2] = split(k);
  return { fc1: linearInit(k1, dim, hidden), fc2: linearInit(k2, hidden, dim) };
};

/** `x: [..., D] -> [..., D]`. */
export const mlp = (p: MlpParams, x: tf.Tensor, act: Activation = "gelu"): tf.Tensor => {
  const h = linear(p.fc1, x);
  // The fused WebGPU kernel when lib/core/kernels is on (same math); the references otherwise.
  return linear(p.fc2, fusedActivation(h, act === "quickGelu") ?? (act === "gelu" ? gelu(h) : quickGelu(h)));
};
