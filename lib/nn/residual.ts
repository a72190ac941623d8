/**
 * Residual connections: additions that save nothing for their gradients, a block's branch with layer scale
 * and drop path, and that branch fused into its last linear layer.
 *
 * tfjs's `Add` gradient keeps both inputs (`inputsToSave: ["a", "b"]`), only to read their shapes, so
 * every residual add held the branch's output until the end of the backward pass: one `[B, N, D]` per
 * branch, two per transformer block. The gradient of a sum needs no values: `dy` for each input, summed
 * over the axes that input was broadcast along. On WebGPU {@link residualLinear} goes further: the layer
 * scale, drop path and add are the epilogue of the branch's last product, and the branch's output is never
 * kept.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { customOp, onTape } from "../core/autodiff.ts";
import { toSaved, withRestored } from "../core/precision.ts";
import { fusedKernelOn } from "../core/kernels/dispatch.ts";
import { matMulBias } from "../core/kernels/matmul.ts";
import { linear, type LinearParams } from "./linear.ts";
import { reshape } from "./views.ts";

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

/**
 * A residual connection around a branch: the result is `x + dropPath(gamma * branch)` ({@link scaledResidual}),
 * or `x + branch` without `gamma` (OpenAI CLIP). `x` has the branch's shape `[B, N, D]`; `rowScale` holds the
 * `[B]` drop-path factors (lib/nn/drop_path.ts `dropPathScale`), and needs `gamma`.
 */
export interface Residual {
  readonly x: tf.Tensor;
  readonly gamma?: tf.Tensor1D;
  readonly rowScale?: Float32Array;
}

/** "add" (`x + branch`) or "scaled" (layer scale, maybe drop path); drop path without a layer scale is refused. */
export const residualKind = (r: Residual): "add" | "scaled" => {
  if (r.gamma !== undefined) return "scaled";
  if (r.rowScale !== undefined) {
    throw new Error("a residual with drop-path factors needs its layer scale gamma");
  }
  return "add";
};

/** The residual connection by the separate ops: what {@link residualLinear} gives where nothing is fused. */
export const residualAdd = (r: Residual, branch: tf.Tensor): tf.Tensor =>
  residualKind(r) === "add" ? add(r.x, branch) : scaledResidual(r.x, branch, r.gamma!, r.rowScale);

/**
 * The gradients of a residual branch's last layer, `y = x + s (gamma (a W + b))` (`s` per sample), from
 * `dys = dy s` and `G = a^T dys`, without the branch's output `p = a W + b`:
 * `dW = G gamma`, `db = gamma colsum(dys)`, `dgamma = colsum(W G) + b colsum(dys)` (columns of `W G`
 * elementwise: `sum_i dys_ij p_ij = sum_k W_kj G_kj + b_j sum_i dys_ij`), and `W gamma` for `da = dys (W gamma)^T`.
 */
export const branchGrads = (
  g: tf.Tensor,
  dys: tf.Tensor,
  w: tf.Tensor,
  b: tf.Tensor,
  gamma: tf.Tensor,
): { dw: tf.Tensor; db: tf.Tensor; dgamma: tf.Tensor; wGamma: tf.Tensor } => {
  const cs = tf.sum(dys, 0);
  return {
    dw: tf.mul(g, gamma),
    db: tf.mul(gamma, cs),
    dgamma: tf.tidy(() => tf.add(tf.sum(tf.mul(w, g), 0), tf.mul(b, cs))),
    wGamma: tf.mul(w, gamma),
  };
};

/** `dy` scaled per sample: `dy: [M, N]` in `s.length` groups of rows, each times its factor. */
export const perSample = (dy: tf.Tensor, s: tf.Tensor | undefined): tf.Tensor => {
  if (s === undefined) return dy;
  const [m, n] = dy.shape as [number, number];
  const b = s.shape[0]!;
  return tf.tidy(() => tf.reshape(tf.mul(tf.reshape(dy, [b, m / b, n]), tf.reshape(s, [b, 1, 1])), [m, n]));
};

/**
 * `r + s (gamma (a W + b))` on 2-D operands (`s`: per-sample factors, `rowsPer` rows each; `gamma` and `s`
 * optional), the forward value of a residual branch's last layer: one kernel where the fused epilogue takes
 * the product (lib/core/kernels/matmul.ts `matMulBias`), else the separate ops in {@link scaledResidual}'s
 * order. {@link residualLinear} and the fused MLP (lib/nn/mlp.ts) both end in it.
 */
