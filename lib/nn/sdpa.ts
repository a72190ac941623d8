/**
 * Scaled dot-product attention, the reference every fused attention kernel is tested against.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { customOp } from "../core/autodiff.ts";
import { toSaved, withRestored } from "../core/precision.ts";
import {
  headContext,
  headKeyGrad,
  headOuter,
  headQueryGrad,
  type Heads,
  headScores,
  headTransposedContext,
  writing,
  written,
} from "../core/kernels/heads.ts";
import { reshape } from "./views.ts";

/**
 * `softmax(q k^T / sqrt(dh)) v`.
 * q: `[B, H, Nq, dh]`, k and v: `[B, H, Nk, dh]` -> `[B, H, Nq, dh]`. The scale is applied to q first, as
 * the official `q = q * self.scale` (identical math, keeps the same rounding order).
 */
export const scaledDotProductAttention = (q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D): tf.Tensor4D => {
  const dh = q.shape[3];
  const scores = tf.matMul(tf.mul(q, 1 / Math.sqrt(dh)), k, false, true); // [B, H, Nq, Nk]
  return tf.matMul(tf.softmax(scores), v) as tf.Tensor4D;
};

/**
 * The scores' gradient `dS = P (dP - rowsum(P dP))` from the probabilities `P` and their gradient `dP`,
 * releasing both (and each temporary as soon as it is used: at most three `[B, H, Nq, Nk]` tensors exist).
 */
const softmaxGrad = (p: tf.Tensor, dp: tf.Tensor): tf.Tensor => {
  const pdp = tf.mul(dp, p);
  const rows = tf.sum(pdp, -1, true);
  pdp.dispose();
  const centred = tf.sub(dp, rows);
  tf.dispose([dp, rows]);
  const ds = tf.mul(p, centred);
  tf.dispose([p, centred]);
  return ds;
};

/**
 * {@link scaledDotProductAttention} with a backward pass in the manner of FlashAttention: it keeps q, k
 * and v only, never the `[B, H, Nq, Nk]` probabilities, and recomputes them from q and k when the
 * gradient is asked for (one extra `q k^T` and softmax per backward pass; the autodiff reference keeps
 * the scaled q, the scores' softmax and v). With `P = softmax(q k^T s)`, `s = 1 / sqrt(dh)`:
 * `dv = P^T dy`, `dP = dy v^T`, `dS = P (dP - rowsum(P dP))`, `dq = dS k s`, `dk = dS^T q s`.
 */
