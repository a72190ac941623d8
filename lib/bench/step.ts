/**
 * Full CAE v2 pretraining steps on synthetic tensors: throughput of `trainStep` (teacher forward, student
 * forward/backward, clip + AdamW update, metrics read back once per step, as the training loop does), the
 * time of each phase measured on its own, peak memory, and a kernel profile of one step.
 *
 * Phases are timed separately, each followed by a one-element readback (the readback floor is subtracted):
 * teacher = `clipApply`; student forward = encoder + regressor + head + loss; student backward =
 * (teacher + forward + backward, i.e. `studentLossAndGrads`) - teacher - forward; update = AdamW chain +
 * `applyUpdates`. Their sum can differ from the full step by the overlap the full step enjoys.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { precision } from "../core/precision.ts";
import { initialLossScale } from "../optim/loss_scale.ts";
import { foldIn, type Key, key, permutation, seedOf, split } from "../core/random.ts";
import { caev2Apply, type CaeV2Buffers, caev2Buffers, caev2Init, type CaeV2Params } from "../models/caev2.ts";
import { clipApply, clipInit, type ClipParams } from "../models/clip.ts";
import type { CaeV2Config, ClipConfig } from "../models/config.ts";
import type { GradientTransformation } from "../optim/transform.ts";
import { disposeTree, tensorsIn } from "../core/tree.ts";
import { clipB16, clipMicro, defaultNumMasked, type PresetName, studentPreset } from "../models/presets.ts";
import { alignmentTargets, latentAlignment } from "../objectives/alignment.ts";
import type { AdamWState } from "../optim/adamw.ts";
import { fusedAdamw } from "../optim/fused_adamw.ts";
import { applyUpdates } from "../optim/apply.ts";
import {
  type PretrainState,
  type StepBatch,
  type StepConfig,
  type StepResult,
  studentLossAndGrads,
  trainStep,
} from "../train/step.ts";
import { type KernelProfile, profileKernels } from "./profile.ts";
import { peakMemory, resetPeakMemory } from "../core/memory.ts";
import { gpuPoolBytes, resetGpuPeak } from "../core/gpu_pool.ts";
import { type BackendLimits, checkFits, stepFootprint } from "../train/footprint.ts";
import { median, readbackFloorMs, settle } from "./timing.ts";

/** Which teacher the step runs: the real CLIP ViT-B/16 shape (random weights) or a small one. */
export type TeacherName = "clip-b16" | "micro";

/** What to run. */
export interface StepBenchConfig {
  readonly model: PresetName;
  readonly batch: number;
  /** Timed full steps (median reported). */
  readonly steps: number;
  /** Untimed steps first (shader compilation, buffer pools). */
  readonly warmup: number;
  readonly teacher: TeacherName;
  /** Time each phase on its own (repeats: `min(steps, 3)`). */
  readonly phases: boolean;
  /** Profile one step with tf.profile. */
  readonly profile: boolean;
  readonly seed?: number;
  /** Recompute each encoder block in the backward pass (`--remat`). */
  readonly remat?: boolean;
  /** What the backend holds: a step estimated not to fit is refused before any tensor is made. */
  readonly limits?: BackendLimits;
  readonly log?: (msg: string) => void;
}

/** Milliseconds per phase (each measured on its own, readback floor subtracted). */
export interface PhaseTimes {
  readonly teacherMs: number;
  readonly studentForwardMs: number;
  readonly studentBackwardMs: number;
  readonly updateMs: number;
  readonly sumMs: number;
}

/** Memory figures. */
export interface StepMemory {
  /**
   * Peak live tensor bytes over the timed steps, by the engine's count (`tf.memory().numBytes`, what
   * `tf.profile` reports as `peakBytes`: data shared by several handles counted per handle).
   */
  readonly peakTensorBytes: number;
  /** Peak bytes of distinct tensor data blocks over the timed steps (shared data counted once). */
  readonly peakBufferBytes: number;
  /** lib/train/footprint.ts's estimate of the step's peak (distinct data), made before the run. */
  readonly estimatedPeakBytes: number;
  /** Bytes of GPU buffers tfjs holds after the timed steps (in use + pooled), or null off WebGPU. */
  readonly gpuAllocatedBytes: number | null;
  /** The most GPU buffer bytes tfjs held during the timed steps (what the driver sees), or null off WebGPU. */
  readonly gpuPeakBytes: number | null;
  /** Live tensor bytes between steps (params, optimizer state, inputs, teacher). */
  readonly liveBytes: number;
  readonly liveTensors: number;
}