export const residualProduct = (
  a: tf.Tensor2D,
  w: tf.Tensor2D,
  b: tf.Tensor1D,
  r: tf.Tensor2D,
  gamma?: tf.Tensor1D,
  s?: tf.Tensor1D,
  rowsPer = 1,
): tf.Tensor =>
  matMulBias(a, w, b, "none", { x: r, gamma, rowScale: s, rowsPer }) ??
    tf.tidy(() => {
      // A product the epilogue does not take: the same ops, one by one.
      const y = matMulBias(a, w, b) ?? tf.add(tf.matMul(a, w), b);
      if (gamma === undefined) return tf.add(r, y);
      return tf.add(r, perSample(tf.mul(y, gamma), s));
    });

/**
 * `r.x + dropPath(gamma (x W + b))` for a branch ending in the linear layer `p` (`x: [..., in]`): on WebGPU
 * one kernel, the layer scale, the drop-path factor and the residual add in the product's epilogue
 * (lib/core/kernels/matmul.ts `matMulBias`), with the same values as the separate ops. On the tape it keeps
 * the layer's input, not the branch's output `[B N, D]` that {@link scaledResidual} keeps for `dgamma`:
 * {@link branchGrads} has `dgamma` from the weight gradient's product. Elsewhere (no bias, other backends,
 * kernels off) the separate ops ({@link residualAdd}).
 */
export const residualLinear = (
  p: LinearParams,
  x: tf.Tensor,
  r: Residual,
  extraBias?: tf.Tensor1D,
): tf.Tensor => {
  const bias = extraBias ?? p.bias;
  const [inDim, outDim] = p.kernel.shape;
  const kind = residualKind(r);
  if (bias === undefined || !fusedKernelOn("CaeMatMulBias") || r.x.shape[r.x.rank - 1] !== outDim) {
    const y = linear(p, x, extraBias);
    const out = residualAdd(r, y);
    y.dispose();
    return out;
  }
  const rows = r.x.size / outDim;
  const b = r.x.shape[0];
  const s = r.rowScale === undefined ? undefined : tf.tensor1d(r.rowScale);
  const x2 = reshape<tf.Tensor2D>(x, [rows, inDim]), r2 = reshape<tf.Tensor2D>(r.x, [rows, outDim]);
  const fused = (
    a: tf.Tensor2D,
    w: tf.Tensor2D,
    bb: tf.Tensor1D,
    gamma: tf.Tensor1D | undefined,
    res: tf.Tensor2D,
  ) => residualProduct(a, w, bb, res, gamma, s, rows / b);
  let y2: tf.Tensor;
  if (kind === "add") {
    // CLIP: no layer scale; the gradient of a plain add is dy for both.
    if (onTape()) {
      const y = linear(p, x2, extraBias);
      y2 = add(r2, y);
      y.dispose();
    } else y2 = fused(x2, p.kernel, bias, undefined, r2);
  } else {
    const gamma = r.gamma!;
    y2 = customOp(
      (a: tf.Tensor, w: tf.Tensor, bb: tf.Tensor, g: tf.Tensor, res: tf.Tensor) => ({
        value: fused(
          a as tf.Tensor2D,
          w as tf.Tensor2D,
          bb as tf.Tensor1D,
          g as tf.Tensor1D,
          res as tf.Tensor2D,
        ),
        save: s === undefined ? [toSaved(a), w, bb, g] : [toSaved(a), w, bb, g, s],
      }),
      (dy, [saved, w, bb, g, ss]) =>
        withRestored([saved], ([a]) => {
          const dys = perSample(dy, ss);
          const gw = tf.matMul(a, dys, true, false);
          const { dw, db, dgamma, wGamma } = branchGrads(gw, dys, w, bb, g);
          const da = tf.matMul(dys, wGamma, false, true);
          return [da, dw, db, dgamma, dy];
        }),
    )(x2, p.kernel, bias, gamma, r2);
  }
  s?.dispose();
  const out = reshape(y2, r.x.shape);
  tf.dispose([x2, r2, y2]);
  return out;
};
