/**
 * Attentive probing of a frozen encoder, as the official CAE code defines it (`AttentiveBlock` and
 * `VisionTransformer.forward_features` with `lin_probe=True, linear_type='attentive'` in
 * `models/modeling_finetune.py`; trained by `tools/run_attentive.py --enable_linear_eval`):
 *
 * - a learned query token `[1, 1, D]` (zeros) cross-attends to every output token of the frozen encoder
 *   (cls and patches, after the encoder's final norm): `norm_q(query)`, `norm_k(tokens)`, `norm_v(tokens)`
 *   (LayerNorms, eps 1e-6; the positions passed are 0), then `CrossAttention` with the encoder's number of
 *   heads, q and v biases, no k bias, and an output projection; no residual, no MLP;
 * - `fc_norm`: BatchNorm1d without affine (`LP_BatchNorm(affine=False)`, the linear probe's), then a Linear
 *   head with weight N(0, 0.01^2) and bias 0;
 * - the other Linear kernels N(0, 0.02^2) (timm's `trunc_normal_(std=.02)`, cut at +-2 in absolute value:
 *   a plain normal at this std), biases and the q/v biases 0, LayerNorms 1 and 0;
 * - trained with the script's defaults: AdamW (0.9, 0.999, eps 1e-8), lr 5e-4, weight decay 0.05 except
 *   1-D tensors and biases (the query token decays: it is 3-D), a per-iteration cosine from 0 over 5 warmup
 *   epochs to 1e-6 at 30 epochs, label smoothing 0.1, batch 64, no clipping; evaluated after every epoch.
 *
 * The CAE scripts that report attentive-probe results (`scripts/cae_base_300e.sh` and the others) override
 * these: SGD with momentum 0.9, lr 0.4, batch 256 per GPU, 90 epochs, warmup 10, weight decay 0, no
 * smoothing (docs/evaluation.md). They are flags here; SGD is not provided.
 *
 * As the linear probe here (probe.ts), the tokens are computed once from the evaluation transform and
 * reused every epoch, where the official loop re-encodes augmented views: with a frozen encoder, this only
 * removes augmentation from the probe's training data. The tokens stay on the host (tokens.ts).
 *
 * @module
 */
import { tf } from "../deps.ts";
import { foldIn, type Key, permutation, seedOf, split } from "../core/random.ts";
import { disposeTree, type Tensor1D, type Tensor3D } from "../core/tree.ts";
import { valueAndGrad } from "../core/autodiff.ts";
import { crossAttention, type CrossAttentionParams } from "../nn/cross_attention.ts";
import { layerNorm, layerNormInit, type LayerNormParams } from "../nn/norm.ts";
import { linear, type LinearParams } from "../nn/linear.ts";
import { applyGradients, disposeTrainState, initTrainState } from "../optim/train_state.ts";
import { fusedAdamw } from "../optim/fused_adamw.ts";
import { cosineSchedule } from "../optim/schedule.ts";
import { disposeState } from "../optim/transform.ts";
import {
  batchNormEval,
  batchNormInit,
  type BatchNormState,
  batchNormTrain,
  disposeBatchNorm,
} from "../nn/batchnorm.ts";
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
import type { EpochReport } from "./probe.ts";
import type { TokenSet } from "./tokens.ts";

/** The trained parameters of an attentive probe (the encoder is frozen and not among them). */
export type AttentiveParams = {
  /** The query token `[1, 1, D]`. */
  readonly query: Tensor3D;
  /** `norm_q`, `norm_k`, `norm_v`. */
  readonly normQ: LayerNormParams;
  readonly normK: LayerNormParams;
  readonly normV: LayerNormParams;
  /** `cross_attn`. */
  readonly attn: CrossAttentionParams;
  /** `head`, `[D] -> [C]`. */
  readonly head: LinearParams;
};

/** A fitted attentive probe: its parameters and `fc_norm`'s running statistics. */
export interface AttentiveProbe {
  readonly params: AttentiveParams;
  readonly bn: BatchNormState;
  /** Attention heads (the encoder's). */
  readonly heads: number;
}

