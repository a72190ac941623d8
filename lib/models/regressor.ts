/**
 * The latent contextual regressor of CAE v2 (official `RegressorBlock` / `VisionTransformerRegressor`):
 * queries are the masked tokens (a learned mask token) plus the masked positions; keys are
 * `[visible patch latents (no cls), current masked queries]` plus their positions; values are the same tokens without
 * positions. Each block:
 *   x = q + dp(gamma1 * crossAttn(norm_q(q + pos_q), norm_k(kv + pos_kv), norm_v(kv)))
 *   x = norm2(x)
 *   x = x + dp(gamma2 * mlp(x))
 * CAE v2 applies no final norm (the official `regresser.norm` exists but is unused).
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Tensor1D, Tensor3D } from "../core/tree.ts";
import { type Key, split } from "../core/random.ts";
import { crossAttention, crossAttentionInit, type CrossAttentionParams } from "../nn/cross_attention.ts";
import { dropPathRates, dropPathScale } from "../nn/drop_path.ts";
import { mlp, mlpInit, type MlpParams } from "../nn/mlp.ts";
import { layerNorm, layerNormInit, type LayerNormParams } from "../nn/norm.ts";
import { add } from "../nn/residual.ts";
import type { CaeV2Config } from "./config.ts";
import { type Ctx, layerScaleInit } from "./encoder.ts";

/** One regressor block. */
export type RegressorBlockParams = {
  /** LayerNorm of the queries (masked queries + their positions; official `norm1_q`). */
  readonly normQ: LayerNormParams;
  /** LayerNorm of the keys (`[visible latents, masked queries]` + positions; official `norm1_k`). */
  readonly normK: LayerNormParams;
  /** LayerNorm of the values (the same tokens without positions; official `norm1_v`). */
  readonly normV: LayerNormParams;
  /** Cross-attention from the masked queries to the keys and values. */
  readonly crossAttn: CrossAttentionParams;
  /** `[R]`: layer scale of the cross-attention branch. */
  readonly gamma1: Tensor1D;
  /** LayerNorm applied after the cross-attention residual (official `norm2`). */
  readonly norm2: LayerNormParams;
  /** The block's MLP. */
  readonly mlp: MlpParams;
  /** `[R]`: layer scale of the MLP branch. */
  readonly gamma2: Tensor1D;
};

/** Regressor parameters. */
export type RegressorParams = {
  /** Blocks `"0"`, `"1"`, ... in order. */
  readonly blocks: Readonly<Record<string, RegressorBlockParams>>;
};

/** Regressor init. */
export const regressorInit = (k: Key, c: CaeV2Config): RegressorParams => {
  const blocks: Record<string, RegressorBlockParams> = {};
  split(k, c.regressorDepth).forEach((bk, i) => {
    const [ka, km] = split(bk);
    const r = c.regressorDim;
    blocks[String(i)] = {
      normQ: layerNormInit(r),
      normK: layerNormInit(r),
      normV: layerNormInit(r),
      crossAttn: crossAttentionInit(ka, r),
      gamma1: layerScaleInit(r, c.layerScale),
      norm2: layerNormInit(r),
      mlp: mlpInit(km, r, r * c.mlpRatio),
      gamma2: layerScaleInit(r, c.layerScale),
    };
  });
  return { blocks };
};

/**
 * queries `[B, Nm, R]` (mask tokens), their positions `[B, Nm, R]`, visible patch latents `[B, Nv, R]`
 * (no cls) and their positions `[B, Nv, R]` -> regressed masked latents `[B, Nm, R]`.
 */
export const regressor = (
  p: RegressorParams,
  c: CaeV2Config,
  queries: Tensor3D,
  posQ: Tensor3D,
  visible: Tensor3D,
  posVisible: Tensor3D,
  ctx: Ctx,
): Tensor3D => {
  const rates = dropPathRates(c.dropPath, c.regressorDepth);
  const keys = ctx.key ? split(ctx.key, c.regressorDepth) : [];
  const posKv = tf.concat([posVisible, posQ], 1) as Tensor3D;
  let x = queries;
  for (let i = 0; i < c.regressorDepth; i++) {
    const blk = p.blocks[String(i)];
    const [k1, k2] = keys[i] ? split(keys[i]) : [undefined, undefined];
    const xin = x;
    // One scope per block, as in the encoder: only what the tape keeps outlives the block.
    x = tf.tidy(() => {
      const kv = tf.concat([visible, xin], 1) as Tensor3D;
      const b = xin.shape[0];
      // Each branch ends in its residual connection (lib/nn/residual.ts).
      const x1 = crossAttention(
        blk.crossAttn,
        layerNorm(blk.normQ, add(xin, posQ), c.eps) as Tensor3D,
        layerNorm(blk.normK, add(kv, posKv), c.eps) as Tensor3D,
        layerNorm(blk.normV, kv, c.eps) as Tensor3D,
        c.regressorHeads,
        { x: xin, gamma: blk.gamma1, rowScale: dropPathScale(b, rates[i], ctx.training, k1, ctx.rows) },
      );
      const x2 = layerNorm(blk.norm2, x1, c.eps);
      return mlp(blk.mlp, x2, "gelu", {
        x: x2,
        gamma: blk.gamma2,
        rowScale: dropPathScale(b, rates[i], ctx.training, k2, ctx.rows),
      }) as Tensor3D;
    });
  }
  return x;
};
