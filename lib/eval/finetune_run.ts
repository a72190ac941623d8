/**
 * The fine-tuning run: a fold of the training step over augmented, mixed batches, with held-out top-1 /
 * top-5 after every epoch (the official loop evaluates every epoch and reports the last and the best).
 * Randomness: the head from `split(key)[0]`, the data order and crops from `split(key)[1]`, the mixing
 * and drop path of step `t` from `foldIn(split(key)[2], t)`.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { foldIn, type Key, split } from "../core/random.ts";
import { applyGradients, disposeTrainState, initTrainState } from "../optim/train_state.ts";
import { disposeState } from "../optim/transform.ts";
import { valueAndGrad } from "../core/autodiff.ts";
import { datasetSize, evalLoader, pretrainLoader } from "../../data/loader.ts";
import { listFolder } from "../../data/folder.ts";
import type { DataSource } from "../../data/source.ts";
import { numClasses as syntheticClasses } from "../../data/synthetic.ts";
import type { CaeV2Config } from "../models/config.ts";
import {
  classifierApply,
  classifierInit,
  type ClassifierParams,
  finetuneOptimizer,
  finetuneSchedule,
  type FinetuneSettings,
} from "./finetune.ts";
import { assertFinite } from "./finite.ts";
import { type Accuracy, accuracyOf, countTopK, secondTopK, softCrossEntropy } from "./heads.ts";
import type { EncoderModel } from "../models/encoder_model.ts";
import { mixBatch } from "./mixup.ts";

/**
 * Classes of a labelled source: 10 for the synthetic data, the class folders of an image folder;
 * undefined for WebDataset shards (pass `--num-classes`).
 */
export const sourceClasses = async (source: DataSource): Promise<number | undefined> =>
  source.kind === "synthetic"
    ? syntheticClasses
    : source.kind === "folder"
    ? (await listFolder(source.path, "train")).classes.length
    : undefined;

/** Everything a fine-tuning run needs besides the encoder. */
export interface FinetuneRunOptions {
  /** A labelled data source. */
  readonly source: DataSource;
  /** Classes of the head. */
  readonly numClasses: number;
  /** Resolved settings; `batchSize` and `lr` are this run's. */
  readonly settings: FinetuneSettings;
  /** Optimizer steps in all; default `epochs x floor(train size / batch)`. */
  readonly steps?: number;
  /** Key of the run (head, data order, mixing, drop path). */
  readonly key: Key;
  /** Decoding workers (0: inline). */
  readonly workers?: number;
  /** Score the held-out split every this many steps (default: once per epoch) and at the end. */
  readonly evalEvery?: number;
  /** Called after every step. */
  readonly onStep?: (s: { step: number; total: number; loss: number; lr: number }) => void;
  /**
   * Called after every evaluation of the held-out split with what the metrics file logs per line (a
   * promise is awaited): the optimizer steps done, the epochs done (`step / steps per epoch`, fractional
   * when `evalEvery` is not a whole epoch), the mean training loss over the steps since the previous
   * evaluation, the lr of the last of them, and the held-out accuracy (top-5: `secondTopK(numClasses)`).
   */
  readonly onEval?: (
    s: {
      readonly step: number;
      readonly epoch: number;
      readonly loss: number;
      readonly lr: number;
      readonly accuracy: Accuracy;
    },
  ) => unknown;
}

/** One evaluation of the held-out split during fine-tuning, as `onEval` receives it. */
export type FinetuneEval = Parameters<NonNullable<FinetuneRunOptions["onEval"]>>[0];

/** What a fine-tuning run returns; the caller disposes `params`. */
export interface FinetuneResult {
  /** The fine-tuned classifier. */
  readonly params: ClassifierParams;
  /** Its shapes (with the run's drop path). */
  readonly config: CaeV2Config;
  /** Held-out accuracy after the last step. */
  readonly accuracy: Accuracy;
  /** Best held-out top-1 over the evaluations. */
  readonly bestTop1: number;
  /** Optimizer steps done. */
  readonly steps: number;
  /** Optimizer steps per epoch (the whole run for a source of unknown size). */
  readonly stepsPerEpoch: number;
}

/**
 * Top-1 / top-5 of a classifier on the held-out split (evaluation transform, no mixing); top-(C-1) with
 * fewer than 6 classes (heads.ts `secondTopK`). Logits that hold a NaN or an infinity stop it with an
 * error naming `opts.modelName`.
 */
export const evaluateClassifier = async (
  p: ClassifierParams,
  config: CaeV2Config,
  pos: tf.Tensor3D,
  source: DataSource,
  numClasses: number,
  opts: { batchSize?: number; workers?: number; modelName?: string } = {},
): Promise<Accuracy> => {
  const loader = evalLoader(
    { source, batchSize: opts.batchSize ?? 64, imageSize: config.imageSize, workers: opts.workers ?? 0 },
    "val",
  );
  let h1 = 0, h5 = 0, n = 0;
  try {
    for await (const b of loader) {
      const logits = tf.tidy(() =>
        classifierApply(p, config, pos, tf.tensor4d(b.images, [b.size, b.height, b.width, 3]), {
          training: false,
        })
      );
      const z = await logits.data();
      logits.dispose();
      assertFinite(z, "the held-out logits", opts.modelName ?? "the classifier");
      h1 += countTopK(z, b.labels, numClasses, 1);
      h5 += countTopK(z, b.labels, numClasses, secondTopK(numClasses));
      n += b.size;
    }
  } finally {
    await loader.close();
  }
  return accuracyOf(h1, h5, n);
};

