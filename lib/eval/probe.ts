/**
 * Linear probing of frozen features, two recipes.
 *
 * `official` ({@link trainProbe}): CAE `tools/run_linear.py` (from MAE `main_linprobe.py`): features ->
 * `BatchNorm1d(D, affine=False, eps=1e-6)` -> Linear (weight N(0, 0.01^2), bias 0), cross-entropy, LARS
 * (momentum 0.9, trust coefficient 0.001, weight decay 0) with `lr = blr * batch / 256` (blr 0.1), a linear
 * warmup of 10 epochs and a half-cycle cosine to 0 over 90 epochs, updated every iteration at the
 * fractional epoch; `drop_last` batches of a fresh permutation each epoch. Reports top-1 and top-5 on the
 * held-out split after every epoch, as the official loop does.
 *
 * `default` ({@link trainProbeDefault}): the same head on the same features, fitted so that it converges on
 * any data size. LARS moves a weight matrix by about `lr x 0.001 x 10 x ||W||` a step, so the official lr
 * needs ImageNet's 14,000 steps; on 10,000 images (39 steps an epoch) it leaves the head near its init
 * (docs/evaluation.md). The default whitens the features with the training split's exact mean and
 * covariance (float64, on the host), then trains the head with AdamW, whose step does not depend on the
 * scale of the features or of the weights, for at least `minSteps` updates, at the lr that does best on a
 * held-back tenth of the training split.
 *
 * One difference from the official loop, in both recipes, for speed: the features are computed once from
 * the evaluation transform (resize + centre crop) and reused every epoch, where the official loop
 * re-encodes RandomResizedCrop + flip views each epoch. With a frozen encoder this only removes
 * augmentation from the probe's training data.
 *
 * Features, held-out logits and training losses that hold a NaN or an infinity stop the probe with an
 * error naming the model (finite.ts): a NaN logit would otherwise be counted as a hit or a miss at random.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { foldIn, type Key, permutation, split } from "../core/random.ts";
import { disposeTree, type Tensor2D } from "../core/tree.ts";
import { linear, type LinearParams } from "../nn/linear.ts";
import { applyGradients, disposeTrainState, initTrainState, type TrainState } from "../optim/train_state.ts";
import { lars } from "../optim/lars.ts";
import { fusedAdamw } from "../optim/fused_adamw.ts";
import { disposeState, type GradientTransformation } from "../optim/transform.ts";
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
  type FitSummary,
  linearHeadInit,
  secondTopK,
  smoothTargets,
  softCrossEntropy,
} from "./heads.ts";
import { halfCycleCosine } from "../optim/schedule.ts";

/** The two recipes of `deno task probe --recipe`. */
export type ProbeRecipe = "default" | "official";

/** What both recipes report after every epoch. */
export interface EpochReport {
  /** 0-based epoch. */
  readonly epoch: number;
  /** Epochs in all. */
  readonly epochs: number;
  /** Loss of the epoch's last batch. */
  readonly loss: number;
  /** The lr of the epoch's last update. */
  readonly lr: number;
  /** Held-out accuracy after the epoch. */
  readonly accuracy: Accuracy;
}

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
  readonly onEpoch?: (
    e: { epoch: number; epochs: number; loss: number; lr: number; accuracy: Accuracy },
  ) => void;
}

/** The fitted probe: BatchNorm statistics and the head. The caller disposes them with {@link disposeProbe}. */
export interface Probe {
  /** BatchNorm running statistics (the default recipe: the training split's exact mean and variance). */
  readonly bn: BatchNormState;
  /** The Linear head `[D] -> [C]`. */
  readonly head: LinearParams;
  /**
   * The default recipe's whitening `[D, D]`: present, the features are normalised as
   * `(x - bn.mean) whiten` instead of BatchNorm's `(x - mean) / sqrt(variance + eps)`.
   */
  readonly whiten?: Tensor2D;
}

/** What {@link trainProbe} and {@link trainProbeDefault} return. */
export interface ProbeResult extends FitSummary {
  /** The fitted probe. */
  readonly probe: Probe;
}

/** Disposes a probe's tensors. */
export const disposeProbe = (p: Probe): void => {
  disposeBatchNorm(p.bn);
  disposeTree(p.head);
  p.whiten?.dispose();
};

