/**
 * The transformer MLP: `fc2(act(fc1(x)))` with hidden width `ratio * D` (4 in every preset).
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Key } from "../core/random.ts";
import { split } from "../core/random.ts";
import { fusedActivation, fusedActivationGrad, fusedKernelOn } from "../core/kernels/dispatch.ts";
import { precision, toSaved, withRestored } from "../core/precision.ts";
import { customOp, onTape } from "../core/autodiff.ts";
import { matMulBias } from "../core/kernels/matmul.ts";
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

/**
 * Exact GELU keeping only its input for the backward pass (autodiff of {@link gelu} keeps the input three
 * times over and two full-size intermediates, each as wide as the MLP's hidden layer):
 * `d/dx = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi)`.
 */
export const geluOp = customOp(
  (x: tf.Tensor) => ({ value: gelu(x), save: [x] }),
  (dy, [x]) => {
    // Two terms, each built in its own scope, so about three hidden-sized temporaries exist at once.
    const cdf = tf.tidy(() => tf.mul(tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1), 0.5));
    const pdf = tf.tidy(() =>
      tf.mul(x, tf.mul(tf.exp(tf.mul(tf.square(x), -0.5)), 1 / Math.sqrt(2 * Math.PI)))
    );
    const d = tf.add(cdf, pdf);
    tf.dispose([cdf, pdf]);
    return [tf.mul(dy, d)];
  },
);

/** QuickGELU keeping only its input: `d/dx = s + 1.702 x s (1 - s)`, `s = sigmoid(1.702 x)`. */
export const quickGeluOp = customOp(
  (x: tf.Tensor) => ({ value: quickGelu(x), save: [x] }),
  (dy, [x]) => {
    const s = tf.tidy(() => tf.sigmoid(tf.mul(x, 1.702)));
    const d = tf.tidy(() => tf.add(s, tf.mul(tf.mul(x, 1.702), tf.mul(s, tf.sub(1, s)))));
    s.dispose();
    return [tf.mul(dy, d)];
  },
);

/** Xavier-uniform init of both layers. */
export const mlpInit = (k: Key, dim: number, hidden: number): MlpParams => {
  const [k1, k2] = split(k);
  return { fc1: linearInit(k1, dim, hidden), fc2: linearInit(k2, hidden, dim) };
};

/**
 * The fused activation keeping its input as packed f16 (`--precision f16`, lib/core/precision.ts): the
 * hidden layer `[B N, 4D]` is the widest tensor the tape keeps. Only where the fused kernels run.
 */
const halfActivation = (quick: boolean) =>
  customOp(
    (x: tf.Tensor) => ({ value: fusedActivation(x, quick)!, save: [toSaved(x)] }),
    (dy, saved) => withRestored(saved, ([x]) => [fusedActivationGrad(x, dy, quick)!]),
  );
const halfGelu = halfActivation(false), halfQuickGelu = halfActivation(true);

/**
 * Off the tape (the frozen teacher, inference): `act(x W1 + b1)` as one WebGPU kernel (the activation in
 * the matmul's epilogue; lib/core/kernels/matmul.ts `matMulBias`), or undefined where it does not run.
 * Nothing is kept for a backward pass there, so the pre-activation never needs to exist.
 */
const fusedHidden = (fc1: LinearParams, x: tf.Tensor, act: Activation): tf.Tensor | undefined => {
  if (onTape() || fc1.bias === undefined || !fusedKernelOn("CaeGelu")) return undefined;
  const [inDim, hidden] = fc1.kernel.shape;
  const x2 = (x.rank === 2 ? x : tf.reshape(x, [-1, inDim])) as tf.Tensor2D;
  const h2 = matMulBias(x2, fc1.kernel, fc1.bias, act);
  if (x2 !== x) x2.dispose();
  if (h2 === undefined || x.rank === 2) return h2;
  const h = tf.reshape(h2, [...x.shape.slice(0, -1), hidden]);
  h2.dispose();
  return h;
};

/** `x: [..., D] -> [..., D]`. */
export const mlp = (p: MlpParams, x: tf.Tensor, act: Activation = "gelu"): tf.Tensor => {
  const fused = fusedHidden(p.fc1, x, act);
  if (fused !== undefined) {
    const y = linear(p.fc2, fused);
    fused.dispose();
    return y;
  }
  const h = linear(p.fc1, x);
  const quick = act === "quickGelu";
  // In f16 on the fused kernels the activation keeps its input packed; else the fused WebGPU kernel when
  // lib/core/kernels is on (same math), or the references.
  const a = precision() === "f16" && fusedKernelOn("CaeGelu")
    ? (quick ? halfQuickGelu(h) : halfGelu(h))
    : fusedActivation(h, quick) ?? (act === "gelu" ? geluOp(h) : quickGeluOp(h));
  // Each hidden-sized tensor is released once its consumer has run: whatever the backward pass needs, the
  // consumer kept its own handle on (or, in f16, a packed copy of), so in f16 the f32 originals go at once
  // instead of living to the end of the forward pass.
  h.dispose();
  const y = linear(p.fc2, a);
  a.dispose();
  return y;
};