/** What {@link runStepBench} measured. */
export interface StepBenchResult {
  readonly model: PresetName;
  readonly batch: number;
  readonly teacher: TeacherName;
  readonly studentParams: number;
  readonly teacherParams: number;
  /** Encoder tokens per image (visible + cls) and masked patches. */
  readonly tokens: number;
  readonly numMasked: number;
  readonly setupMs: number;
  /** First step (includes shader compilation). */
  readonly firstStepMs: number;
  /** Median ms of a full step. */
  readonly stepMs: number;
  readonly stepSamplesMs: readonly number[];
  readonly imagesPerSec: number;
  readonly phases: PhaseTimes | null;
  readonly memory: StepMemory;
  readonly profile: KernelProfile | null;
  readonly lastLoss: number;
}

const count = (p: Record<string, unknown>): number => {
  let n = 0;
  const walk = (x: unknown) => {
    if (x instanceof tf.Tensor) n += x.size;
    else if (x != null && typeof x === "object") Object.values(x).forEach(walk);
  };
  walk(p);
  return n;
};

/** Disposes the tensors of `old` that `keep` does not hold. */
const disposeReplaced = (old: unknown, keep: unknown) => {
  const kept = new Set(tensorsIn(keep));
  tf.dispose(tensorsIn(old).filter((t) => !kept.has(t)));
};

/** A mask `[B * L]` masking exactly `numMasked` random patches of every image. */
export const randomMask = (k: Key, batch: number, numPatches: number, numMasked: number): Uint8Array => {
  const mask = new Uint8Array(batch * numPatches);
  split(k, batch).forEach((kb, b) => {
    const perm = permutation(kb, numPatches);
    for (let i = 0; i < numMasked; i++) mask[b * numPatches + perm[i]] = 1;
  });
  return mask;
};

const gpuAllocated = (): number | null => {
  const m = tf.memory() as tf.MemoryInfo & { numBytesAllocatedInGPU?: number };
  return typeof m.numBytesAllocatedInGPU === "number" ? m.numBytesAllocatedInGPU : null;
};

/** Runs the benchmark on the current backend. */
/** What {@link syntheticStep} builds: the model, its shapes and a step's worth of synthetic data. */
export interface SyntheticStepConfig {
  readonly model: PresetName;
  readonly batch: number;
  readonly teacher: TeacherName;
  readonly seed?: number;
  /** Recompute each encoder block in the backward pass (`--remat`). */
  readonly remat?: boolean;
  /** What the backend holds: a step estimated not to fit is refused before any tensor is made. */
  readonly limits?: BackendLimits;
}

/** One training step ready to run on synthetic data, and what its caller disposes. */
export interface SyntheticStep {
  readonly student: CaeV2Config;
  readonly teacher: ClipConfig;
  readonly teacherParams: ClipParams;
  readonly buffers: CaeV2Buffers;
  readonly optimizer: GradientTransformation<AdamWState>;
  readonly numPatches: number;
  readonly numMasked: number;
  /** The step's estimated footprint (lib/train/footprint.ts). */
  readonly footprint: ReturnType<typeof stepFootprint>;
  /** The training step (kernels as registered now). */
  readonly step: (state: PretrainState<AdamWState>, batches: readonly StepBatch[]) => StepResult<AdamWState>;
  /** The step's config (the phases time its parts). */
  readonly stepCfg: StepConfig<AdamWState>;
  /** The state before the first step (in f16 with the loss scale a run starts with). */
  readonly state: PretrainState<AdamWState>;
  /** One batch: random images (the teacher's view is the student's), a random mask. */
  readonly batch: StepBatch;
  /** Releases the teacher, the buffers and the images (not the state, which the caller replaces). */
  readonly dispose: () => void;
}

/**
 * The synthetic training step the benchmark and the tuner (lib/bench/tune.ts) run: a preset student with
 * random weights, the CLIP ViT-B/16 shape or a small teacher with random weights, random images and masks.
 * Refused (throws) before any tensor is made when the step is estimated not to fit `limits`.
 */