/** Disposes an attentive probe's tensors. */
export const disposeAttentive = (p: AttentiveProbe): void => {
  disposeTree(p.params);
  disposeBatchNorm(p.bn);
};

const normal = (k: Key, shape: number[], std: number) => tf.randomNormal(shape, 0, std, "float32", seedOf(k));

/** The official initialisation (module doc). */
export const attentiveInit = (k: Key, dim: number, classes: number): AttentiveParams => {
  const [kq, kk, kv, kp, kh] = split(k, 5);
  return {
    query: tf.zeros([1, 1, dim]) as Tensor3D,
    normQ: layerNormInit(dim),
    normK: layerNormInit(dim),
    normV: layerNormInit(dim),
    attn: {
      q: { kernel: normal(kq, [dim, dim], 0.02) as tf.Tensor2D },
      k: { kernel: normal(kk, [dim, dim], 0.02) as tf.Tensor2D },
      v: { kernel: normal(kv, [dim, dim], 0.02) as tf.Tensor2D },
      qBias: tf.zeros([dim]) as Tensor1D,
      vBias: tf.zeros([dim]) as Tensor1D,
      proj: { kernel: normal(kp, [dim, dim], 0.02) as tf.Tensor2D, bias: tf.zeros([dim]) as Tensor1D },
    },
    head: linearHeadInit(kh, dim, classes, 0.01),
  };
};

/** The pooled feature before `fc_norm`: tokens `[B, T, D]` -> `[B, D]`. */
export const attentivePool = (p: AttentiveParams, tokens: tf.Tensor3D, heads: number): tf.Tensor2D => {
  const [b, , d] = tokens.shape;
  // norm_q of the expanded token equals the expanded norm of the token: normalise once, then broadcast.
  const q = tf.broadcastTo(layerNorm(p.normQ, p.query, 1e-6), [b, 1, d]) as Tensor3D;
  const k = layerNorm(p.normK, tokens, 1e-6) as Tensor3D;
  const v = layerNorm(p.normV, tokens, 1e-6) as Tensor3D;
  return tf.reshape(crossAttention(p.attn, q, k, v, heads), [b, d]) as tf.Tensor2D;
};

const batchOf = (s: TokenSet, idx: ArrayLike<number>, from: number, n: number): tf.Tensor3D => {
  const per = s.length * s.dim;
  const out = new Float32Array(n * per);
  for (let i = 0; i < n; i++) {
    const r = idx[from + i];
    out.set(s.tokens.subarray(r * per, (r + 1) * per), i * per);
  }
  return tf.tensor3d(out, [n, s.length, s.dim]);
};

/** Scores an attentive probe (`fc_norm` with its running statistics) on a token set. */
export const evaluateAttentive = async (
  p: AttentiveProbe,
  s: TokenSet,
  numClasses: number,
  modelName = "the encoder",
  chunk = 256,
): Promise<Accuracy> => {
  let h1 = 0, h5 = 0;
  const all = Int32Array.from({ length: s.count }, (_, i) => i);
  for (let at = 0; at < s.count; at += chunk) {
    const n = Math.min(chunk, s.count - at);
    const logits = tf.tidy(() => {
      const x = batchOf(s, all, at, n);
      return linear(p.params.head, batchNormEval(attentivePool(p.params, x, p.heads), p.bn));
    });
    const z = await logits.data();
    logits.dispose();
    assertFinite(z, `the attentive probe's held-out logits of images ${at}..${at + n - 1}`, modelName);
    const y = s.labels.subarray(at, at + n);
    h1 += countTopK(z, y, numClasses, 1);
    h5 += countTopK(z, y, numClasses, secondTopK(numClasses));
  }
  return accuracyOf(h1, h5, s.count);
};