/** The probe's evaluation-mode normalisation of features `[N, D]`: whitening or BatchNorm. */
const normaliseEval = (p: Pick<Probe, "bn" | "whiten">, x: tf.Tensor2D): tf.Tensor2D =>
  p.whiten === undefined
    ? batchNormEval(x, p.bn)
    : tf.tidy(() => tf.matMul(tf.sub(x, p.bn.mean), p.whiten!) as tf.Tensor2D);

const rows = (s: FeatureSet, idx: ArrayLike<number>, from: number, n: number): Float32Array => {
  const out = new Float32Array(n * s.dim);
  for (let i = 0; i < n; i++) {
    const r = idx[from + i];
    out.set(s.features.subarray(r * s.dim, (r + 1) * s.dim), i * s.dim);
  }
  return out;
};

const modelOf = (o: { readonly modelName?: string }): string => o.modelName ?? "the encoder";

/** Scores a probe on a feature set: its normalisation (BatchNorm's running statistics, or whitening), the head. */
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
      return linear(p.head, normaliseEval(p, x));
    });
    const z = await logits.data();
    logits.dispose();
    assertFinite(z, `the probe's held-out logits of images ${at}..${at + n - 1}`, modelName);
    const y = s.labels.subarray(at, at + n);
    h1 += countTopK(z, y, numClasses, 1);
    h5 += countTopK(z, y, numClasses, secondTopK(numClasses));
  }
  return accuracyOf(h1, h5, s.count);
};

/** What {@link fitHeads} needs to know about a recipe. */
interface HeadLoop {
  readonly train: FeatureSet;
  readonly numClasses: number;
  readonly epochs: number;
  readonly batchSize: number;
  readonly stepsPerEpoch: number;
  readonly key: Key;
  /** One optimizer per head: the heads share every batch and differ only in how they are updated. */
  readonly opts: readonly GradientTransformation<unknown>[];
  /** Training-mode normalisation of a batch: the normalised batch and the new statistics (null: none). */
  readonly normalise: (
    x: tf.Tensor2D,
    bn: BatchNormState,
  ) => { y: tf.Tensor2D; state: BatchNormState | null };
  readonly bn: BatchNormState;
  readonly modelName: string;
  /** After every epoch, with the heads, the statistics and the loss of the last batch of each head. */
  readonly afterEpoch?: (
    epoch: number,
    heads: readonly LinearParams[],
    bn: BatchNormState,
    losses: readonly number[],
  ) => Promise<void>;
}

/**
 * The loop both recipes share: epochs of permuted `drop_last` batches. Several heads (the default
 * recipe's lr search) see the same batches: the loss is the sum of theirs, whose gradient with respect
 * to one head is that head's own. Every head starts from the same draw.
 */
const fitHeads = async (o: HeadLoop): Promise<{ heads: LinearParams[]; bn: BatchNormState }> => {
  const { train, numClasses, batchSize } = o;
  const [kHead, kData] = split(o.key);
  // One training state per head; they step together on every batch.
  let heads: TrainState<LinearParams, unknown>[] = o.opts.map((opt) =>
    initTrainState(opt, linearHeadInit(kHead, train.dim, numClasses, 0.01), kData)
  );
  let bn = o.bn;
  try {
    for (let epoch = 0; epoch < o.epochs; epoch++) {
      const order = permutation(foldIn(kData, epoch), train.count);
      let losses: number[] = [];
      for (let s = 0; s < o.stepsPerEpoch; s++) {
        const x = tf.tensor2d(rows(train, order, s * batchSize, batchSize), [batchSize, train.dim]);
        const labels = Int32Array.from(
          { length: batchSize },
          (_, i) => train.labels[order[s * batchSize + i]],
        );
        const targets = tf.tensor2d(smoothTargets(labels, numClasses), [batchSize, numClasses]);
        const normed = o.normalise(x, bn);
        if (normed.state !== null) {
          disposeBatchNorm(bn);
          bn = normed.state;
        }
        const out = valueAndGrad((p: Record<string, LinearParams>) => {
          const each = heads.map((_, k) => softCrossEntropy(linear(p[k], normed.y) as tf.Tensor2D, targets));
          return {
            loss: (each.length === 1 ? each[0] : tf.addN(each)) as tf.Scalar,
            aux: { each: tf.stack(each) },
          };
        })(Object.fromEntries(heads.map((h, k) => [k, h.params])));
        heads = heads.map((h, k) => {
          const next = applyGradients(o.opts[k], h, out.grads[k]);
          disposeTrainState(h);
          return next;
        });
        // One readback an epoch: a head that went NaN stays NaN, so the last batch's loss shows it.
        if (s === o.stepsPerEpoch - 1) losses = Array.from(await out.aux.each.data());
        tf.dispose([x, targets, out.loss, out.aux.each]);
        if (normed.y !== x) normed.y.dispose();
      }
      await o.afterEpoch?.(epoch, heads.map((h) => h.params), bn, losses);
    }
  } catch (e) {
    heads.forEach(disposeTrainState);
    disposeBatchNorm(bn);
    throw e;
  }
  heads.forEach((h) => disposeState(h.opt));
  return { heads: heads.map((h) => h.params), bn };
};

