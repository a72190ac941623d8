/**
 * Linear probing with the official recipe (CAE `tools/run_linear.py`, from MAE `main_linprobe.py`):
 * frozen features -> `BatchNorm1d(D, affine=False, eps=1e-6)` -> Linear (weight N(0, 0.01^2), bias 0),
 * cross-entropy, LARS (momentum 0.9, trust coefficient 0.001, weight decay 0) with
 * `lr = blr * batch / 256` (blr 0.1), a linear warmup of 10 epochs and a half-cycle cosine to 0 over 90
 * epochs, updated every iteration at the fractional epoch; `drop_last` batches of a fresh permutation
 * each epoch. Reports top-1 and top-5 on the held-out split after every epoch, as the official loop does.
 *
 * One difference, for speed: the features are computed once from the evaluation transform (resize +
 * centre crop) and reused every epoch, where the official loop re-encodes RandomResizedCrop + flip views
 * each epoch. With a frozen encoder this only removes augmentation from the probe's training data.
 *
 * Features, held-out logits and training losses that hold a NaN or an infinity stop the probe with an
 * error naming the model (finite.ts): a NaN logit would otherwise be counted as a hit or a miss at random.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { foldIn, type Key, permutation, split } from "../core/random.ts";
import { disposeTree } from "../core/tree.ts";
import { linear, type LinearParams } from "../nn/linear.ts";
import { applyUpdates } from "../optim/apply.ts";
import { lars } from "../optim/lars.ts";
import { disposeState } from "../optim/transform.ts";
import { valueAndGrad } from "../core/autodiff.ts";
import {
  batchNormEval,
  batchNormInit,
  type BatchNormState,
  batchNormTrain,
  disposeBatchNorm,
} from "../nn/batchnorm.ts";
import type { FeatureSet } from "./features.ts";
import { assertFinite } from "./finite.ts";
import {
  type Accuracy,
  accuracyOf,
  countTopK,
  linearHeadInit,
  smoothTargets,
  softCrossEntropy,
} from "./heads.ts";
import { halfCycleCosine } from "../optim/schedule.ts";

/** Probe settings; defaults are the official ones except the batch size (official: 8 GPUs x 1024). */
export interface ProbeOptions {
  /** Classes of the head. */
  readonly numClasses: number;
  /** Official 90. */
  readonly epochs?: number;
  /** Official 1024 per GPU x 8 (2048 x 8 for ViT-T); default 256 here (clamped to the training set). */
  readonly batchSize?: number;
  /** Base lr: `lr = blr * batch / 256` (official 0.1). */
  readonly blr?: number;
  /** Absolute lr; wins over `blr`. */
  readonly lr?: number;
  /** Official 10. */
  readonly warmupEpochs?: number;
  /** Official 0. */
  readonly minLr?: number;
  /** Official 0 (MoCo v1's choice for linear probing). */
  readonly weightDecay?: number;
  /** Seed of the head's init and the epoch permutations. */
  readonly key: Key;
  /** Names the model in the error raised on non-finite numbers (a checkpoint path; default "the encoder"). */
  readonly modelName?: string;
  /** Called after every epoch with the loss of its last batch and the held-out accuracy. */
  readonly onEpoch?: (e: { epoch: number; loss: number; lr: number; accuracy: Accuracy }) => void;
}

/** The fitted probe: BatchNorm statistics and the head. The caller disposes them with {@link disposeProbe}. */
export interface Probe {
  /** BatchNorm running statistics. */
  readonly bn: BatchNormState;
  /** The Linear head `[D] -> [C]`. */
  readonly head: LinearParams;
}

/** What {@link trainProbe} returns. */
export interface ProbeResult {
  /** The fitted probe. */
  readonly probe: Probe;
  /** Held-out accuracy after the last epoch (the official script's last-epoch figure). */
  readonly accuracy: Accuracy;
  /** The best held-out top-1 over epochs (the official "Max accuracy"). */
  readonly bestTop1: number;
  /** The absolute lr used. */
  readonly lr: number;
  /** The batch used (clamped to the training set). */
  readonly batchSize: number;
  /** Optimizer steps per epoch (incomplete batches dropped). */
  readonly stepsPerEpoch: number;
}

/** Disposes a probe's tensors. */
export const disposeProbe = (p: Probe): void => {
  disposeBatchNorm(p.bn);
  disposeTree(p.head);
};

const rows = (s: FeatureSet, idx: ArrayLike<number>, from: number, n: number): Float32Array => {
  const out = new Float32Array(n * s.dim);
  for (let i = 0; i < n; i++) {
    const r = idx[from + i];
    out.set(s.features.subarray(r * s.dim, (r + 1) * s.dim), i * s.dim);
  }
  return out;
};