/** Settings of {@link trainAttentive}; the defaults are `tools/run_attentive.py`'s. */
export interface AttentiveOptions {
  /** Classes of the head. */
  readonly numClasses: number;
  /** Attention heads (the encoder's). */
  readonly heads: number;
  /** Official 30; raised until there are `minSteps` updates. */
  readonly epochs?: number;
  /** Updates at least (default 3000): on a small training set the official epochs are too few steps. */
  readonly minSteps?: number;
  /** Official 64 (per GPU); clamped to the training set. */
  readonly batchSize?: number;
  /** Official 5e-4. */
  readonly lr?: number;
  /** Official 1e-6. */
  readonly minLr?: number;
  /** Official 5 (scaled with the epochs when `minSteps` raises them). */
  readonly warmupEpochs?: number;
  /** Official 0.05. */
  readonly weightDecay?: number;
  /** Official 0.1. */
  readonly smoothing?: number;
  /** Seed of the init and the epoch permutations. */
  readonly key: Key;
  /** Names the model in errors about non-finite numbers. */
  readonly modelName?: string;
  /** Called after every epoch. */
  readonly onEpoch?: (e: EpochReport) => void;
}

/** What {@link trainAttentive} returns. */
export interface AttentiveResult extends FitSummary {
  /** The fitted probe; the caller disposes it with {@link disposeAttentive}. */
  readonly probe: AttentiveProbe;
}

/** The schedule {@link trainAttentive} runs on `count` training images. */
export interface AttentivePlan {
  readonly batchSize: number;
  readonly stepsPerEpoch: number;
  readonly epochs: number;
  readonly warmupEpochs: number;
  readonly lr: number;
  readonly minLr: number;
  readonly weightDecay: number;
  readonly smoothing: number;
}

/**
 * The official settings, filled in, on `count` training images: batch 64 (clamped), `drop_last` steps,
 * 30 epochs raised to at least `minSteps` updates, the 5 warmup epochs scaled with them.
 *
 * @example
 * ```ts
 * import { attentivePlan } from "./attentive.ts";
 * const p = attentivePlan(10_000, { minSteps: 1 });
 * if (p.epochs !== 30 || p.batchSize !== 64 || p.stepsPerEpoch !== 156 || p.lr !== 5e-4) throw new Error();
 * ```
 */
export const attentivePlan = (
  count: number,
  o: Omit<AttentiveOptions, "numClasses" | "heads" | "key">,
): AttentivePlan => {
  const batchSize = Math.min(o.batchSize ?? 64, count);
  const stepsPerEpoch = Math.floor(count / batchSize); // drop_last=True
  const official = o.epochs ?? 30;
  const epochs = Math.max(official, Math.ceil((o.minSteps ?? 3000) / stepsPerEpoch));
  return {
    batchSize,
    stepsPerEpoch,
    epochs,
    // The official warmup is 5 of 30 epochs: kept, or kept in proportion when the epochs were raised.
    warmupEpochs: Math.min(epochs, (o.warmupEpochs ?? 5) * epochs / official),
    lr: o.lr ?? 5e-4,
    minLr: o.minLr ?? 1e-6,
    weightDecay: o.weightDecay ?? 0.05,
    smoothing: o.smoothing ?? 0.1,
  };
};

/**
 * Trains an attentive probe on `train` tokens and scores it on `val` after every epoch.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { key } from "../core/random.ts";
 * import { disposeAttentive, trainAttentive } from "./attentive.ts";
 * await tf.setBackend("cpu");
 * // Two classes told apart by one token of three: its first coordinate is +1 or -1.
 * const n = 32, t = 3, d = 4;
 * const tokens = new Float32Array(n * t * d).map((_, i) => Math.sin(i * 1.7));
 * const labels = Int32Array.from({ length: n }, (_, i) => i % 2);
 * labels.forEach((y, i) => (tokens[(i * t + 2) * d] = y === 0 ? 1 : -1));
 * const set = { tokens, labels, count: n, length: t, dim: d };
 * const r = await trainAttentive(set, set, { numClasses: 2, heads: 2, epochs: 1, minSteps: 100, batchSize: 16,
 *   lr: 1e-2, key: key(0) });
 * if (r.accuracy.top1 !== 100) throw new Error(`top1 ${r.accuracy.top1}`);
 * disposeAttentive(r.probe);
 * ```
 */
