/**
 * The CAE v2 objectives: visible latent alignment (cls + visible tokens vs the teacher) and masked latent
 * alignment (regressed masked tokens vs the teacher), each the mean of `1 - cosine` over its tokens. The
 * official loss is their token-weighted mean over all `1 + L` tokens (weight 1 each); configurable weights
 * generalise it: `loss = (wv (1 + Nv) Lv + wm Nm Lm) / (1 + L)`.
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Scalar, Tensor2D, Tensor3D } from "../core/tree.ts";
import { l2Normalize } from "../nn/norm.ts";
import { gatherTokens, type MaskIndex } from "../models/mask_index.ts";

/** Scalar losses of one batch. */
export interface AlignmentLosses {
  /** The weighted, token-weighted combination `(wv (1 + Nv) Lv + wm Nm Lm) / (1 + L)`: what is optimised. */
  readonly loss: Scalar;
  /** Lv: visible latent alignment, mean `1 - cos` over cls and the visible tokens. */
  readonly visible: Scalar;
  /** Lm: masked latent alignment, mean `1 - cos` over the regressed masked tokens. */
  readonly masked: Scalar;
}

/** Weights of the two parts (official: 1 and 1). */
export interface AlignmentWeights {
  readonly visible: number;
  readonly masked: number;
}

/**
 * Teacher tokens `[B, 1 + L, out]` in patch order -> targets `[B, 1 + L, out]` reordered to
 * `[cls, visible, masked]` and L2-normalised.
 */
export const alignmentTargets = (teacherFeatures: Tensor3D, idx: MaskIndex): Tensor3D =>
  tf.tidy(() => l2Normalize(gatherTokens(teacherFeatures, idx.clsVisibleMasked, idx.batch)) as Tensor3D);

/** `1 - cos` per token; both inputs already L2-normalised. `[B, N, out] -> [B, N]`. */
const cosineDistance = (p: Tensor3D, t: Tensor3D): Tensor2D => tf.sub(1, tf.sum(tf.mul(p, t), 2));

/** Visible and masked latent alignment and their weighted, token-weighted combination. */
export const latentAlignment = (
  predictions: Tensor3D,
  targets: Tensor3D,
  idx: MaskIndex,
  weights: AlignmentWeights = { visible: 1, masked: 1 },
): AlignmentLosses => {
  const b = idx.batch, nv = 1 + idx.numVisible, nm = idx.numMasked;
  const d = cosineDistance(predictions, targets); // [B, 1 + L]
  const visible = tf.mean(tf.slice(d, [0, 0], [b, nv])) as Scalar;
  const masked = tf.mean(tf.slice(d, [0, nv], [b, nm])) as Scalar;
  const loss = tf.div(
    tf.add(tf.mul(visible, weights.visible * nv), tf.mul(masked, weights.masked * nm)),
    nv + nm,
  ) as Scalar;
  return { loss, visible, masked };
};
