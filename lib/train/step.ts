/**
 * The CAE v2 training step as an immutable reducer (docs/design.md, principle 3):
 * `trainStep(config)(state, batches) -> { state, metrics }` with `state = { params, opt, step, key }`.
 * One step: teacher forward (no gradient) -> student forward/backward on each micro-batch (gradient
 * accumulation averages them) -> clip + AdamW update.
 *
 * Ownership rule: the step never mutates or disposes its input state or batches; it returns fresh tensors
 * (new params, new optimizer state, the metrics vector) and releases every intermediate. The loop disposes
 * the state it replaced and the batches it fed, so the live tensor count stays flat across steps.
 *
 * Randomness: the key of step t is `foldIn(runKey, t)` (drop path here; masks and crops come from the data
 * stream's own keys), so a resumed run draws exactly what an uninterrupted one draws.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { foldIn, type Key } from "../core/random.ts";
import {
  disposeTree,
  type Params,
  type Scalar,
  type Tensor1D,
  type Tensor4D,
  zipTree,
} from "../core/tree.ts";
import { caev2Apply, type CaeV2Buffers, type CaeV2Params } from "../models/caev2.ts";
import type { CaeV2Config, ClipConfig } from "../models/config.ts";
import { clipApply, type ClipParams } from "../models/clip.ts";
import { alignmentTargets, type AlignmentWeights, latentAlignment } from "../objectives/alignment.ts";
import { applyGradients, type TrainState } from "../optim/train_state.ts";
import { globalNorm } from "../optim/clip.ts";
import { type GradientTransformation, tidy } from "../optim/transform.ts";
import { valueAndGrad } from "../core/autodiff.ts";
import type { BatchRows } from "../nn/drop_path.ts";
import type { LossScale } from "../optim/loss_scale.ts";

/**
 * The pretraining state: the student's parameters, the optimizer's state, the step, the run key, and in
 * `--precision f16` the dynamic loss scale (lib/optim/loss_scale.ts). The step scales the loss by it and
 * unscales the gradients; the loop moves it (and skips an update) from the finiteness it reads back with
 * the step's metrics, since that needs the device's answer.
 */
export type PretrainState<S> = TrainState<CaeV2Params, S> & { readonly lossScale?: LossScale };

/** What one micro-batch brings to the step. Images NHWC. */
export interface StepBatch {
  /** `[B, H, W, 3]`: the student's view, ImageNet mean/std normalised. */
  readonly studentImages: Tensor4D;
  /** `[B, H, W, 3]`: the teacher's view of the same crop, CLIP mean/std normalised. */
  readonly teacherImages: Tensor4D;
  /** `[B * L]`, 1 = masked. */
  readonly mask: Uint8Array;
  /** The rows of the global batch these images are (data-parallel training; lib/train/data_parallel.ts). */
  readonly rows?: BatchRows;
}

/** Everything the step closes over. The teacher is a constant (principle 5). */
export interface StepConfig<S> {
  /** The student's shapes. */
  readonly student: CaeV2Config;
  /** The teacher's shapes. */
  readonly teacher: ClipConfig;
  /** The frozen teacher's weights (never differentiated, never updated). */
  readonly teacherParams: ClipParams;
  /** The student's fixed position embeddings (`caev2Buffers`). */
  readonly buffers: CaeV2Buffers;
  /** The optimizer, e.g. `adamw(...)`. */
  readonly optimizer: GradientTransformation<S>;
  /** Weights of the visible and masked alignment (official: 1 and 1). */
  readonly weights?: AlignmentWeights;
  /** Recompute each encoder block in the backward pass instead of keeping its activations (`--remat`). */
  readonly remat?: boolean;
}

/** Names of the entries of the metrics vector, in order. */
export const METRIC_NAMES = ["loss", "lossVisible", "lossMasked", "gradNorm"] as const;

/** The step's result: the new state and a `[4]` metrics vector (read it once with `await data()`). */
export interface StepResult<S> {
  readonly state: PretrainState<S>;
  readonly metrics: Tensor1D;
}

