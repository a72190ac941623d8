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
import { matMulActGrad, matMulBias } from "../core/kernels/matmul.ts";
import { linear, linearInit, type LinearParams } from "./linear.ts";
import { reshape } from "./views.ts";
import {
  branchGrads,
  perSample,
  type Residual,
  residualKind,
  residualLinear,
  residualProduct,
} from "./residual.ts";

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

/**
 * The whole MLP as one op on the fused WebGPU kernels, for training: it keeps `x` and the pre-activation
 * `u = x W1 + b1` (in f16 both packed), not the hidden layer `h = act(u)`, which its backward pass
 * recomputes from `u` (one elementwise kernel) for `dW2 = h^T dy`. The activation's gradient is the
 * epilogue of the product that makes its `dy` (`du = (dy W2^T) act'(u)`, lib/core/kernels/matmul.ts
 * `matMulActGrad`), so the hidden layer's gradient never exists either. Same kernels on the same values as
 * linear → activation → linear in f32 (bit for bit); in f16 `dW2` reads `act(u)` of the f16-rounded `u`
 * where the separate ops read the f16-rounded `act(u)`.
 *
 * Why: `h` is `[B N, 4D]`, the widest tensor a block keeps; this drops one per block from the tape.
 *
 * `residual`: the op ends in the block's residual connection, its extra inputs `r` ("add", CLIP) or
 * `gamma, r` ("scaled": `r + s (gamma y)`, `s` the per-sample drop-path factors, `rowsPer` rows each), added
 * in the second layer's epilogue; the second layer's gradients then come without its output
 * (lib/nn/residual.ts `branchGrads`).
 */
const fusedMlp = (
  act: Activation,
  residual: "none" | "add" | "scaled" = "none",
  s?: tf.Tensor1D,
  rowsPer = 1,
) => {
  const quick = act === "quickGelu";
  const affine = (x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D) =>
    matMulBias(x, w, b) ?? tf.add(tf.matMul(x, w), b) as tf.Tensor2D;
  // With a residual (`rest`: [r] or [gamma, r]) the second layer's epilogue adds it (lib/nn/residual.ts).
  const second = (h: tf.Tensor2D, w2: tf.Tensor2D, b2: tf.Tensor1D, rest: tf.Tensor[]) => {
    if (rest.length === 0) return affine(h, w2, b2);
    const [gamma, r] = rest.length === 2
      ? rest as [tf.Tensor1D, tf.Tensor2D]
      : [undefined, rest[0] as tf.Tensor2D];
    return residualProduct(h, w2, b2, r, gamma, s, rowsPer);
  };
  return customOp(
    (x: tf.Tensor, w1: tf.Tensor, b1: tf.Tensor, w2: tf.Tensor, b2: tf.Tensor, ...rest: tf.Tensor[]) => {
      const u = affine(x as tf.Tensor2D, w1 as tf.Tensor2D, b1 as tf.Tensor1D);
      const h = fusedActivation(u, quick)!;
      const y = second(h as tf.Tensor2D, w2 as tf.Tensor2D, b2 as tf.Tensor1D, rest);
      h.dispose();
      const scale = residual === "scaled" ? [b2, rest[0], ...(s ? [s] : [])] : [];
      return { value: y, save: [toSaved(x), w1, toSaved(u), w2, ...scale] };
    },
    (dy, saved) =>
      withRestored(saved.slice(0, 4), ([x, w1, u, w2]) => {
        // With a layer scale: dy per sample, and the second layer's gradients without its output
        // (lib/nn/residual.ts branchGrads); without: the plain ones.
        const [b2, gamma, rows] = saved.slice(4);
        const scaled = residual === "scaled";
        const dys = scaled ? perSample(dy, rows) : dy;
        const h = fusedActivation(u, quick)!;
        const g2 = tf.matMul(h, dys, true, false);
        h.dispose();
        const last = scaled ? branchGrads(g2, dys, w2, b2, gamma) : undefined;
        const wUp = last?.wGamma ?? w2;
        const du = matMulActGrad(dys as tf.Tensor2D, wUp as tf.Tensor2D, u as tf.Tensor2D, act) ??
          tf.tidy(() => fusedActivationGrad(u, tf.matMul(dys, wUp, false, true), quick)!);
        const first = [tf.matMul(du, w1, false, true), tf.matMul(x, du, true, false), tf.sum(du, 0)];
        if (last === undefined) return [...first, g2, tf.sum(dy, 0), ...(residual === "add" ? [dy] : [])];
        return [...first, last.dw, last.db, last.dgamma, dy];
      }),
  );
};
const fusedGeluMlp = fusedMlp("gelu"), fusedQuickGeluMlp = fusedMlp("quickGelu");

/** Whether {@link fusedMlp} runs: on the tape, WebGPU's fused activation and product kernels on, both biases. */
const fusedMlpOn = (p: MlpParams): boolean =>
  onTape() && p.fc1.bias !== undefined && p.fc2.bias !== undefined && fusedKernelOn("CaeGelu") &&
  fusedKernelOn("CaeGeluGrad") && fusedKernelOn("CaeMatMulActGrad");

/**
 * `x: [..., D] -> [..., D]`. `residual`: returns the residual connection around it instead,
 * `x_r + dropPath(gamma mlp(x))`, fused into the second layer on WebGPU (lib/nn/residual.ts).
 */
export const mlp = (p: MlpParams, x: tf.Tensor, act: Activation = "gelu", residual?: Residual): tf.Tensor => {
  if (fusedMlpOn(p)) {
    const [inDim] = p.fc1.kernel.shape, outDim = p.fc2.kernel.shape[1];
    const x2 = x.rank === 2 ? x : reshape(x, [-1, inDim]);
    const rows = x2.shape[0];
    const weights = [p.fc1.kernel, p.fc1.bias!, p.fc2.kernel, p.fc2.bias!];
    let y2: tf.Tensor;
    if (residual === undefined) {
      y2 = (act === "quickGelu" ? fusedQuickGeluMlp : fusedGeluMlp)(
        x2,
        ...weights as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor],
      );
    } else {
      const r2 = reshape(residual.x, [rows, outDim]);
      const s = residual.rowScale === undefined ? undefined : tf.tensor1d(residual.rowScale);
      const kind = residualKind(residual);
      const op = fusedMlp(act, kind, s, rows / residual.x.shape[0]);
      const [w1, b1, w2, b2] = weights;
      y2 = kind === "add" ? op(x2, w1, b1, w2, b2, r2) : op(x2, w1, b1, w2, b2, residual.gamma!, r2);
      s?.dispose();
      r2.dispose();
    }
    if (x2 !== x) x2.dispose();
    const shape = residual?.x.shape ?? [...x.shape.slice(0, -1), outDim];
    if (y2.shape.length === shape.length) return y2;
    const y = reshape(y2, shape);
    y2.dispose();
    return y;
  }
  const last = (
    h: tf.Tensor,
  ) => (residual === undefined ? linear(p.fc2, h) : residualLinear(p.fc2, h, residual));
  const fused = fusedHidden(p.fc1, x, act);
  if (fused !== undefined) {
    const y = last(fused);
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
  const y = last(a);
  a.dispose();
  return y;
};
