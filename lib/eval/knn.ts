/**
 * Weighted k-nearest-neighbour classification on frozen features, the quick signal of self-supervised
 * training (Wu et al. 2018; DINO's `eval_knn.py`, whose defaults are used): features L2-normalised,
 * cosine similarity, the k = 20 most similar training images each vote for their class with weight
 * `exp(similarity / T)`, T = 0.07; the class with the most weight wins. No training, one pass.
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { FeatureSet } from "./features.ts";
import { assertFinite } from "./finite.ts";
import { type Accuracy, accuracyOf, countTopK, secondTopK } from "./heads.ts";

/** k-NN settings (DINO's defaults). */
export interface KnnOptions {
  /** Classes (labels are 0..numClasses-1). */
  readonly numClasses: number;
  /** Neighbours (20). */
  readonly k?: number;
  /** Softmax temperature of the votes (0.07). */
  readonly temperature?: number;
  /** Test images per similarity matrix (bounds memory: chunk x N floats). */
  readonly chunk?: number;
  /** Names the model in the error raised on non-finite features (a checkpoint path; default "the encoder"). */
  readonly modelName?: string;
}

const l2Rows = (x: tf.Tensor2D): tf.Tensor2D =>
  tf.tidy(() => tf.div(x, tf.maximum(tf.norm(x, "euclidean", 1, true), 1e-12)) as tf.Tensor2D);

/**
 * Classifies every row of `test` by its neighbours in `train`; returns top-1 / top-5 in percent (top-k
 * with k = `secondTopK(numClasses)`: fewer than 6 classes make it top-(C-1)). Features that hold a NaN or
 * an infinity stop it with an error naming `modelName`: their similarities are NaN, and no neighbour vote
 * means anything then.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { knnClassify } from "./knn.ts";
 * await tf.setBackend("cpu");
 * const train = { features: Float32Array.from([1, 0, 0.9, 0.1, 0, 1, 0.1, 0.9]),
 *   labels: Int32Array.from([0, 0, 1, 1]), count: 4, dim: 2 };
 * const test = { features: Float32Array.from([1, 0.05, 0.05, 1]), labels: Int32Array.from([0, 1]), count: 2, dim: 2 };
 * const acc = await knnClassify(train, test, { numClasses: 2, k: 2 });
 * if (acc.top1 !== 100) throw new Error(`top1 ${acc.top1}`);
 * ```
 */
export const knnClassify = async (train: FeatureSet, test: FeatureSet, o: KnnOptions): Promise<Accuracy> => {
  if (train.dim !== test.dim) {
    throw new Error(`knnClassify: train features are ${train.dim}-d, test ${test.dim}-d`);
  }
  if (train.count === 0) throw new Error("knnClassify: no training features");
  const modelName = o.modelName ?? "the encoder";
  assertFinite(train.features, "the k-NN training features", modelName);
  assertFinite(test.features, "the k-NN held-out features", modelName);
  const k = Math.min(o.k ?? 20, train.count);
  const temperature = o.temperature ?? 0.07;
  const chunk = o.chunk ?? Math.max(1, Math.min(1024, Math.floor(2 ** 24 / train.count)));
  const C = o.numClasses;
  const bank = tf.tidy(() => tf.transpose(l2Rows(tf.tensor2d(train.features, [train.count, train.dim]))));
  let h1 = 0, h5 = 0;
  try {
    for (let at = 0; at < test.count; at += chunk) {
      const n = Math.min(chunk, test.count - at);
      const { values, indices } = tf.tidy(() => {
        const q = l2Rows(
          tf.tensor2d(test.features.subarray(at * test.dim, (at + n) * test.dim), [n, test.dim]),
        );
        return tf.topk(tf.matMul(q, bank), k, true);
      });
      const [sims, idx] = await Promise.all([values.data(), indices.data()]);
      tf.dispose([values, indices]);
      // Votes: [n, C], each neighbour adds exp(sim / T) to its class (DINO's one-hot scatter and sum).
      const votes = new Float64Array(n * C);
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < k; j++) {
          const y = train.labels[idx[i * k + j]];
          if (y >= 0) votes[i * C + y] += Math.exp(sims[i * k + j] / temperature);
        }
      }
      // Finite features give similarities in [-1, 1]; only a temperature so small that exp(1 / T)
      // overflows a double can make a vote infinite, and then the ranking would be meaningless.
      if (votes.some((v) => !Number.isFinite(v))) {
        throw new Error(
          `k-NN: a neighbour's vote exp(similarity / ${temperature}) overflows; use a larger --temperature ` +
            "(DINO's 0.07)",
        );
      }
      const y = test.labels.subarray(at, at + n);
      h1 += countTopK(votes, y, C, 1);
      h5 += countTopK(votes, y, C, secondTopK(C));
    }
  } finally {
    bank.dispose();
  }
  return accuracyOf(h1, h5, test.count);
};
