/**
 * Frozen features: the encoder over every patch (no mask), pooled to one vector per image.
 *
 * - `cls` (the official probe, `--use_cls`): the cls token after the encoder's final LayerNorm, exactly
 *   what CAE's `VisionTransformer.forward_features` returns with `lin_probe` and `use_mean_pooling=False`.
 * - `mean`: the average of the patch tokens (cls excluded) after the same final norm. (The official
 *   fine-tuning pools the patch tokens *before* a norm instead: see finetune.ts.)
 *
 * @module
 */
import { tf } from "../deps.ts";
import { encoder } from "../models/encoder.ts";
import type { HostEvalBatch } from "../../data/batch.ts";
import { evalLoader } from "../../data/loader.ts";
import type { DataSource } from "../../data/source.ts";
import type { FrozenEncoder } from "../models/encoder_model.ts";
import { assertFinite } from "./finite.ts";

/** How tokens become one feature vector. */
export type Pooling = "cls" | "mean";

/** `tokens: [B, 1 + L, D]` -> `[B, D]`. */
export const pool = (tokens: tf.Tensor3D, pooling: Pooling): tf.Tensor2D =>
  tf.tidy(() => {
    const [b, n, d] = tokens.shape;
    return pooling === "cls"
      ? tf.reshape(tf.slice(tokens, [0, 0, 0], [b, 1, d]), [b, d]) as tf.Tensor2D
      : tf.mean(tf.slice(tokens, [0, 1, 0], [b, n - 1, d]), 1) as tf.Tensor2D;
  });

/** `images: [B, H, W, 3]` (ImageNet-normalised) -> features `[B, D]`, inference mode (no drop path). */
export const encodeImages = (m: FrozenEncoder, images: tf.Tensor4D, pooling: Pooling): tf.Tensor2D =>
  tf.tidy(() => pool(encoder(m.params, m.config, images, m.pos, undefined, { training: false }), pooling));

/** Features of a whole split, on the host. */
export interface FeatureSet {
  /** `[N, D]`, row-major. */
  readonly features: Float32Array;
  /** `[N]`, -1 where the source has no label. */
  readonly labels: Int32Array;
  /** Images N. */
  readonly count: number;
  /** Feature width D. */
  readonly dim: number;
  /**
   * Names of the files the loader skipped (unreadable, corrupt; the first 1000) and how many samples it
   * skipped, when the set came from {@link splitFeatures}: rows.ts needs them to name each row.
   */
  readonly skipped?: { readonly names: readonly string[]; readonly count: number };
}

/** Options of {@link extractFeatures}. */
export interface ExtractOptions {
  /** How tokens become one vector. */
  readonly pooling: Pooling;
  /** Stop after this many images (the rest of the split is not read). */
  readonly limit?: number;
  /** Called after every batch with the images done so far. */
  readonly onBatch?: (done: number) => void;
  /**
   * Names the model in the error raised on non-finite features (default: the encoder's `origin` when it
   * has one, e.g. the checkpoint path; a pretraining monitor passes "the student at step N").
   */
  readonly modelName?: string;
}

/** What an error about an encoder's numbers calls it: `modelName`, else its `origin`, else "the encoder". */
export const modelNameOf = (m: FrozenEncoder, modelName?: string): string =>
  modelName ?? ("origin" in m && typeof m.origin === "string" ? m.origin : "the encoder");

/**
 * Runs the encoder over a stream of evaluation batches (data/loader.ts `evalLoader`) and gathers the
 * features and labels on the host. One readback per batch. Throws at the first batch whose features hold
 * a NaN or an infinity (a diverged model), naming the model: no score or file is made of such features.
 */
export const extractFeatures = async (
  m: FrozenEncoder,
  batches: AsyncIterable<HostEvalBatch>,
  opts: ExtractOptions,
): Promise<FeatureSet> => {
  const r = await encodeRows(m, batches, {
    who: "extractFeatures",
    limit: opts.limit,
    encode: (images) => encodeImages(m, images, opts.pooling),
    check: (data, first, last) =>
      assertFinite(data, `the features of images ${first}..${last}`, modelNameOf(m, opts.modelName)),
    onBatch: opts.onBatch,
  });
  return { features: r.rows, labels: r.labels, count: r.count, dim: m.config.dim };
};

