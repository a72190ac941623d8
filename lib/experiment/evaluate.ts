/**
 * The evaluation step of an experiment, in one adapter over lib/eval: the student encoder of a run (its
 * newest checkpoint) or a freshly initialised one, frozen; cls features (after the final norm, the
 * official `--use_cls` probe) of a bounded part of the source's training and held-out splits; then a
 * linear probe (BatchNorm without affine + Linear, LARS, warmup + half-cycle cosine: lib/eval/probe.ts)
 * and weighted k-NN (k 20, T 0.07: lib/eval/knn.ts) on the same features. Deterministic: the features, the
 * probe's init and order all derive from the run and its seed.
 *
 * @module
 */
import { E } from "../deps.ts";
import { key } from "../core/random.ts";
import type { PresetName } from "../models/presets.ts";
import type { DataSource } from "../../data/source.ts";
import { classesOf, type FeatureSet, splitFeatures } from "../eval/features.ts";
import type { EncoderModel } from "../models/encoder_model.ts";
import { disposeEncoder, loadEncoderEither } from "../eval/load.ts";
import { disposeProbe, trainProbeDefault } from "../eval/probe.ts";
import { knnClassify } from "../eval/knn.ts";
import { message } from "../core/fs.ts";

/**
 * Linear-probe settings: `deno task probe`'s default recipe (lib/eval/probe.ts `trainProbeDefault`: whitened
 * features, AdamW, the lr chosen on a held-back tenth of the training features). Unset fields take the
 * recipe's defaults (90 epochs at least, 3000 updates at least, batch 256).
 */
export interface ProbeSpec {
  /** Passes over the training features, at least. */
  readonly epochs?: number;
  /** Updates, at least (the epochs are raised to reach it). */
  readonly minSteps?: number;
  /** Features per step. */
  readonly batchSize?: number;
}

/** k-NN settings (defaults: DINO's k 20, T 0.07). */
export interface KnnSpec {
  /** Neighbours that vote (20). */
  readonly k?: number;
  /** Vote weight `exp(similarity / T)` (0.07). */
  readonly temperature?: number;
}

/** How an experiment evaluates each run. */
export interface EvalSpec {
  /** Training-split images whose features fit the probe and form the k-NN bank. */
  readonly maxTrain: number;
  /** Held-out images scored. */
  readonly maxVal: number;
  /** Images per encoder forward pass (default 100). */
  readonly batchSize?: number;
  /** Linear probe; null: skip. */
  readonly probe: ProbeSpec | null;
  /** k-NN; null: skip. */
  readonly knn: KnnSpec | null;
}

/** Accuracies in percent over `count` held-out images. */
export interface Scores {
  /** Top-1 accuracy, percent. */
  readonly top1: number;
  /** Top-5 accuracy, percent. */
  readonly top5: number;
}

/** What {@link evaluateEncoder} measured. */
export interface EvalResult {
  /** Held-out top-1/top-5 of the probe after its last epoch, and its best top-1 over epochs. */
  readonly probe: (Scores & { readonly bestTop1: number }) | null;
  /** Held-out top-1/top-5 of weighted k-NN. */
  readonly knn: Scores | null;
  /** Classes in the labels (largest label + 1). */
  readonly numClasses: number;
  /** Training images whose features were used. */
  readonly trainImages: number;
  /** Held-out images scored. */
  readonly valImages: number;
  /** Where the weights came from (checkpoint path and step, or "random init ..."). */
  readonly encoder: string;
}

/** The encoder to evaluate: a run directory (its newest checkpoint) or a random init of a preset. */
export type EncoderSource =
  | { readonly kind: "run"; readonly dir: string }
  | {
    readonly kind: "random";
    readonly model: PresetName;
    readonly imageSize: number;
    readonly patchSize: number;
    readonly seed: number;
  };

/** Probe and k-NN on features already extracted. */
export const scoreFeatures = async (
  train: FeatureSet,
  val: FeatureSet,
  spec: EvalSpec,
  seed: number,
): Promise<Pick<EvalResult, "probe" | "knn" | "numClasses">> => {
  const numClasses = classesOf(train, val);
  let probe: EvalResult["probe"] = null;
  if (spec.probe !== null) {
    const r = await trainProbeDefault(train, val, { numClasses, ...spec.probe, key: key(seed) });
    disposeProbe(r.probe);
    probe = { top1: r.accuracy.top1, top5: r.accuracy.top5, bestTop1: r.bestTop1 };
  }
  let knn: EvalResult["knn"] = null;
  if (spec.knn !== null) {
    const a = await knnClassify(train, val, { numClasses, k: spec.knn.k, temperature: spec.knn.temperature });
    knn = { top1: a.top1, top5: a.top5 };
  }
  return { probe, knn, numClasses };
};

/**
 * Evaluates a frozen encoder on `source`: features of the first `maxTrain` training and `maxVal` held-out
 * images, then the probe and k-NN of `spec`. Left: a message (no checkpoint, unlabelled data, ...).
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { evaluateEncoder } from "./evaluate.ts";
 * await tf.setBackend("cpu");
 * const r = await evaluateEncoder(
 *   { kind: "random", model: "micro", imageSize: 16, patchSize: 8, seed: 0 },
 *   { kind: "synthetic", size: 100 },
 *   { maxTrain: 20, maxVal: 10, probe: { epochs: 2, minSteps: 4, batchSize: 10 }, knn: {} },
 *   0,
 * );
 * if (r._tag === "Left" || r.right.valImages !== 10 || r.right.numClasses !== 10) throw new Error("unexpected");
 * ```
 */
export const evaluateEncoder = async (
  from: EncoderSource,
  source: DataSource,
  spec: EvalSpec,
  seed: number,
): Promise<E.Either<string, EvalResult>> => {
  const loaded = from.kind === "run" ? await loadEncoderEither(from.dir) : await loadEncoderEither("random", {
    model: from.model,
    imageSize: from.imageSize,
    patchSize: from.patchSize,
    seed: from.seed,
  });
  if (E.isLeft(loaded)) return loaded;
  const enc: EncoderModel = loaded.right;
  try {
    const common = { pooling: "cls" as const, batchSize: spec.batchSize ?? 100 };
    const train = await splitFeatures(enc, source, "train", { ...common, limit: spec.maxTrain });
    const val = await splitFeatures(enc, source, "val", { ...common, limit: spec.maxVal });
    const scores = await scoreFeatures(train, val, spec, seed);
    return E.right({ ...scores, trainImages: train.count, valImages: val.count, encoder: enc.origin });
  } catch (e) {
    return E.left(`evaluating ${enc.origin}: ${message(e)}`);
  } finally {
    disposeEncoder(enc);
  }
};
