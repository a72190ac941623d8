/**
 * The frozen teacher: OpenAI CLIP's vision tower (`VisionTransformer` in openai/CLIP `model.py`), returning
 * every token after `ln_post` and `@ proj` (CAE v2 aligns all tokens, not only cls):
 *   conv1 (no bias) -> [class_embedding, patches] + positional_embedding -> ln_pre
 *   -> resblocks (x + attn(ln_1(x)); x + mlp(ln_2(x)), QuickGELU) -> ln_post (every token) -> @ proj.
 * The teacher is a constant (docs/design.md, principle 5): never differentiated, never checkpointed with the student.
 *
 * Weights: CLIP ViT-B/16 from OpenAI (`ViT-B-16.pt`, keys `visual.*`) or Hugging Face
 * `openai/clip-vit-base-patch16` (`CLIPVisionModelWithProjection`, keys `vision_model.*` and
 * `visual_projection.weight`), converted to safetensors; `loadClip` in `names.ts` reads both.
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Tensor1D, Tensor2D, Tensor3D, Tensor4D } from "../core/tree.ts";
import { type Key, seedOf, split } from "../core/random.ts";
import { attention, type AttentionParams } from "../nn/attention.ts";
import { linearInit } from "../nn/linear.ts";
import { mlp, mlpInit, type MlpParams } from "../nn/mlp.ts";
import { layerNorm, layerNormInit, type LayerNormParams } from "../nn/norm.ts";
import { patchEmbed } from "../nn/patch_embed.ts";
import { type ClipConfig, gridOf } from "./config.ts";

/** One residual attention block. */
export type ClipBlockParams = {
  /** Pre-attention LayerNorm (OpenAI `ln_1`). */
  readonly ln1: LayerNormParams;
  /** Self-attention with q, k and v biases (OpenAI `attn`). */
  readonly attn: AttentionParams;
  /** Pre-MLP LayerNorm (OpenAI `ln_2`). */
  readonly ln2: LayerNormParams;
  /** QuickGELU MLP (OpenAI `mlp.c_fc`, `mlp.c_proj`). */
  readonly mlp: MlpParams;
};

/** The CLIP vision tower's parameters. */
export type ClipParams = {
  /** `[P * P * 3, W]`: the conv patch embedding without bias, as a matrix over flattened patches. */
  readonly patchEmbed: { readonly kernel: Tensor2D };
  /** `[W]`: the class token (OpenAI `class_embedding`). */
  readonly classEmbedding: Tensor1D;
  /** `[1 + L, W]`: learned positions (OpenAI `positional_embedding`). */
  readonly positionalEmbedding: Tensor2D;
  /** LayerNorm before the blocks (OpenAI `ln_pre`). */
  readonly lnPre: LayerNormParams;
  /** Residual blocks `"0"`, `"1"`, ... (OpenAI `transformer.resblocks`). */
  readonly blocks: Readonly<Record<string, ClipBlockParams>>;
  /** LayerNorm applied to every token after the blocks (OpenAI `ln_post`). */
  readonly lnPost: LayerNormParams;
  /** `[W, out]`: the final projection (OpenAI `proj`). */
  readonly proj: Tensor2D;
};

/**
 * A randomly initialised CLIP-shaped tower, for local runs where real weights are absent (CLIP's own init:
 * normal std width^-0.5 for embeddings, xavier here for the Linears).
 */
export const clipInit = (k: Key, c: ClipConfig): ClipParams => {
  const { numPatches } = gridOf(c);
  const [kp, kc, kpos, kb, kproj] = split(k, 5);
  const s = c.width ** -0.5;
  const blocks: Record<string, ClipBlockParams> = {};
  split(kb, c.layers).forEach((bk, i) => {
    const [kq, ko, km] = split(bk, 3);
    blocks[String(i)] = {
      ln1: layerNormInit(c.width),
      attn: { qkv: linearInit(kq, c.width, 3 * c.width), proj: linearInit(ko, c.width, c.width) },
      ln2: layerNormInit(c.width),
      mlp: mlpInit(km, c.width, 4 * c.width),
    };
  });
  const seed = seedOf;
  return {
    patchEmbed: {
      kernel: tf.randomNormal([c.patchSize * c.patchSize * 3, c.width], 0, 0.02, "float32", seed(kp)),
    },
    classEmbedding: tf.randomNormal([c.width], 0, s, "float32", seed(kc)),
    positionalEmbedding: tf.randomNormal([1 + numPatches, c.width], 0, s, "float32", seed(kpos)),
    lnPre: layerNormInit(c.width),
    blocks,
    lnPost: layerNormInit(c.width),
    proj: tf.randomNormal([c.width, c.outDim], 0, s, "float32", seed(kproj)),
  };
};

/** images `[B, H, W, 3]` (CLIP-normalised) -> `[B, 1 + L, out]`, tokens in patch order, not normalised. */
export const clipApply = (p: ClipParams, c: ClipConfig, images: Tensor4D): Tensor3D =>
  tf.tidy(() => {
    const b = images.shape[0];
    const patches = patchEmbed(p.patchEmbed, images, c.patchSize); // [B, L, W]
    const cls = tf.broadcastTo(tf.reshape(p.classEmbedding, [1, 1, c.width]), [b, 1, c.width]);
    let x = tf.add(tf.concat([cls, patches], 1), p.positionalEmbedding) as Tensor3D;
    x = layerNorm(p.lnPre, x, c.eps) as Tensor3D;
    for (let i = 0; i < c.layers; i++) {
      const blk = p.blocks[String(i)];
      // One tidy per block: the teacher is never differentiated, so only the residual stream survives a
      // block (without it all 12 blocks' intermediates stay alive: ViT-B B=256 ran out of H200 memory).
      const xin = x;
      x = tf.tidy(() => {
        // Each residual add is the epilogue of the branch's last product on WebGPU (lib/nn/residual.ts).
        const h = attention(blk.attn, layerNorm(blk.ln1, xin, c.eps) as Tensor3D, c.heads, { x: xin });
        return mlp(blk.mlp, layerNorm(blk.ln2, h, c.eps), "quickGelu", { x: h }) as Tensor3D;
      });
    }
    const y = layerNorm(p.lnPost, x, c.eps);
    return tf.reshape(tf.matMul(tf.reshape(y, [-1, c.width]), p.proj), [b, -1, c.outDim]) as Tensor3D;
  });