/** {@link fitHeads} with one head, scored on `val` after every epoch (the official loop's report). */
const fitHead = async (
  o: Omit<HeadLoop, "opts" | "afterEpoch"> & {
    readonly opt: GradientTransformation<unknown>;
    readonly val: FeatureSet;
    readonly lr: (step: number) => number;
    readonly onEpoch?: (e: EpochReport) => void;
    /** The default recipe's whitening, owned by the probe from here on. */
    readonly whiten?: tf.Tensor2D;
  },
): Promise<{ probe: Probe; accuracy: Accuracy; bestTop1: number }> => {
  let accuracy = accuracyOf(0, 0, 0), bestTop1 = 0;
  const { heads, bn } = await fitHeads({
    ...o,
    opts: [o.opt],
    afterEpoch: async (epoch, [head], bn, [loss]) => {
      assertFinite([loss], `the probe's training loss at epoch ${epoch + 1}`, o.modelName);
      accuracy = await evaluateProbe({ bn, head, whiten: o.whiten }, o.val, o.numClasses, 1024, o.modelName);
      bestTop1 = Math.max(bestTop1, accuracy.top1);
      o.onEpoch?.({
        epoch,
        epochs: o.epochs,
        loss,
        lr: o.lr(Math.max(0, (epoch + 1) * o.stepsPerEpoch - 1)),
        accuracy,
      });
    },
  }).catch((e) => {
    o.whiten?.dispose();
    throw e;
  });
  return { probe: { bn, head: heads[0], whiten: o.whiten }, accuracy, bestTop1 };
};

const checkSets = (train: FeatureSet, val: FeatureSet, modelName: string): void => {
  if (train.count < 2) throw new Error(`the probe needs at least 2 training samples, got ${train.count}`);
  assertFinite(train.features, "the training features", modelName);
  assertFinite(val.features, "the held-out features", modelName);
};

/**
 * The official recipe: trains BatchNorm + Linear on `train` with LARS and scores it on `val` after every
 * epoch.
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
  checkSets(train, val, modelOf(o));
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
  const r = await fitHead({
    train,
    val,
    numClasses: o.numClasses,
    epochs,
    batchSize,
    stepsPerEpoch,
    key: o.key,
    opt: lars({ lr: schedule, weightDecay: o.weightDecay ?? 0 }),
    lr: schedule,
    normalise: (x, bn) => batchNormTrain(x, bn),
    bn: batchNormInit(train.dim),
    modelName: modelOf(o),
    onEpoch: o.onEpoch,
  });
  return { ...r, lr, batchSize, stepsPerEpoch, epochs };
};

/** The lrs the default recipe tries (AdamW on standardised features), half a decade apart. */
export const DEFAULT_PROBE_LRS: readonly number[] = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1];