/** Fine-tunes a copy of `enc` (which stays usable) and scores it. */
export const runFinetune = async (enc: EncoderModel, o: FinetuneRunOptions): Promise<FinetuneResult> => {
  const s = o.settings;
  const config: CaeV2Config = { ...enc.config, dropPath: s.dropPath };
  const n = await datasetSize(o.source, "train");
  const perEpoch = n === undefined ? undefined : Math.floor(n / s.batchSize);
  if (perEpoch === 0) {
    throw new Error(`the training split has ${n} images, fewer than one batch of ${s.batchSize}`);
  }
  const total = o.steps ?? (perEpoch === undefined ? undefined : s.epochs * perEpoch);
  if (total === undefined) throw new Error("the source's size is unknown (WebDataset shards): pass --steps");
  const stepsPerEpoch = perEpoch ?? total;
  const warmupSteps = Math.min(total, Math.round(s.warmupEpochs * stepsPerEpoch));
  const schedule = finetuneSchedule({ lr: s.lr, minLr: s.minLr, totalSteps: total, warmupSteps });
  const opt = finetuneOptimizer({
    lr: schedule,
    weightDecay: s.weightDecay,
    layerDecay: s.layerDecay,
    depth: config.depth,
  });
  const [kHead, kData, kStep] = split(o.key, 3);
  let ts = initTrainState(opt, classifierInit(kHead, enc, o.numClasses, s.initScale), kStep);
  const evalEvery = o.evalEvery ?? stepsPerEpoch;
  const loader = pretrainLoader(
    {
      source: o.source,
      batchSize: s.batchSize,
      imageSize: config.imageSize,
      patchSize: config.patchSize,
      numMasked: 0,
      masking: "random",
      workers: o.workers ?? 0,
    },
    kData,
  );
  let accuracy = accuracyOf(0, 0, 0), bestTop1 = 0;
  let lossSum = 0, lossSteps = 0, lastLr = 0;
  const score = async () => {
    accuracy = await evaluateClassifier(ts.params, config, enc.pos, o.source, o.numClasses, {
      workers: o.workers,
      modelName: `the classifier fine-tuned from ${enc.origin} at step ${ts.step}`,
    });
    bestTop1 = Math.max(bestTop1, accuracy.top1);
    await o.onEval?.({
      step: ts.step,
      epoch: ts.step / stepsPerEpoch,
      loss: lossSum / lossSteps,
      lr: lastLr,
      accuracy,
    });
    lossSum = 0;
    lossSteps = 0;
  };
  try {
    for await (const b of loader) {
      if (ts.step >= total) break;
      if (b.labels.some((y) => y < 0 || y >= o.numClasses)) {
        throw new Error(
          `fine-tuning needs labels in 0..${o.numClasses - 1}; this batch has ${[...b.labels].join(", ")}`,
        );
      }
      const k = foldIn(ts.key, ts.step);
      const [kMix, kDrop] = split(k);
      const mixed = mixBatch(b.studentImages, b.labels, b.height, b.width, {
        mixup: s.mixup,
        cutmix: s.cutmix,
        smoothing: s.smoothing,
        numClasses: o.numClasses,
      }, kMix);
      const images = tf.tensor4d(mixed.images, [b.size, b.height, b.width, 3]);
      const targets = tf.tensor2d(mixed.targets, [b.size, o.numClasses]);
      const lr = schedule(ts.step);
      const out = valueAndGrad((p: ClassifierParams) => ({
        loss: softCrossEntropy(
          classifierApply(p, config, enc.pos, images, { training: true, key: kDrop }),
          targets,
        ),
        aux: {},
      }))(ts.params);
      const next = applyGradients(opt, ts, out.grads);
      disposeTrainState(ts);
      ts = next;
      const loss = (await out.loss.data())[0];
      tf.dispose([images, targets, out.loss]);
      const step = ts.step;
      o.onStep?.({ step, total, loss, lr });
      if (!Number.isFinite(loss)) {
        // The first loss is computed before any update: only the checkpoint (the head starts near zero)
        // can make it non-finite. Later, the fine-tuning itself may have diverged.
        throw new Error(
          step === 1
            ? `the fine-tuning loss of ${enc.origin} is ${loss} at step 1, before any update: the checkpoint's ` +
              "weights or features are not finite (a diverged run?). Fine-tune an earlier checkpoint."
            : `fine-tuning ${enc.origin} diverged at step ${step} (loss ${loss}): lower --lr`,
        );
      }
      lossSum += loss;
      lossSteps++;
      lastLr = lr;
      if (step % evalEvery === 0 || step === total) await score();
    }
  } catch (e) {
    disposeTrainState(ts);
    throw e;
  } finally {
    await loader.close();
  }
  if (ts.step < total) {
    disposeTrainState(ts);
    throw new Error(`the data ended after ${ts.step} of ${total} steps`);
  }
  disposeState(ts.opt);
  return { params: ts.params, config, accuracy, bestTop1, steps: ts.step, stepsPerEpoch };
};