/** Scores a probe on a feature set: BatchNorm with running statistics, then the head. */
export const evaluateProbe = async (
  p: Probe,
  s: FeatureSet,
  numClasses: number,
  chunk = 1024,
  modelName = "the encoder",
): Promise<Accuracy> => {
  let h1 = 0, h5 = 0;
  for (let at = 0; at < s.count; at += chunk) {
    const n = Math.min(chunk, s.count - at);
    const logits = tf.tidy(() => {
      const x = tf.tensor2d(s.features.subarray(at * s.dim, (at + n) * s.dim), [n, s.dim]);
      return linear(p.head, batchNormEval(x, p.bn));
    });
    const z = await logits.data();
    logits.dispose();
    assertFinite(z, `the probe's held-out logits of images ${at}..${at + n - 1}`, modelName);
    const y = s.labels.subarray(at, at + n);
    h1 += countTopK(z, y, numClasses, 1);
    h5 += countTopK(z, y, numClasses, Math.min(5, numClasses));
  }
  return accuracyOf(h1, h5, s.count);
};

/**
 * Trains BatchNorm + Linear on `train` and scores it on `val` after every epoch.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { key } from "../core/random.ts";
 * import { disposeProbe, trainProbe } from "./probe.ts";
 * await tf.setBackend("cpu");
 * // Two separable classes in 2-D.
 * const set = { features: Float32Array.from([1, 0, 0, 1, 1.1, 0, 0, 1.2]), labels: Int32Array.from([0, 1, 0, 1]),
 *   count: 4, dim: 2 };
 * const r = await trainProbe(set, set, { numClasses: 2, epochs: 30, batchSize: 4, lr: 1, warmupEpochs: 0, key: key(0) });
 * if (r.accuracy.top1 !== 100) throw new Error(`top1 ${r.accuracy.top1}`);
 * disposeProbe(r.probe);
 * ```
 */
export const trainProbe = async (
  train: FeatureSet,
  val: FeatureSet,
  o: ProbeOptions,
): Promise<ProbeResult> => {
  const epochs = o.epochs ?? 90;
  if (train.count < 2) throw new Error(`trainProbe: needs at least 2 training samples, got ${train.count}`);
  const modelName = o.modelName ?? "the encoder";
  assertFinite(train.features, "the training features", modelName);
  assertFinite(val.features, "the held-out features", modelName);
  const batchSize = Math.min(o.batchSize ?? 256, train.count);
  const lr = o.lr ?? (o.blr ?? 0.1) * batchSize / 256;
  const stepsPerEpoch = Math.floor(train.count / batchSize); // drop_last=True
  const warmupEpochs = Math.min(o.warmupEpochs ?? 10, epochs);
  const schedule = halfCycleCosine({
    lr,
    minLr: o.minLr ?? 0,
    epochs,
    warmupEpochs,
    itersPerEpoch: stepsPerEpoch,
  });
  const [kHead, kData] = split(o.key);
  const opt = lars({ lr: schedule, weightDecay: o.weightDecay ?? 0 });
  let head: LinearParams = linearHeadInit(kHead, train.dim, o.numClasses, 0.01);
  let bn = batchNormInit(train.dim);
  let state = opt.init(head);
  let accuracy = accuracyOf(0, 0, 0), bestTop1 = 0;
  try {
    for (let epoch = 0; epoch < epochs; epoch++) {
      const order = permutation(foldIn(kData, epoch), train.count);
      let loss = NaN;
      for (let s = 0; s < stepsPerEpoch; s++) {
        const x = tf.tensor2d(rows(train, order, s * batchSize, batchSize), [batchSize, train.dim]);
        const labels = Int32Array.from(
          { length: batchSize },
          (_, i) => train.labels[order[s * batchSize + i]],
        );
        const targets = tf.tensor2d(smoothTargets(labels, o.numClasses), [batchSize, o.numClasses]);
        const normed = batchNormTrain(x, bn);
        disposeBatchNorm(bn);
        bn = normed.state;
        const out = valueAndGrad((p: LinearParams) => ({
          loss: softCrossEntropy(linear(p, normed.y) as tf.Tensor2D, targets),
          aux: {},
        }))(head);
        const [updates, next] = opt.update(out.grads, state, head);
        const stepped = applyUpdates(head, updates);
        disposeTree(head, out.grads, updates);
        disposeState(state);
        head = stepped;
        state = next;
        if (s === stepsPerEpoch - 1) loss = (await out.loss.data())[0];
        tf.dispose([x, targets, normed.y, out.loss]);
      }
      // One readback an epoch: a head that went NaN stays NaN, so the last batch's loss shows it.
      assertFinite([loss], `the probe's training loss at epoch ${epoch + 1}`, modelName);
      accuracy = await evaluateProbe({ bn, head }, val, o.numClasses, 1024, modelName);
      bestTop1 = Math.max(bestTop1, accuracy.top1);
      o.onEpoch?.({ epoch, loss, lr: schedule(Math.max(0, (epoch + 1) * stepsPerEpoch - 1)), accuracy });
    }
  } catch (e) {
    disposeTree(head);
    disposeBatchNorm(bn);
    throw e;
  } finally {
    disposeState(state);
  }
  return { probe: { bn, head }, accuracy, bestTop1, lr, batchSize, stepsPerEpoch };
};
