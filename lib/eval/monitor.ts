/**
 * The k-NN signal during pretraining: features of (a bounded part of) the training and held-out splits
 * from the live student encoder, then k-NN classification (knn.ts). For `deno task pretrain
 * --knn-every N` on a labelled source; it reads no tensors of the run other than the encoder's.
 *
 * @module
 */
import type { DataSource } from "../../data/source.ts";
import type { FrozenEncoder } from "../models/encoder_model.ts";
import { classesOf, type Pooling, splitFeatures } from "./features.ts";
import type { Accuracy } from "./heads.ts";
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
}

/**
 * k-NN top-1 / top-5 of the encoder on the source's held-out split, with the first `maxTrain` training
 * images as neighbours. Rejects, saying so, when the source has no labels.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { loadEncoder } from "./load.ts";
 * import { knnMonitor } from "./monitor.ts";
 * await tf.setBackend("cpu");
 * const m = await loadEncoder("random", { imageSize: 16, patchSize: 8 });
 * if (m._tag === "Left") throw new Error(m.left);
 * const acc = await knnMonitor(m.right, { source: { kind: "synthetic", size: 20 }, maxTrain: 20, maxVal: 10 });
 * if (acc.count !== 2) throw new Error(`scored ${acc.count}`); // the held-out split of 20 is ceil(20 / 10)
 * ```
 */
export const knnMonitor = async (m: FrozenEncoder, o: KnnMonitorOptions): Promise<Accuracy> => {
  const common = { pooling: o.pooling ?? "cls", batchSize: o.batchSize, workers: o.workers };
  const train = await splitFeatures(m, o.source, "train", { ...common, limit: o.maxTrain ?? 2000 });
  const val = await splitFeatures(m, o.source, "val", { ...common, limit: o.maxVal ?? 500 });
  return knnClassify(train, val, { numClasses: classesOf(train, val), k: o.k, temperature: o.temperature });
};
