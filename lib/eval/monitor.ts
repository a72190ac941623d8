/**
 * The k-NN signal during pretraining: features of (a bounded part of) the training and held-out splits
 * from the live student encoder, then k-NN classification (knn.ts). For `deno task pretrain
 * --knn-every N` on a labelled source, as an evaluator that the task hands to the run
 * (lib/train/evaluator.ts); it reads no tensors of the run other than the encoder's.
 *
 * @module
 */
import { E } from "../deps.ts";
import type { PretrainConfig } from "../config/pretrain.ts";
import type { Evaluator } from "../train/evaluator.ts";
import { type DataSource, parseDataSource } from "../../data/source.ts";
import type { FrozenEncoder } from "../models/encoder_model.ts";
import { classesOf, type Pooling, splitFeatures } from "./features.ts";
import { type Accuracy, accuracyFigures } from "./heads.ts";
import { knnClassify } from "./knn.ts";

/** Settings of {@link knnMonitor}. */
export interface KnnMonitorOptions {
  /** A labelled data source. */
  readonly source: DataSource;
  /** Images per forward pass (default 64). */
  readonly batchSize?: number;
  /** Training images used as the neighbour bank (default 2000). */
  readonly maxTrain?: number;
  /** Held-out images classified (default 500). */
  readonly maxVal?: number;
  /** Decoding workers (default 0: inline). */
  readonly workers?: number;
  /** Feature pooling (default cls). */
  readonly pooling?: Pooling;
  /** Neighbours (default 20). */
  readonly k?: number;
  /** Vote temperature (default 0.07). */
  readonly temperature?: number;
  /** Names the model in the error raised on non-finite features (default: "the encoder"). */
  readonly modelName?: string;
}

/**
 * k-NN top-1 / top-5 of the encoder on the source's held-out split, with the first `maxTrain` training
 * images as neighbours, and the classes it found. Rejects, saying so, when the source has no labels, and
 * when the features are not finite (a diverged encoder), naming `modelName`.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { loadEncoder } from "./load.ts";
 * import { knnMonitor } from "./monitor.ts";
 * await tf.setBackend("cpu");
 * const m = await loadEncoder("random", { imageSize: 16, patchSize: 8 });
 * const acc = await knnMonitor(m, { source: { kind: "synthetic", size: 20 }, maxTrain: 20, maxVal: 10 });
 * if (acc.count !== 2) throw new Error(`scored ${acc.count}`); // the held-out split of 20 is ceil(20 / 10)
 * ```
 */
export const knnMonitor = async (
  m: FrozenEncoder,
  o: KnnMonitorOptions,
): Promise<Accuracy & { readonly numClasses: number }> => {
  const modelName = o.modelName ?? "the encoder";
  const common = { pooling: o.pooling ?? "cls", batchSize: o.batchSize, workers: o.workers, modelName };
  const train = await splitFeatures(m, o.source, "train", { ...common, limit: o.maxTrain ?? 2000 });
  const val = await splitFeatures(m, o.source, "val", { ...common, limit: o.maxVal ?? 500 });
  const numClasses = classesOf(train, val);
  const acc = await knnClassify(train, val, { numClasses, k: o.k, temperature: o.temperature, modelName });
  return { ...acc, numClasses };
};

/**
 * The k-NN monitor as a pretraining evaluator: every `every` steps (and after the last), k-NN top-1 /
 * top-5 on up to 200 held-out images with the first 1000 training images as neighbours, logged to
 * `knn.jsonl` as `{"step", "top1", "top5", "count"}` and shown as `knn at step t: top1=.. top5=..` (with
 * fewer than 6 classes top-5 is left out: heads.ts `accuracyFigures`). A student whose features are not
 * finite (the run diverged) stops the run with an error naming the step, instead of logging a perfect
 * score.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { randomEncoder } from "./load.ts";
 * import { studentPreset } from "../models/presets.ts";
 * import { key } from "../core/random.ts";
 * import { knnEvaluator } from "./monitor.ts";
 * await tf.setBackend("cpu");
 * const m = randomEncoder(studentPreset("micro", { imageSize: 16, patchSize: 8 }), key(0));
 * const knn = knnEvaluator({ kind: "synthetic", size: 20 }, 5);
 * const r = await knn.run({ step: 5, steps: 10, encoder: m });
 * if (knn.name !== "knn" || r.count !== 2) throw new Error(JSON.stringify(r));
 * ```
 */
export const knnEvaluator = (source: DataSource, every: number): Evaluator => ({
  name: "knn",
  every,
  run: async ({ step, encoder }) => {
    const acc = await knnMonitor(encoder, {
      source,
      maxTrain: 1000,
      maxVal: 200,
      modelName: `the student encoder at step ${step} of this run (--knn-every)`,
    });
    return { ...accuracyFigures(acc, acc.numClasses), count: acc.count };
  },
  describe: (step, r) => {
    const { count, ...figures } = r;
    const line = Object.entries(figures).map(([k, v]) => `${k}=${v.toFixed(2)}`).join(" ");
    return `knn at step ${step}: ${line} (${count} held-out images)`;
  },
});

/**
 * The evaluators a pretraining config asks for: {@link knnEvaluator} on its `--data` with `--knn-every N`,
 * none without. A `--data` that does not parse gives none (the run itself reports it).
 *
 * @example
 * ```ts
 * import { pretrainEvaluators } from "./monitor.ts";
 * const [knn] = pretrainEvaluators({ data: "synthetic:40", knnEvery: 5 });
 * if (knn?.every !== 5 || pretrainEvaluators({ data: "synthetic:40" }).length !== 0) throw new Error();
 * ```
 */
export const pretrainEvaluators = (cfg: Pick<PretrainConfig, "data" | "knnEvery">): Evaluator[] => {
  if (cfg.knnEvery === undefined) return [];
  const source = parseDataSource(cfg.data);
  return E.isLeft(source) ? [] : [knnEvaluator(source.right, cfg.knnEvery)];
};