export const syntheticStep = (cfg: SyntheticStepConfig): SyntheticStep => {
  const teacher: ClipConfig = cfg.teacher === "clip-b16" ? clipB16 : clipMicro(224, 16);
  const student = studentPreset(cfg.model, { outDim: teacher.outDim });
  const numPatches = (student.imageSize / student.patchSize) ** 2;
  const numMasked = defaultNumMasked(cfg.model, numPatches);
  const root = key(cfg.seed ?? 2026);
  const [kParams, kTeacher, kImages, kMask, kRun] = split(root, 5);
  const footprint = stepFootprint(student, teacher, cfg.batch, numMasked, cfg.remat ?? false);
  const refused = cfg.limits && checkFits(footprint, cfg.limits, cfg.remat ?? false, "--batch");
  if (refused) throw new Error(`--model ${cfg.model} --batch ${cfg.batch}: ${refused}`);

  const params = caev2Init(kParams, student);
  const teacherParams = clipInit(kTeacher, teacher);
  const buffers = caev2Buffers(student);
  // The fused AdamW runs the reference chain unless the WebGPU kernels are on (same state, same math).
  const optimizer = fusedAdamw({ lr: 1e-4, weightDecay: 0.05, clip: 3 });
  const images = tf.randomNormal(
    [cfg.batch, student.imageSize, student.imageSize, 3],
    0,
    1,
    "float32",
    seedOf(kImages),
  ) as tf.Tensor4D;
  const batch: StepBatch = {
    studentImages: images,
    teacherImages: images,
    mask: randomMask(kMask, cfg.batch, numPatches, numMasked),
  };
  const stepCfg: StepConfig<AdamWState> = {
    student,
    teacher,
    teacherParams,
    buffers,
    optimizer,
    remat: cfg.remat,
  };
  // In f16, the loss scale a training run starts with (its scaling and unscaling are part of the step).
  const state: PretrainState<AdamWState> = {
    params,
    opt: optimizer.init(params),
    step: 0,
    key: kRun,
    ...(precision() === "f16" ? { lossScale: initialLossScale() } : {}),
  };
  return {
    student,
    teacher,
    teacherParams,
    buffers,
    optimizer,
    numPatches,
    numMasked,
    footprint,
    step: trainStep(stepCfg),
    stepCfg,
    state,
    batch,
    dispose: () => {
      disposeTree(teacherParams);
      tf.dispose([buffers.pos, buffers.regressorPos, images]);
    },
  };
};

