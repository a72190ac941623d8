/**
 * The CAE v2 student encoder: a ViT over the visible patches plus cls (official `VisionTransformerEncoder`
 * in CAE's `modeling_cae_helper.py`): patch embed + fixed sin-cos positions, keep visible tokens,
 * pre-norm blocks with layer scale, final LayerNorm.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { flatten, type Tensor1D, type Tensor3D, type Tensor4D, unflatten } from "../core/tree.ts";
import { recomputed } from "../core/autodiff.ts";
import { type Key, split } from "../core/random.ts";
import { attention, attentionInit, type AttentionParams } from "../nn/attention.ts";
import { type BatchRows, dropPathRates, dropPathScale } from "../nn/drop_path.ts";
import type { LinearParams } from "../nn/linear.ts";
import { mlp, mlpInit, type MlpParams } from "../nn/mlp.ts";
import { layerNorm, layerNormInit, type LayerNormParams } from "../nn/norm.ts";
import { patchEmbed, patchEmbedInit } from "../nn/patch_embed.ts";
import { truncNormal } from "../nn/init.ts";
import type { CaeV2Config } from "./config.ts";
import { gatherTokens, type MaskIndex } from "./mask_index.ts";

/** One pre-norm block with layer scale (`gamma_1`, `gamma_2`). */
export type BlockParams = {
  /** LayerNorm before attention. */
  readonly norm1: LayerNormParams;
  /** Self-attention with q and v biases, no k bias. */
  readonly attn: AttentionParams;
  /** `[D]`: layer scale of the attention branch (init 0.1). */
  readonly gamma1: Tensor1D;
  /** LayerNorm before the MLP. */
  readonly norm2: LayerNormParams;
  /** exact-erf GELU MLP. */
  readonly mlp: MlpParams;
  /** `[D]`: layer scale of the MLP branch (init 0.1). */
  readonly gamma2: Tensor1D;
};

/** Encoder parameters. Position embeddings are fixed and not parameters. */
export type EncoderParams = {
  /** `[P * P * 3, D]` + bias: the conv patch embedding as a matrix over flattened patches. */
  readonly patchEmbed: LinearParams;
  /** `[1, 1, D]`: the cls token. */
  readonly clsToken: Tensor3D;
  /** Blocks `"0"`, `"1"`, ... in order. */
  readonly blocks: Readonly<Record<string, BlockParams>>;
  /** The final LayerNorm. */
  readonly norm: LayerNormParams;
};

/** Training context: randomness is explicit. */
export interface Ctx {
  readonly training: boolean;
  readonly key?: Key;
  /**
   * Recompute each encoder block in the backward pass instead of keeping its activations (`--remat`):
   * about one more forward pass of the encoder for a backward pass that holds one block's activations.
   */
  readonly remat?: boolean;
  /** The rows of the global batch this batch is (data-parallel training); drop path draws for those. */
  readonly rows?: BatchRows;
}

/** Layer-scale vector. */
export const layerScaleInit = (dim: number, value: number) => tf.fill([dim], value) as Tensor1D;

/** Block init (official: xavier Linear, LayerNorm 1/0, gammas = init_values). */
export const blockInit = (k: Key, dim: number, mlpRatio: number, layerScale: number): BlockParams => {
  const [ka, km] = split(k);
  return {
    norm1: layerNormInit(dim),
    attn: attentionInit(ka, dim),
    gamma1: layerScaleInit(dim, layerScale),
    norm2: layerNormInit(dim),
    mlp: mlpInit(km, dim, dim * mlpRatio),
    gamma2: layerScaleInit(dim, layerScale),
  };
};

