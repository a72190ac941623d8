/**
 * Shapes of the CAE v2 student and the CLIP teacher.
 *
 * @module
 */

/** The student: ViT encoder, latent contextual regressor and alignment head. */
export interface CaeV2Config {
  /** Input side in pixels (square images; 224 in the paper). */
  readonly imageSize: number;
  /** Patch side in pixels (16 in the paper); divides `imageSize`. */
  readonly patchSize: number;
  /** Encoder width D. */
  readonly dim: number;
  /** Encoder blocks (12 for ViT-T/S/B). */
  readonly depth: number;
  /** Attention heads of the encoder. */
  readonly heads: number;
  /** MLP hidden width over D (4). */
  readonly mlpRatio: number;
  /** Regressor width R; a Linear + LayerNorm maps D -> R when they differ. */
  readonly regressorDim: number;
  /** Cross-attention blocks of the latent contextual regressor (1 for T/S, 4 for B). */
  readonly regressorDepth: number;
  /** Attention heads of the regressor. */
  readonly regressorHeads: number;
  /** Teacher output width (512 for CLIP ViT-B/16). */
  readonly outDim: number;
  /** Stochastic depth, rising linearly over the blocks (official `drop_path_rate`). */
  readonly dropPath: number;
  /** Layer-scale init (`init_values`, 0.1 in the official CAE v2 scripts). */
  readonly layerScale: number;
  /** LayerNorm epsilon of the student (official `partial(nn.LayerNorm, eps=1e-6)`). */
  readonly eps: number;
}

/** The teacher: OpenAI CLIP vision tower. */
export interface ClipConfig {
  /** Input side in pixels (224 for ViT-B/16). */
  readonly imageSize: number;
  /** Patch side in pixels (16). */
  readonly patchSize: number;
  /** Transformer width (768). */
  readonly width: number;
  /** Residual blocks (12). */
  readonly layers: number;
  /** Attention heads (12). */
  readonly heads: number;
  /** Width after the final projection `proj` (512): the alignment targets' width. */
  readonly outDim: number;
  /** `nn.LayerNorm` default, 1e-5. */
  readonly eps: number;
}

/** Patches per side and in total. */
export const gridOf = (c: { imageSize: number; patchSize: number }) => {
  const side = c.imageSize / c.patchSize;
  if (!Number.isInteger(side)) {
    throw new Error(`image size ${c.imageSize} is not a multiple of the patch size ${c.patchSize}`);
  }
  return { side, numPatches: side * side };
};
