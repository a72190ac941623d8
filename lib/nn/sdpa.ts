/**
 * Scaled dot-product attention, the reference every fused attention kernel is tested against.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { customOp } from "../core/autodiff.ts";
import { toSaved, withRestored } from "../core/precision.ts";
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
      const dp = tf.matMul(dy, v, false, true);
      const pdp = tf.mul(dp, p);
      const rows = tf.sum(pdp, -1, true);
      pdp.dispose();
      const centred = tf.sub(dp, rows);
      dp.dispose();
      const ds = tf.mul(p, centred);
      tf.dispose([p, centred]);
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