export const runStepBench = async (cfg: StepBenchConfig): Promise<StepBenchResult> => {
  const log = cfg.log ?? (() => {});
  const t0 = performance.now();
  const run = syntheticStep(cfg);
  const { student, teacher, teacherParams, buffers, optimizer, numPatches, numMasked, footprint } = run;
  const { step, stepCfg, batch } = run;
  const images = batch.studentImages;
  let state = run.state;
  await settle(images);
  const setupMs = performance.now() - t0;
  log(`step bench: ${cfg.model} B=${cfg.batch}, teacher ${cfg.teacher}; setup ${setupMs.toFixed(0)} ms`);

  let lastLoss = NaN;
  const runStep = async (): Promise<number> => {
    const s0 = performance.now();
    const r = step(state, [batch]);
    const m = await r.metrics.data();
    const ms = performance.now() - s0;
    lastLoss = m[0];
    r.metrics.dispose();
    disposeReplaced(state, r.state);
    state = r.state;
    return ms;
  };

  const firstStepMs = await runStep();
  log(`  step 1 (compiles shaders): ${firstStepMs.toFixed(0)} ms, loss ${lastLoss.toFixed(4)}`);
  for (let i = 1; i < cfg.warmup; i++) {
    const ms = await runStep();
    log(`  warmup step ${i + 1}: ${ms.toFixed(0)} ms`);
  }
  const samples: number[] = [];
  // The memory peaks cover the timed steps only (the first step's shader compilation and pools aside).
  resetPeakMemory();
  resetGpuPeak();
  for (let i = 0; i < cfg.steps; i++) {
    samples.push(await runStep());
    log(`  step: ${samples[i].toFixed(1)} ms (${(cfg.batch / samples[i] * 1000).toFixed(1)} img/s)`);
  }
  const stepMs = median(samples);
  const peaks = peakMemory();
  const gpuPeak = gpuPoolBytes()?.peak ?? null;

  let phases: PhaseTimes | null = null;
  if (cfg.phases) {
    const floor = await readbackFloorMs(5);
    const reps = Math.max(1, Math.min(cfg.steps, 3));
    const time = async (f: () => tf.Tensor | tf.Tensor[]): Promise<number> => {
      const ts: number[] = [];
      for (let i = 0; i < reps; i++) {
        const s0 = performance.now();
        const out = f();
        const list = Array.isArray(out) ? out : [out];
        await settle(list[list.length - 1]);
        ts.push(Math.max(performance.now() - s0 - floor, 0));
        tf.dispose(list);
      }
      return median(ts);
    };
    const p = state.params;
    const fwdKey = foldIn(state.key, 1_000_000);
    const teacherMs = await time(() => clipApply(teacherParams, teacher, images));
    const features = clipApply(teacherParams, teacher, images);
    const studentForwardMs = await time(() =>
      tf.tidy(() => {
        const out = caev2Apply(p, student, buffers, images, batch.mask, { training: true, key: fwdKey });
        const targets = alignmentTargets(features, out.index);
        return latentAlignment(out.predictions, targets, out.index).loss;
      })
    );
    features.dispose();
    let grads: CaeV2Params | undefined;
    const lossAndGradsMs = await time(() => {
      const r = studentLossAndGrads(stepCfg, p, batch, fwdKey);
      return [r.loss, r.aux.visible, r.aux.masked, ...tensorsIn(r.grads)];
    });
    // One more for the update phase's input.
    const r = studentLossAndGrads(stepCfg, p, batch, fwdKey);
    tf.dispose([r.loss, r.aux.visible, r.aux.masked]);
    grads = r.grads;
    const updateMs = await time(() => {
      const [updates, opt] = optimizer.update(grads!, state.opt, p);
      const next = applyUpdates(p, updates);
      const fresh = tensorsIn([updates, opt]).filter((t) => !tensorsIn(state.opt).includes(t));
      return [...fresh, ...tensorsIn(next)];
    });
    tf.dispose(tensorsIn(grads));
    grads = undefined;
    const studentBackwardMs = Math.max(lossAndGradsMs - teacherMs - studentForwardMs, 0);
    phases = {
      teacherMs,
      studentForwardMs,
      studentBackwardMs,
      updateMs,
      sumMs: teacherMs + studentForwardMs + studentBackwardMs + updateMs,
    };
    log(
      `  phases: teacher ${teacherMs.toFixed(1)}, student fwd ${studentForwardMs.toFixed(1)}, bwd ${
        studentBackwardMs.toFixed(1)
      }, update ${updateMs.toFixed(1)} ms`,
    );
  }

  let profile: KernelProfile | null = null;
  if (cfg.profile) {
    let next: PretrainState<AdamWState> | undefined;
    let metrics: tf.Tensor | undefined;
    profile = await profileKernels(() => {
      const r = step(state, [batch]);
      next = r.state;
      metrics = r.metrics;
      return r.metrics;
    });
    await settle(metrics!);
    metrics!.dispose();
    disposeReplaced(state, next);
    state = next!;
    log(
      `  profile: ${profile.kernelCalls} kernels, ${profile.totalKernelMs.toFixed(1)} ms kernel time; top: ${
        profile.byName.slice(0, 5).map((r) => `${r.name} ${(r.share * 100).toFixed(0)}%`).join(", ")
      }`,
    );
  }

  const live = tf.memory();
  const result: StepBenchResult = {
    model: cfg.model,
    batch: cfg.batch,
    teacher: cfg.teacher,
    studentParams: count(state.params),
    teacherParams: count(teacherParams),
    tokens: numPatches - numMasked + 1,
    numMasked,
    setupMs,
    firstStepMs,
    stepMs,
    stepSamplesMs: samples,
    imagesPerSec: cfg.batch / stepMs * 1000,
    phases,
    memory: {
      peakTensorBytes: peaks.peakTensorBytes,
      peakBufferBytes: peaks.peakBufferBytes,
      estimatedPeakBytes: footprint.peakBytes,
      gpuAllocatedBytes: gpuAllocated(),
      gpuPeakBytes: gpuPeak,
      liveBytes: live.numBytes,
      liveTensors: live.numTensors,
    },
    profile,
    lastLoss,
  };
  tf.dispose(tensorsIn(state));
  run.dispose();
  return result;
};
