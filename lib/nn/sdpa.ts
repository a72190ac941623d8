/**
 * Scaled dot-product attention, the reference every fused attention kernel is tested against.
 *
 * @module
 */
import { tf } from "../deps.ts";

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

/** `[B, N, H*dh] -> [B, H, N, dh]`. */
export const splitHeads = (x: tf.Tensor, heads: number): tf.Tensor4D => {
  const [b, n, d] = x.shape as [number, number, number];
  return tf.transpose(tf.reshape(x, [b, n, heads, d / heads]), [0, 2, 1, 3]);
};

/** `[B, H, N, dh] -> [B, N, H*dh]`. */
export const mergeHeads = (x: tf.Tensor4D): tf.Tensor3D => {
  const [b, h, n, dh] = x.shape;
  return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [b, n, h * dh]);
};
