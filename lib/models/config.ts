/**
 * Shapes of the CAE v2 student and the CLIP teacher.
 *
 * @module
 */

/** The student: ViT encoder, latent contextual regressor and alignment head. */
export interface CaeV2Config {
  readonly imageSize: number;
  readonly patchSize: number;
  /** Encoder width D. */
  readonly dim: number;
  readonly depth: number;
  readonly heads: number;
  readonly mlpRatio: number;
  /** Regressor width R; a Linear + LayerNorm maps D -> R when they differ. */
  readonly regressorDim: number;
  readonly regressorDepth: number;
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
  readonly imageSize: number;
  readonly patchSize: number;
  readonly width: number;
  readonly layers: number;
  readonly heads: number;
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
