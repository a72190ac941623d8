/**
 * The CAE v2 student (Zhang et al., "CAE v2: Context Autoencoder with CLIP Latent Alignment", TMLR 2023):
 * encoder over visible patches -> optional projection to the regressor width -> latent contextual
 * regressor for the masked patches -> one shared LayerNorm + Linear head into the CLIP space, L2-normalised
 * per token. Mirrors the official `caev2` model (CAE repo, `models/modeling_cae.py`).
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Tensor3D, Tensor4D } from "../core/tree.ts";
import { type Key, split } from "../core/random.ts";
import { linear, linearInit, type LinearParams } from "../nn/linear.ts";
import { l2Normalize, layerNorm, layerNormInit, type LayerNormParams } from "../nn/norm.ts";
import { truncNormal } from "../nn/init.ts";
import { sinCos2d } from "../nn/positions.ts";
import { type CaeV2Config, gridOf } from "./config.ts";
import { type Ctx, encoder, encoderInit, type EncoderParams } from "./encoder.ts";
import { gatherTokens, type MaskIndex, maskIndex } from "./mask_index.ts";
import { regressor, regressorInit, type RegressorParams } from "./regressor.ts";

/** Student parameters (project names; see `names.ts` for the official ones). */
export type CaeV2Params = {
  /** The ViT over the visible patches (official `encoder`). */
  readonly encoder: EncoderParams;
  /** Present only when the regressor is narrower than the encoder (ViT-T: 192 -> 96). */
  readonly projection?: { readonly linear: LinearParams; readonly norm: LayerNormParams };
  /** `[1, 1, R]`: the learned query of every masked position (official `mask_token`). */
  readonly maskToken: Tensor3D;
  /** The latent contextual regressor's cross-attention blocks (official `regresser`). */
  readonly regressor: RegressorParams;
  /** LayerNorm + Linear into the teacher's space, shared by all tokens (official `decoder`). */
  readonly head: { readonly norm: LayerNormParams; readonly linear: LinearParams };
};

/** What `caev2Apply` returns: predictions plus named intermediates (big_vision's `out`). */
export interface CaeV2Outputs {
  /** `[B, 1 + L, out]`, L2-normalised, tokens ordered `[cls, visible, masked]`. */
  readonly predictions: Tensor3D;
  /** `[B, 1 + Nv, D]`: encoder output (after its final norm). */
  readonly encoded: Tensor3D;
  /** `[B, Nm, R]`: regressed masked latents. */
  readonly regressed: Tensor3D;
  /** The gather indices of the batch's mask (visible, masked, and the `[cls, visible, masked]` order). */
  readonly index: MaskIndex;
}

/**
 * Official init for training from scratch: every Linear xavier-uniform with zero bias, LayerNorm 1/0,
 * cls and mask tokens and the patch kernel truncated normal (std 0.02, cut at +-std), gammas 0.1.
 */
export const caev2Init = (k: Key, c: CaeV2Config): CaeV2Params => {
  const [ke, kp, km, kr, kh] = split(k, 5);
  const head = { norm: layerNormInit(c.regressorDim), linear: linearInit(kh, c.regressorDim, c.outDim) };
  const base = {
    encoder: encoderInit(ke, c),
    maskToken: truncNormal(km, [1, 1, c.regressorDim]) as Tensor3D,
    regressor: regressorInit(kr, c),
    head,
  };
  return c.regressorDim === c.dim ? base : {
    ...base,
    projection: { linear: linearInit(kp, c.dim, c.regressorDim), norm: layerNormInit(c.regressorDim) },
  };
};

/** The fixed position embeddings of the encoder `[1, 1+L, D]` and the regressor `[1, 1+L, R]`. */
export interface CaeV2Buffers {
  readonly pos: Tensor3D;
  readonly regressorPos: Tensor3D;
}

/** Builds the fixed buffers once; the caller owns and disposes them. */
export const caev2Buffers = (c: CaeV2Config): CaeV2Buffers => {
  const { side } = gridOf(c);
  return { pos: sinCos2d(side, side, c.dim), regressorPos: sinCos2d(side, side, c.regressorDim) };
};

/**
 * images `[B, H, W, 3]` (ImageNet-normalised) and `mask: [B * L]` (1 = masked) -> predictions in the
 * CLIP space. With `ctx.training` and `dropPath > 0`, `ctx.key` is required.
 */
export const caev2Apply = (
  p: CaeV2Params,
  c: CaeV2Config,
  buffers: CaeV2Buffers,
  images: Tensor4D,
  mask: Uint8Array,
  ctx: Ctx,
): CaeV2Outputs => {
  const b = images.shape[0];
  const { numPatches } = gridOf(c);
  const idx = maskIndex(mask, b, numPatches);
  const [ke, kr] = ctx.key ? split(ctx.key) : [undefined, undefined];
  const encoded = encoder(p.encoder, c, images, buffers.pos, idx, {
    training: ctx.training,
    key: ke,
    remat: ctx.remat,
    rows: ctx.rows,
  });
  const latents = p.projection
    ? layerNorm(p.projection.norm, linear(p.projection.linear, encoded), c.eps) as Tensor3D
    : encoded;

  const r = c.regressorDim;
  const patchPos = tf.broadcastTo(
    tf.slice(buffers.regressorPos, [0, 1, 0], [1, numPatches, r]),
    [b, numPatches, r],
  ) as Tensor3D;
  const posQ = gatherTokens(patchPos, idx.masked, b);
  const posVisible = gatherTokens(patchPos, idx.visible, b);
  // The regressor's context is the visible patch latents only: the official model hands it the encoder
  // output without cls. Verified against the parity fixtures (with cls: ~0.2 error on the masked tokens).
  const visiblePatches = tf.slice(latents, [0, 1, 0], [b, idx.numVisible, r]) as Tensor3D;
  const queries = tf.broadcastTo(p.maskToken, [b, idx.numMasked, r]) as Tensor3D;
  const regressed = regressor(p.regressor, c, queries, posQ, visiblePatches, posVisible, {
    training: ctx.training,
    key: kr,
    rows: ctx.rows,
  });

  // One shared head over [cls, visible, masked] (docs/design.md, "The method").
  const tokens = tf.concat([latents, regressed], 1);
  const predictions = l2Normalize(
    linear(p.head.linear, layerNorm(p.head.norm, tokens, c.eps)),
  ) as Tensor3D;
  return { predictions, encoded, regressed, index: idx };
};