/** Loss and gradients of one micro-batch; the caller owns the results. */
export const studentLossAndGrads = <S>(
  cfg: StepConfig<S>,
  params: CaeV2Params,
  batch: StepBatch,
  key: Key | undefined,
  lossScale = 1,
) => {
  const teacherFeatures = clipApply(cfg.teacherParams, cfg.teacher, batch.teacherImages);
  try {
    return valueAndGrad((p: CaeV2Params) => {
      const out = caev2Apply(p, cfg.student, cfg.buffers, batch.studentImages, batch.mask, {
        training: true,
        key,
        remat: cfg.remat,
        rows: batch.rows,
      });
      const targets = alignmentTargets(teacherFeatures, out.index);
      const parts = latentAlignment(out.predictions, targets, out.index, cfg.weights);
      // The gradient is of the scaled loss (lossScale 1 outside f16); `unscaled` is what is reported.
      return {
        loss: lossScale === 1 ? parts.loss : tf.mul(parts.loss, lossScale) as Scalar,
        aux: { visible: parts.visible, masked: parts.masked, unscaled: parts.loss },
      };
    })(params);
  } finally {
    teacherFeatures.dispose();
  }
};

/** One process's share of a step: the micro-batches' averaged gradients and loss parts. */
export interface LocalGrads {
  /** Gradients averaged over the micro-batches. */
  readonly grads: CaeV2Params;
  /** Scalars: the loss, the visible and the masked alignment, each averaged over the micro-batches. */
  readonly means: readonly [Scalar, Scalar, Scalar];
}

/**
 * Loss and gradients of every micro-batch, averaged (gradient accumulation); micro-batch `i` draws from
 * `foldIn(foldIn(runKey, step), i)`. The caller owns the results.
 */
export const accumulatedGrads = <S>(
  cfg: StepConfig<S>,
  state: PretrainState<S>,
  batches: readonly StepBatch[],
): LocalGrads => {
  if (batches.length === 0) throw new Error("trainStep: no batch given");
  const stepKey = foldIn(state.key, state.step);
  let grads: Params | undefined;
  const parts: Scalar[] = [];
  const scale = state.lossScale?.scale ?? 1;
  for (let i = 0; i < batches.length; i++) {
    const r = studentLossAndGrads(cfg, state.params, batches[i], foldIn(stepKey, i), scale);
    if (r.loss !== r.aux.unscaled) r.loss.dispose();
    parts.push(r.aux.unscaled, r.aux.visible, r.aux.masked);
    if (grads === undefined) grads = r.grads;
    else {
      const prev: Params = grads;
      grads = tidy(() => zipTree(prev, r.grads, (a, b) => tf.add(a, b)));
      disposeTree(prev, r.grads);
    }
  }
  const n = batches.length;
  // The mean over micro-batches, and the loss scale taken back out (f16), in one pass.
  const g = n === 1 && scale === 1
    ? grads!
    : tidy(() => zipTree(grads!, grads!, (a) => scale === 1 ? tf.div(a, n) : tf.mul(a, 1 / (n * scale))));
  if (g !== grads) disposeTree(grads);
  // A fold of adds, not tf.addN: WebGPU's AddN binds every input as a storage buffer (limit 8).
  const means = tidy(() =>
    [0, 1, 2].map((k) => tf.div(parts.filter((_, j) => j % 3 === k).reduce((a, b) => tf.add(a, b)), n))
  ) as unknown as [Scalar, Scalar, Scalar];
  tf.dispose(parts);
  return { grads: g as CaeV2Params, means };
};

/**
 * The optimizer update from averaged gradients: the new state and the metrics vector
 * `[loss, lossVisible, lossMasked, gradNorm]`. Consumes (disposes) `local`.
 */
export const applyLocalGrads = <S>(
  cfg: StepConfig<S>,
  state: PretrainState<S>,
  local: LocalGrads,
): StepResult<S> => {
  const g = local.grads;
  const metrics = tidy(() => tf.stack([...local.means, globalNorm(g)]) as Tensor1D);
  tf.dispose([...local.means]);
  const next = applyGradients(cfg.optimizer, state, g);
  return {
    state: state.lossScale === undefined ? next : { ...next, lossScale: state.lossScale },
    metrics,
  };
};

/** Builds the reducer. */
export const trainStep =
  <S>(cfg: StepConfig<S>): (state: PretrainState<S>, batches: readonly StepBatch[]) => StepResult<S> =>
  (state: PretrainState<S>, batches: readonly StepBatch[]): StepResult<S> =>
    applyLocalGrads(cfg, state, accumulatedGrads(cfg, state, batches));

/** Reads the metrics vector (one device read per step). */
export const readMetrics = async (
  metrics: Tensor1D,
): Promise<Record<(typeof METRIC_NAMES)[number], number>> => {
  const v = await metrics.data();
  return { loss: v[0], lossVisible: v[1], lossMasked: v[2], gradNorm: v[3] };
};