export const attentionCore = customOp(
  (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => ({
    value: scaledDotProductAttention(q as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D),
    // In f16 packed to half the bytes (lib/core/precision.ts): the products round them to f16 anyway.
    save: [toSaved(q), toSaved(k), toSaved(v)],
  }),
  (dy, saved) =>
    withRestored(saved, ([q, k, v]) => {
      // Each [B, H, Nq, Nk] temporary is released as soon as it is used, so at most three exist at once
      // (the backward's scope would otherwise hold all six until it ends).
      const scale = 1 / Math.sqrt(q.shape[3]!);
      const qs = tf.mul(q, scale);
      const s = tf.matMul(qs, k, false, true);
      const p = tf.softmax(s);
      s.dispose();
      const dv = tf.matMul(p, dy, true, false);
      const ds = softmaxGrad(p, tf.matMul(dy, v, false, true));
      const dq = tf.mul(tf.matMul(ds, k), scale);
      const dk = tf.matMul(ds, qs, true, false);
      return [dq, dk, dv];
    }),
) as (q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D) => tf.Tensor4D;

/** `[B, N, H*dh] -> [B, H, N, dh]`. */
export const splitHeads = (x: tf.Tensor, heads: number): tf.Tensor4D => {
  const [b, n, d] = x.shape as [number, number, number];
  const split = reshape(x, [b, n, heads, d / heads]);
  const moved = tf.transpose(split, [0, 2, 1, 3]) as tf.Tensor4D;
  split.dispose(); // shares x's data: released with x, not at the end of the caller's scope
  return moved;
};

/** `[B, H, N, dh] -> [B, N, H*dh]`. */
export const mergeHeads = (x: tf.Tensor4D): tf.Tensor3D => {
  const [b, h, n, dh] = x.shape;
  const moved = tf.transpose(x, [0, 2, 1, 3]);
  const merged = reshape<tf.Tensor3D>(moved, [b, n, h * dh]);
  moved.dispose(); // the reshape shares its data: released with the result, not at the scope's end
  return merged;
};

/** Where attention reads q, k or v: which source tensor, and the column its first head starts at. */
export type HeadAt = readonly [source: number, col: number];

/** Where q, k and v lie in the sources of {@link headAttention}. */
export interface HeadLayout {
  readonly q: HeadAt;
  readonly k: HeadAt;
  readonly v: HeadAt;
}

/**
 * {@link attentionCore} with the heads read in place and the context written merged, on WebGPU's tiled
 * matmul (lib/core/kernels/heads.ts; call it where `headProductsOn()`): `sources` are `[B, N, W]`
 * projections, q, k and v each `H` heads of `dh = D / H` columns starting at a column of one of them
 * (self-attention: one `[B, N, 3D]` source at columns 0, D, 2D; cross-attention: three `[B, N, D]`).
 * Returns the merged context `[B, Nq, D]`, the value of `mergeHeads(attentionCore(q, k, v))` bit for bit,
 * and its gradients are those of that composition: no transpose, slice or pad in either pass. Keeps the
 * sources (in f16 packed) for the backward pass, which recomputes the probabilities as `attentionCore`'s.
 */
export const headAttention = (sources: tf.Tensor3D[], at: HeadLayout, heads: number): tf.Tensor3D => {
  const dim = widthOf(sources, at);
  if (dim % heads !== 0) throw new Error(`headAttention: width ${dim} does not split into ${heads} heads`);
  const dh = dim / heads;
  const scale = 1 / Math.sqrt(dh);
  const op = customOp(
    (...xs: tf.Tensor[]) => {
      const h = (r: HeadAt): Heads => ({ x: xs[r[0]], col: r[1] });
      const [b, nq] = xs[at.q[0]].shape as [number, number];
      const scores = headScores(h(at.q), h(at.k), heads, dh, scale);
      const p = tf.softmax(scores);
      scores.dispose();
      const out = writing([b, nq, heads * dh]);
      headContext(p, h(at.v), heads, dh, out);
      p.dispose();
      return { value: written(out), save: xs.map(toSaved) };
    },
    (dy, saved) =>
      withRestored(saved, (xs) => {
        const h = (r: HeadAt): Heads => ({ x: xs[r[0]], col: r[1] });
        const g: Heads = { x: dy, col: 0 };
        // Every source's gradient is assembled in place from the q, k, v gradients that read it.
        const grads = xs.map((x) => writing(x.shape as [number, number, number]));
        const into = (r: HeadAt) => grads[r[0]];
        const scores = headScores(h(at.q), h(at.k), heads, dh, scale);
        const p = tf.softmax(scores);
        scores.dispose();
        headTransposedContext(p, g, heads, dh, into(at.v), at.v[1]);
        const ds = softmaxGrad(p, headOuter(g, h(at.v), heads, dh));
        headQueryGrad(ds, h(at.k), heads, dh, scale, into(at.q), at.q[1]);
        headKeyGrad(ds, h(at.q), heads, dh, scale, into(at.k), at.k[1]);
        return grads.map(written);
      }),
  );
  return op(...sources) as tf.Tensor3D;
};

/**
 * D, the width of q's heads, after checking that q, k and v have it, that every source is exactly covered
 * by the heads read from it (its gradient is assembled from theirs), and that q and k, k and v agree.
 */
const widthOf = (sources: tf.Tensor3D[], at: HeadLayout): number => {
  const roles = [at.q, at.k, at.v];
  // Heads of one width D: each source's columns split evenly among the roles reading it.
  const perSource = sources.map((_, i) => roles.filter((r) => r[0] === i).map((r) => r[1]));
  const dim = sources[at.q[0]].shape[2] / perSource[at.q[0]].length;
  sources.forEach((x, i) => {
    const cols = [...perSource[i]].sort((a, b) => a - b);
    if (x.shape[2] !== cols.length * dim || cols.some((c, j) => c !== j * dim)) {
      throw new Error(
        `headAttention: source ${i} [${x.shape}] is not covered by heads of width ${dim} at columns ${cols}`,
      );
    }
  });
  const [bq] = sources[at.q[0]].shape, [bk, nk] = sources[at.k[0]].shape, [bv, nv] = sources[at.v[0]].shape;
  if (bq !== bk || bk !== bv || nk !== nv) {
    throw new Error(`headAttention: q, k, v of [${sources.map((s) => `[${s.shape}]`)}] do not agree`);
  }
  return dim;
};