export const trainAttentive = async (
  train: TokenSet,
  val: TokenSet,
  o: AttentiveOptions,
): Promise<AttentiveResult> => {
  const modelName = o.modelName ?? "the encoder";
  if (train.count < 2) {
    throw new Error(`the attentive probe needs at least 2 training samples, got ${train.count}`);
  }
  if (train.dim % o.heads !== 0) {
    throw new Error(`token width ${train.dim} is not a multiple of ${o.heads} heads`);
  }
  assertFinite(train.tokens, "the training tokens", modelName);
  assertFinite(val.tokens, "the held-out tokens", modelName);
  const plan = attentivePlan(train.count, o);
  const { batchSize, stepsPerEpoch, epochs, lr } = plan;
  const schedule = cosineSchedule({
    base: lr,
    final: plan.minLr,
    totalSteps: epochs * stepsPerEpoch,
    warmupSteps: Math.round(plan.warmupEpochs * stepsPerEpoch),
  });
  const opt = fusedAdamw({ lr: schedule, weightDecay: plan.weightDecay });
  const [kInit, kData] = split(o.key);
  let ts = initTrainState(opt, attentiveInit(kInit, train.dim, o.numClasses), kData);
  let bn = batchNormInit(train.dim);
  let accuracy = accuracyOf(0, 0, 0), bestTop1 = 0;
  try {
    for (let epoch = 0; epoch < epochs; epoch++) {
      const order = permutation(foldIn(ts.key, epoch), train.count);
      let loss = NaN;
      for (let s = 0; s < stepsPerEpoch; s++) {
        const x = batchOf(train, order, s * batchSize, batchSize);
        const labels = Int32Array.from(
          { length: batchSize },
          (_, i) => train.labels[order[s * batchSize + i]],
        );
        const targets = tf.tensor2d(smoothTargets(labels, o.numClasses, plan.smoothing), [
          batchSize,
          o.numClasses,
        ]);
        const out = valueAndGrad((p: AttentiveParams) => {
          // fc_norm in training mode: the batch's statistics, differentiated through (PyTorch's BatchNorm).
          const normed = batchNormTrain(attentivePool(p, x, o.heads), bn);
          return {
            loss: softCrossEntropy(linear(p.head, normed.y) as tf.Tensor2D, targets),
            aux: { mean: normed.state.mean, variance: normed.state.variance },
          };
        })(ts.params);
        const next = applyGradients(opt, ts, out.grads);
        disposeTrainState(ts);
        disposeBatchNorm(bn);
        ts = next;
        bn = { mean: out.aux.mean as Tensor1D, variance: out.aux.variance as Tensor1D };
        // One readback an epoch: parameters that went NaN stay NaN, so the last batch's loss shows it.
        if (s === stepsPerEpoch - 1) loss = (await out.loss.data())[0];
        tf.dispose([x, targets, out.loss]);
      }
      assertFinite([loss], `the attentive probe's training loss at epoch ${epoch + 1}`, modelName);
      accuracy = await evaluateAttentive(
        { params: ts.params, bn, heads: o.heads },
        val,
        o.numClasses,
        modelName,
      );
      bestTop1 = Math.max(bestTop1, accuracy.top1);
      o.onEpoch?.({
        epoch,
        epochs,
        loss,
        lr: schedule(Math.max(0, (epoch + 1) * stepsPerEpoch - 1)),
        accuracy,
      });
    }
  } catch (e) {
    disposeTrainState(ts);
    disposeBatchNorm(bn);
    throw e;
  }
  disposeState(ts.opt);
  return {
    probe: { params: ts.params, bn, heads: o.heads },
    accuracy,
    bestTop1,
    lr,
    batchSize,
    stepsPerEpoch,
    epochs,
  };
};