/** Settings of the default recipe ({@link trainProbeDefault}); every one has a `deno task probe` flag. */
export interface DefaultProbeOptions {
  /** Classes of the head. */
  readonly numClasses: number;
  /** Epochs at least (default 90, the official count); raised until there are `minSteps` updates. */
  readonly epochs?: number;
  /** Updates at least (default 3000): small training sets get more epochs. */
  readonly minSteps?: number;
  /** Batch (default 256, clamped to the training set). */
  readonly batchSize?: number;
  /** Peak AdamW lr; absent: the best of `lrs` on a held-back part of the training split. */
  readonly lr?: number;
  /** Candidate lrs (default {@link DEFAULT_PROBE_LRS}). */
  readonly lrs?: readonly number[];
  /** Fraction of the training split held back to choose the lr (default 0.1). */
  readonly holdout?: number;
  /** Warmup as a fraction of the epochs (default 1/9, the official 10 of 90). */
  readonly warmupFraction?: number;
  /** Whitening ridge, relative to the mean variance (default 1e-4; {@link whiteningMatrix}). */
  readonly ridge?: number;
  /** Decoupled weight decay of the head's kernel (default 0, as the official probe). */
  readonly weightDecay?: number;
  /** Seed of the head's init, the epoch permutations and the held-back part. */
  readonly key: Key;
  /** Names the model in the error raised on non-finite numbers. */
  readonly modelName?: string;
  /** Called after every epoch of the final fit. */
  readonly onEpoch?: (e: EpochReport) => void;
  /** Called once the lr is chosen: each candidate's loss on the held-back images. */
  readonly onSearch?: (s: LrSearch) => void;
}

/** How the default recipe chose its lr. */
export interface LrSearch {
  /** Candidates. */
  readonly lrs: readonly number[];
  /** Mean cross-entropy of each on the held-back images (Infinity: it diverged). */
  readonly losses: readonly number[];
  /** Standard error of each mean (the per-image losses' standard deviation / sqrt(images)). */
  readonly errors: readonly number[];
  /**
   * The smallest candidate whose loss is within one standard error of the lowest (the one-standard-error
   * rule): where the losses are level, as they are on whitened features, the lowest of them changes with
   * rounding (another backend, another thread count), the smallest lr within the error does not.
   */
  readonly lr: number;
  /** Images fitted and held back. */
  readonly fit: number;
  readonly heldBack: number;
  /** Epochs of the search. */
  readonly epochs: number;
}

/**
 * The training split's mean `[D]` and covariance `[D, D]` (biased, row-major), in float64 on the host: the
 * same numbers on every backend, so that the normalisation adds no backend-dependent rounding. Costs
 * `N D^2 / 2` multiply-adds (10,000 x 64-d: 20 M; ImageNet's 1.28 M x 768-d: 3.8e11, minutes).
 */
export const featureMoments = (s: FeatureSet): { mean: Float64Array; cov: Float64Array } => {
  const d = s.dim, mean = new Float64Array(d), cov = new Float64Array(d * d), c = new Float64Array(d);
  for (let i = 0; i < s.count; i++) {
    for (let j = 0; j < d; j++) mean[j] += s.features[i * d + j];
  }
  for (let j = 0; j < d; j++) mean[j] /= s.count;
  for (let i = 0; i < s.count; i++) {
    for (let j = 0; j < d; j++) c[j] = s.features[i * d + j] - mean[j];
    for (let j = 0; j < d; j++) {
      const cj = c[j], row = j * d;
      for (let k = j; k < d; k++) cov[row + k] += cj * c[k];
    }
  }
  for (let j = 0; j < d; j++) {
    for (let k = j; k < d; k++) cov[k * d + j] = cov[j * d + k] /= s.count;
  }
  return { mean, cov };
};

/**
 * The whitening `M = (L^-1)^T` of `cov + ridge x (trace / D) x I = L L^T` (Cholesky, float64), so that
 * `(x - mean) M` has identity covariance. The ridge keeps directions of (near) zero variance from being
 * blown up: a final LayerNorm makes one exactly (its centred outputs sum to zero before the affine),
 * whose whitened value would be rounding noise times `1 / sqrt(eigenvalue)`.
 */
export const whiteningMatrix = (cov: Float64Array, d: number, ridge = 1e-4): Float32Array => {
  let trace = 0;
  for (let j = 0; j < d; j++) trace += cov[j * d + j];
  const lift = ridge * (trace > 0 ? trace / d : 1);
  const l = new Float64Array(d * d);
  for (let j = 0; j < d; j++) {
    for (let k = 0; k <= j; k++) {
      let sum = cov[j * d + k] + (j === k ? lift : 0);
      for (let m = 0; m < k; m++) sum -= l[j * d + m] * l[k * d + m];
      l[j * d + k] = j === k ? Math.sqrt(sum) : sum / l[k * d + k];
    }
  }
  // inv = L^-1 (lower triangular), by forward substitution on the columns of I.
  const inv = new Float64Array(d * d);
  for (let c = 0; c < d; c++) {
    for (let j = c; j < d; j++) {
      let sum = j === c ? 1 : 0;
      for (let m = c; m < j; m++) sum -= l[j * d + m] * inv[m * d + c];
      inv[j * d + c] = sum / l[j * d + j];
    }
  }
  // M[k][j] = inv[j][k].
  const out = new Float32Array(d * d);
  for (let j = 0; j < d; j++) for (let k = 0; k < d; k++) out[k * d + j] = inv[j * d + k];
  return out;
};

