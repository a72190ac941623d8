/**
 * Model presets, decoded from one string in one place (big_vision style). Widths, depths and heads are the
 * official CAE v2 scripts' (docs/design.md, "The method"); the teacher is CLIP ViT-B/16 (Radford et al. 2021).
 *
 * @module
 */
import type { CaeV2Config, ClipConfig } from "./config.ts";
import { type ModelName, modelNames } from "../config/names.ts";

/** Preset names (lib/config/names.ts `modelNames`). `micro` is a small local variant for CPU runs and tests (not from the paper). */
export type PresetName = ModelName;

/** Names of all presets, smallest first. */
export const presetNames: readonly PresetName[] = modelNames;

interface Shape {
  dim: number;
  depth: number;
  heads: number;
  regressorDim: number;
  regressorDepth: number;
  regressorHeads: number;
  /** Official number of masked patches on the 14x14 grid (T 30, S 49, B 98; L as B's ratio). */
  numMasked: number;
}

const shapes: Record<PresetName, Shape> = {
  micro: {
    dim: 64,
    depth: 4,
    heads: 4,
    regressorDim: 64,
    regressorDepth: 1,
    regressorHeads: 4,
    numMasked: 0,
  },
  tiny: {
    dim: 192,
    depth: 12,
    heads: 12,
    regressorDim: 96,
    regressorDepth: 1,
    regressorHeads: 12,
    numMasked: 30,
  },
  small: {
    dim: 384,
    depth: 12,
    heads: 12,
    regressorDim: 384,
    regressorDepth: 1,
    regressorHeads: 12,
    numMasked: 49,
  },
  base: {
    dim: 768,
    depth: 12,
    heads: 12,
    regressorDim: 768,
    regressorDepth: 4,
    regressorHeads: 12,
    numMasked: 98,
  },
  large: {
    dim: 1024,
    depth: 24,
    heads: 16,
    regressorDim: 1024,
    regressorDepth: 4,
    regressorHeads: 16,
    numMasked: 98,
  },
};

/** The student config of a preset at a given image and patch size. */
export const studentPreset = (
  name: PresetName,
  opts: { imageSize?: number; patchSize?: number; outDim?: number; dropPath?: number } = {},
): CaeV2Config => {
  const s = shapes[name];
  return {
    imageSize: opts.imageSize ?? 224,
    patchSize: opts.patchSize ?? 16,
    dim: s.dim,
    depth: s.depth,
    heads: s.heads,
    mlpRatio: 4,
    regressorDim: s.regressorDim,
    regressorDepth: s.regressorDepth,
    regressorHeads: s.regressorHeads,
    outDim: opts.outDim ?? 512,
    dropPath: opts.dropPath ?? 0.1,
    layerScale: 0.1,
    eps: 1e-6,
  };
};

/**
 * Masked patches for a preset: the official count on a 14x14 grid, scaled by the grid's area otherwise
 * (same ratio), at least 1. `micro` masks about half (the ratio of S, 49/196 = 25%, is the paper's for S;
 * for a tiny grid we keep ~40% so the regressor has work).
 */
export const defaultNumMasked = (name: PresetName, numPatches: number): number => {
  const ratio = name === "micro" ? 0.4 : shapes[name].numMasked / 196;
  return Math.max(1, Math.round(ratio * numPatches));
};

/** CLIP ViT-B/16 visual tower (width 768, 12 layers, 12 heads, output 512). */
export const clipB16: ClipConfig = {
  imageSize: 224,
  patchSize: 16,
  width: 768,
  layers: 12,
  heads: 12,
  outDim: 512,
  eps: 1e-5,
};

/** A small CLIP-shaped teacher for local runs where real CLIP weights are absent (randomly initialised). */
export const clipMicro = (imageSize: number, patchSize: number): ClipConfig => ({
  imageSize,
  patchSize,
  width: 128,
  layers: 2,
  heads: 4,
  outDim: 64,
  eps: 1e-5,
});