/** What {@link encodeRows} does with each batch. */
export interface EncodeRowsOptions {
  /** The caller's name, for the size error. */
  readonly who: string;
  /** Stop after this many images (default: all). */
  readonly limit?: number;
  /** The device computation: images `[B, H, W, 3]` -> `[B, ...]` (the caller's rows). */
  readonly encode: (images: tf.Tensor4D) => tf.Tensor;
  /** Checks a batch's rows (images `first`..`last`) on the host; throws to stop. */
  readonly check?: (data: Float32Array, first: number, last: number) => void;
  /** Called after each batch with the number of images encoded so far. */
  readonly onBatch?: (count: number) => void;
}

/**
 * Runs `encode` over evaluation batches (at most `limit` images) and gathers its rows and the labels on the
 * host, in order: the loop of feature and token extraction. Refuses images of another size than the
 * encoder's.
 */
export const encodeRows = async (
  m: FrozenEncoder,
  batches: AsyncIterable<HostEvalBatch>,
  o: EncodeRowsOptions,
): Promise<{ rows: Float32Array; labels: Int32Array; count: number }> => {
  const limit = o.limit ?? Infinity;
  const parts: Float32Array[] = [];
  const labels: number[] = [];
  let count = 0;
  for await (const b of batches) {
    if (b.height !== m.config.imageSize || b.width !== m.config.imageSize) {
      throw new Error(
        `${o.who}: batch images are ${b.height}x${b.width}, the encoder expects ${m.config.imageSize}px`,
      );
    }
    const take = Math.min(b.size, limit - count);
    const images = tf.tensor4d(b.images.subarray(0, take * b.height * b.width * 3), [
      take,
      b.height,
      b.width,
      3,
    ]);
    const f = o.encode(images);
    images.dispose();
    const raw = await f.data();
    f.dispose();
    const data = raw instanceof Float32Array ? raw : Float32Array.from(raw);
    o.check?.(data, count, count + take - 1);
    parts.push(data);
    for (let i = 0; i < take; i++) labels.push(b.labels[i]);
    count += take;
    o.onBatch?.(count);
    if (count >= limit) break;
  }
  const rows = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    rows.set(p, at);
    at += p.length;
  }
  return { rows, labels: Int32Array.from(labels), count };
};

/** The number of classes a labelled feature set implies (max label + 1); throws if a label is missing. */
export const classesOf = (...sets: readonly FeatureSet[]): number => {
  let max = -1;
  for (const s of sets) {
    for (const y of s.labels) {
      if (y < 0) {
        throw new Error(
          "the data source has unlabelled images (label -1): probing and k-NN need labels (an image folder " +
            "in class sub-folders, WebDataset shards with .cls, or the synthetic source)",
        );
      }
      if (y > max) max = y;
    }
  }
  return max + 1;
};

/** Options of {@link splitFeatures}. */
export interface SplitFeatureOptions extends ExtractOptions {
  /** Images per forward pass (default 64). */
  readonly batchSize?: number;
  /** Decoding workers (default 0: inline). */
  readonly workers?: number;
}

/**
 * Features of one split of a source: the evaluation loader (resize + centre crop at the encoder's image
 * size, ImageNet normalisation) through {@link extractFeatures}; the loader is closed afterwards.
 */
export const splitFeatures = async (
  m: FrozenEncoder,
  source: DataSource,
  split: "train" | "val",
  o: SplitFeatureOptions,
): Promise<FeatureSet> => {
  const loader = evalLoader(
    { source, batchSize: o.batchSize ?? 64, imageSize: m.config.imageSize, workers: o.workers ?? 0 },
    split,
  );
  try {
    const set = await extractFeatures(m, loader, o);
    return { ...set, skipped: { names: [...loader.stats.skippedFiles], count: loader.stats.skipped } };
  } finally {
    await loader.close();
  }
};