const subset = (s: FeatureSet, idx: ArrayLike<number>): FeatureSet => ({
  features: rows(s, idx, 0, idx.length),
  labels: Int32Array.from({ length: idx.length }, (_, i) => s.labels[idx[i]]),
  count: idx.length,
  dim: s.dim,
});

/** Epochs, batch and steps of the default recipe on `count` training images. */
const defaultPlan = (count: number, o: DefaultProbeOptions) => {
  const batchSize = Math.min(o.batchSize ?? 256, count);
  const stepsPerEpoch = Math.floor(count / batchSize);
  const epochs = Math.max(o.epochs ?? 90, Math.ceil((o.minSteps ?? 3000) / stepsPerEpoch));
  return { batchSize, stepsPerEpoch, epochs };
};

const adamwFor = (lr: number, epochs: number, stepsPerEpoch: number, o: DefaultProbeOptions) => {
  const schedule = halfCycleCosine({
    lr,
    minLr: 0,
    epochs,
    warmupEpochs: epochs * (o.warmupFraction ?? 1 / 9),
    itersPerEpoch: stepsPerEpoch,
  });
  return { schedule, opt: fusedAdamw({ lr: schedule, weightDecay: o.weightDecay ?? 0 }) };
};

/** Held-back cross-entropy of each head: its mean and standard error (Infinity where it is not finite). */
const heldBackLosses = async (
  heads: readonly LinearParams[],
  s: FeatureSet,
  classes: number,
  norm: (x: tf.Tensor2D) => tf.Tensor2D,
) => {
  const l = tf.tidy(() => {
    const x = norm(tf.tensor2d(s.features, [s.count, s.dim]));
    const t = tf.tensor2d(smoothTargets(s.labels, classes), [s.count, classes]);
    // Per image: -sum_c t log softmax(z), as softCrossEntropy before its mean.
    return tf.stack(heads.map((h) => tf.neg(tf.sum(tf.mul(t, tf.logSoftmax(linear(h, x), -1)), -1))));
  });
  const v = await l.data();
  l.dispose();
  const losses: number[] = [], errors: number[] = [];
  heads.forEach((_, k) => {
    const row = Array.from(v.subarray(k * s.count, (k + 1) * s.count));
    const mean = row.reduce((a, x) => a + x, 0) / s.count;
    const sd = Math.sqrt(row.reduce((a, x) => a + (x - mean) ** 2, 0) / Math.max(1, s.count - 1));
    const ok = Number.isFinite(mean) && Number.isFinite(sd);
    losses.push(ok ? mean : Infinity);
    errors.push(ok ? sd / Math.sqrt(s.count) : Infinity);
  });
  return { losses, errors };
};

/**
 * Chooses the default recipe's lr: every candidate trains its own head, all on the same batches of 90%
 * of the training split, for the schedule the final fit will have; the smallest lr whose cross-entropy on
 * the other 10% is within one standard error of the lowest wins ({@link LrSearch}). The held-out split
 * plays no part in the choice.
 */
const searchLr = async (
  train: FeatureSet,
  o: DefaultProbeOptions,
  lrs: readonly number[],
  norm: (x: tf.Tensor2D) => tf.Tensor2D,
) => {
  const kSearch = foldIn(o.key, 1);
  const order = permutation(foldIn(o.key, 2), train.count);
  const held = Math.max(1, Math.round(train.count * (o.holdout ?? 0.1)));
  if (train.count - held < 2) {
    throw new Error(`the probe's lr search needs at least 3 training images, got ${train.count}: pass --lr`);
  }
  const fit = subset(train, order.subarray(held)), back = subset(train, order.subarray(0, held));
  const plan = defaultPlan(fit.count, o);
  const { heads, bn } = await fitHeads({
    train: fit,
    numClasses: o.numClasses,
    ...plan,
    key: kSearch,
    opts: lrs.map((lr) => adamwFor(lr, plan.epochs, plan.stepsPerEpoch, o).opt),
    normalise: (x) => ({ y: norm(x), state: null }),
    bn: batchNormInit(train.dim),
    modelName: modelOf(o),
  });
  const { losses, errors } = await heldBackLosses(heads, back, o.numClasses, norm);
  heads.forEach((h) => disposeTree(h));
  disposeBatchNorm(bn);
  const best = losses.indexOf(Math.min(...losses));
  if (!Number.isFinite(losses[best])) {
    throw new Error(`every candidate lr of the probe diverged (${lrs.join(", ")}) on ${modelOf(o)}`);
  }
  const lr = Math.min(...lrs.filter((_, k) => losses[k] <= losses[best] + errors[best]));
  return { lrs, losses, errors, lr, fit: fit.count, heldBack: held, epochs: plan.epochs };
};

