/**
 * Frozen token features: every token the encoder outputs (cls and patches, after its final LayerNorm),
 * one `[1 + L, D]` block per image, for the probes that pool with something learned (the attentive probe,
 * attentive.ts). The pooled features of features.ts are a function of these (cls: token 0; mean: the
 * average of tokens 1..L), so both come from the same forward pass of the encoder.
 *
 * The whole split lives on the host: `N (1 + L) D` floats, 166 MB for 10,000 images of the micro encoder
 * at 64 px (65 tokens of 64), 59 GB for ImageNet's train split at ViT-B/16. {@link splitTokens} refuses
 * a split above `maxBytes` before encoding anything, naming the size and `--max-train`.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { encoder } from "../models/encoder.ts";
import type { HostEvalBatch } from "../../data/batch.ts";
import { evalLoader } from "../../data/loader.ts";
import type { DataSource } from "../../data/source.ts";
import type { FrozenEncoder } from "../models/encoder_model.ts";
import { gridOf } from "../models/config.ts";
import { encodeRows } from "./features.ts";

/** Token features of a whole split, on the host. */
export interface TokenSet {
  /** `[N, T, D]`, row-major. */
  readonly tokens: Float32Array;
  /** `[N]`, -1 where the source has no label. */
  readonly labels: Int32Array;
  /** Images N. */
  readonly count: number;
  /** Tokens per image T (1 + patches; token 0 is cls). */
  readonly length: number;
  /** Token width D. */
  readonly dim: number;
}

/** `images: [B, H, W, 3]` -> every output token `[B, 1 + L, D]`, inference mode (no drop path). */
export const encodeTokens = (m: FrozenEncoder, images: tf.Tensor4D): tf.Tensor3D =>
  encoder(m.params, m.config, images, m.pos, undefined, { training: false }) as tf.Tensor3D;

/** Options of {@link extractTokens}. */
export interface TokenOptions {
  /** Stop after this many images. */
  readonly limit?: number;
}

/** Runs the encoder over evaluation batches and gathers every token and label on the host. */
export const extractTokens = async (
  m: FrozenEncoder,
  batches: AsyncIterable<HostEvalBatch>,
  opts: TokenOptions = {},
): Promise<TokenSet> => {
  const r = await encodeRows(m, batches, {
    who: "extractTokens",
    limit: opts.limit,
    encode: (images) => encodeTokens(m, images),
  });
  return { tokens: r.rows, labels: r.labels, count: r.count, length: m.pos.shape[1], dim: m.config.dim };
};

/** Host bytes of the tokens of `images` images for encoder `m`. */
export const tokenBytes = (m: FrozenEncoder, images: number): number => {
  const { side } = gridOf(m.config);
  return images * (1 + side * side) * m.config.dim * 4;
};

/** Options of {@link splitTokens}. */
export interface SplitTokenOptions extends TokenOptions {
  /** Images per forward pass (default 64). */
  readonly batchSize?: number;
  /** Decoding workers (default 0). */
  readonly workers?: number;
  /** Refuse a split whose tokens exceed this many bytes (default 4 GiB). */
  readonly maxBytes?: number;
}

/**
 * Tokens of one split of a source through the evaluation loader (resize + centre crop, ImageNet
 * normalisation), as features.ts `splitFeatures` reads pooled features.
 */
export const splitTokens = async (
  m: FrozenEncoder,
  source: DataSource,
  split: "train" | "val",
  o: SplitTokenOptions = {},
): Promise<TokenSet> => {
  const maxBytes = o.maxBytes ?? 4 * 2 ** 30;
  const images = o.limit ?? Infinity;
  if (Number.isFinite(images) && tokenBytes(m, images) > maxBytes) {
    throw new Error(
      `the ${split} split's tokens would take ${(tokenBytes(m, images) / 2 ** 30).toFixed(1)} GiB on the ` +
        `host (${images} images x ${tokenBytes(m, 1)} bytes), above ${
          (maxBytes / 2 ** 30).toFixed(1)
        } GiB: ` +
        `pass --max-train / --max-val`,
    );
  }
  const loader = evalLoader(
    { source, batchSize: o.batchSize ?? 64, imageSize: m.config.imageSize, workers: o.workers ?? 0 },
    split,
  );
  try {
    // Without a known size the limit is checked as the tokens arrive.
    const cap = Math.floor(maxBytes / tokenBytes(m, 1));
    const set = await extractTokens(m, loader, { limit: Math.min(o.limit ?? Infinity, cap + 1) });
    if (set.count > cap) {
      throw new Error(
        `the ${split} split's tokens take more than ${(maxBytes / 2 ** 30).toFixed(1)} GiB on the host ` +
          `(${tokenBytes(m, 1)} bytes an image): pass --max-train / --max-val`,
      );
    }
    return set;
  } finally {
    await loader.close();
  }
};

/** The pooled features of a token set (cls: token 0; mean: tokens 1..T-1), as features.ts computes them. */
export const poolTokens = (
  s: TokenSet,
  pooling: "cls" | "mean",
): { features: Float32Array; labels: Int32Array; count: number; dim: number } => {
  const { count, length: t, dim: d } = s;
  const out = new Float32Array(count * d);
  for (let i = 0; i < count; i++) {
    const base = i * t * d;
    if (pooling === "cls") out.set(s.tokens.subarray(base, base + d), i * d);
    else {
      const acc = new Float64Array(d);
      for (let k = 1; k < t; k++) {
        for (let j = 0; j < d; j++) acc[j] += s.tokens[base + k * d + j];
      }
      for (let j = 0; j < d; j++) out[i * d + j] = acc[j] / (t - 1);
    }
  }
  return { features: out, labels: s.labels, count, dim: d };
};