/** `x = x + dp(gamma1 * attn(norm1(x)))`, `x = x + dp(gamma2 * mlp(norm2(x)))`. `x: [B, N, D]`. */
export const block = (
  p: BlockParams,
  x: Tensor3D,
  heads: number,
  eps: number,
  drop: number,
  ctx: Ctx,
): Tensor3D => {
  const [k1, k2] = ctx.key ? split(ctx.key) : [undefined, undefined];
  // Each norm's output is released once its consumer has run: the consumer keeps what its backward pass
  // needs (in f16 a packed copy, so the float32 tensor must not live to the end of the forward pass).
  // Each branch ends in its residual connection (lib/nn/residual.ts): on WebGPU the layer scale, drop path
  // and add are the epilogue of the branch's last product.
  const b = x.shape[0];
  const n1 = layerNorm(p.norm1, x, eps) as Tensor3D;
  const x1 = attention(p.attn, n1, heads, {
    x,
    gamma: p.gamma1,
    rowScale: dropPathScale(b, drop, ctx.training, k1, ctx.rows),
  });
  n1.dispose();
  const n2 = layerNorm(p.norm2, x1, eps);
  const y = mlp(p.mlp, n2, "gelu", {
    x: x1,
    gamma: p.gamma2,
    rowScale: dropPathScale(b, drop, ctx.training, k2, ctx.rows),
  }) as Tensor3D;
  n2.dispose();
  return y;
};

/** {@link block} whose activations are recomputed in the backward pass; keeps only `x` and the block's parameters. */
export const rematBlock = (
  p: BlockParams,
  x: Tensor3D,
  heads: number,
  eps: number,
  drop: number,
  ctx: Ctx,
): Tensor3D => {
  const flat = flatten(p);
  const names = Object.keys(flat);
  return recomputed((xin: tf.Tensor, ...ws: tf.Tensor[]) => {
    const rebuilt: Record<string, tf.Tensor> = {};
    names.forEach((n, i) => (rebuilt[n] = ws[i]));
    return block(unflatten(rebuilt) as BlockParams, xin as Tensor3D, heads, eps, drop, ctx);
  })(x, ...names.map((n) => flat[n])) as Tensor3D;
};

/** Encoder init. */
export const encoderInit = (k: Key, c: CaeV2Config): EncoderParams => {
  const [kp, kc, kb] = split(k, 3);
  const bkeys = split(kb, c.depth);
  const blocks: Record<string, BlockParams> = {};
  bkeys.forEach((bk, i) => (blocks[String(i)] = blockInit(bk, c.dim, c.mlpRatio, c.layerScale)));
  return {
    patchEmbed: patchEmbedInit(kp, c.patchSize, 3, c.dim),
    clsToken: truncNormal(kc, [1, 1, c.dim]) as Tensor3D,
    blocks,
    norm: layerNormInit(c.dim),
  };
};

/**
 * images `[B, H, W, 3]` -> `[B, 1 + Nv, D]`: cls then the visible tokens in patch order.
 * `pos: [1, 1 + L, D]` is the fixed sin-cos embedding (cls row zero). Without `idx` every patch is kept.
 */
export const encoder = (
  p: EncoderParams,
  c: CaeV2Config,
  images: Tensor4D,
  pos: Tensor3D,
  idx: MaskIndex | undefined,
  ctx: Ctx,
): Tensor3D => {
  const b = images.shape[0];
  const l = pos.shape[1] - 1;
  const tokens = tf.add(
    patchEmbed(p.patchEmbed, images, c.patchSize),
    tf.slice(pos, [0, 1, 0], [1, l, c.dim]),
  );
  const visible = idx ? gatherTokens(tokens as Tensor3D, idx.visible, b) : tokens;
  // The cls position is zero (official `pe_token = zeros`), so cls enters as the bare token.
  const cls = tf.broadcastTo(p.clsToken, [b, 1, c.dim]);
  let x = tf.concat([cls, visible], 1) as Tensor3D;
  const rates = dropPathRates(c.dropPath, c.depth);
  const keys = ctx.key ? split(ctx.key, c.depth) : [];
  for (let i = 0; i < c.depth; i++) {
    const xin = x;
    // One scope per block: what the backward pass needs is on the tape, the rest goes at the block's end
    // rather than at the end of the whole forward pass.
    const bctx = { training: ctx.training, key: keys[i], rows: ctx.rows };
    const bp = p.blocks[String(i)];
    x = tf.tidy(() =>
      ctx.remat
        ? rematBlock(bp, xin, c.heads, c.eps, rates[i], bctx)
        : block(bp, xin, c.heads, c.eps, rates[i], bctx)
    );
  }
  return layerNorm(p.norm, x, c.eps) as Tensor3D;
};