/**
 * The default recipe: features whitened with the training split's exact mean and covariance (float64, on
 * the host; {@link whiteningMatrix}), then the official head (Linear, N(0, 0.01^2), bias 0, cross-entropy)
 * trained by AdamW with a linear warmup and a half-cycle cosine to 0, for
 * `max(epochs, ceil(minSteps / stepsPerEpoch))` epochs, at the lr that a search on a held-back tenth of the
 * training split chose (the one-standard-error rule of {@link LrSearch}) unless `lr` is given.
 *
 * Why whitening rather than BatchNorm's per-dimension scaling: the classifier is the same affine function
 * of the features either way, but on correlated features (a final LayerNorm's outputs are) the
 * cross-entropy is badly conditioned, and AdamW, whose preconditioning is per coordinate, approaches its
 * optimum only slowly. Measured on the embedded data (docs/evaluation.md): per-dimension scaling needs
 * lrs near 1 and still stops short of the optimum's training loss; whitened, it reaches it.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { key } from "../core/random.ts";
 * import { disposeProbe, trainProbeDefault } from "./probe.ts";
 * await tf.setBackend("cpu");
 * const set = { features: Float32Array.from([1, 0, 0, 1, 1.1, 0, 0, 1.2]), labels: Int32Array.from([0, 1, 0, 1]),
 *   count: 4, dim: 2 };
 * const r = await trainProbeDefault(set, set, { numClasses: 2, epochs: 1, minSteps: 200, lr: 0.01, key: key(0) });
 * if (r.accuracy.top1 !== 100 || r.epochs !== 200) throw new Error(`top1 ${r.accuracy.top1}, ${r.epochs} epochs`);
 * disposeProbe(r.probe);
 * ```
 */
export const trainProbeDefault = async (
  train: FeatureSet,
  val: FeatureSet,
  o: DefaultProbeOptions,
): Promise<ProbeResult & { readonly search: LrSearch | null }> => {
  checkSets(train, val, modelOf(o));
  const { mean, cov } = featureMoments(train);
  const meanT = tf.tensor1d(Float32Array.from(mean));
  const whiten = tf.tensor2d(whiteningMatrix(cov, train.dim, o.ridge), [train.dim, train.dim]);
  const norm = (x: tf.Tensor2D) => normaliseEval({ bn: { mean: meanT, variance: meanT }, whiten }, x);
  try {
    const lrs = o.lrs ?? DEFAULT_PROBE_LRS;
    const search = o.lr === undefined && lrs.length > 1 ? await searchLr(train, o, lrs, norm) : null;
    if (search !== null) o.onSearch?.(search);
    const lr = o.lr ?? search?.lr ?? lrs[0];
    const plan = defaultPlan(train.count, o);
    const { schedule, opt } = adamwFor(lr, plan.epochs, plan.stepsPerEpoch, o);
    const variance = tf.tensor1d(Float32Array.from({ length: train.dim }, (_, j) => cov[j * train.dim + j]));
    const r = await fitHead({
      train,
      val,
      numClasses: o.numClasses,
      ...plan,
      key: o.key,
      opt,
      lr: schedule,
      normalise: (x) => ({ y: norm(x), state: null }),
      // Carried by the probe for its evaluation mode: the mean, the variances (for the record), the whitening.
      bn: { mean: tf.clone(meanT), variance },
      whiten: tf.clone(whiten),
      modelName: modelOf(o),
      onEpoch: o.onEpoch,
    });
    return { ...r, lr, ...plan, search };
  } finally {
    tf.dispose([meanT, whiten]);
  }
};
