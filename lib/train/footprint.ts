/**
 * How much memory a pretraining step needs, estimated before any tensor is made, and whether it fits the
 * chosen backend: a model and batch that cannot fit get a clear message naming the estimate, the limit and
 * what to do, instead of `Aborted()` from the wasm heap halfway through the first step.
 *
 * The estimate counts distinct tensor data (what lib/core/memory.ts reports as buffer bytes), in float32:
 * - **state**: the student's parameters and AdamW's two moments, the teacher's parameters;
 * - **update**: during the optimizer step the gradients, the new moments and the updates exist beside the
 *   state (then the new parameters, once the gradients are gone), plus one tensor's temporaries;
 * - **activations**: per encoder block, what the backward pass keeps and its working set (26 token
 *   tensors `[B, N, D]`, the MLP's hidden layer counting 4; one with `--remat`, plus one block's worth
 *   while it is recomputed), the regressor's blocks likewise, plus the attention probabilities the
 *   backward pass recomputes (three `[B, H, N, N]`);
 * - **teacher**: one CLIP block's working set (its forward pass keeps only the residual stream): 36
 *   `[B, T, W]` and three `[B, H, T, T]`.
 * The step's peak is the state plus the largest of the update and the forward/backward working sets.
 * Calibrated against lib/core/memory.ts on the 2-core CPU machine (2026-11-30, wasm, BENCHMARKS.md
 * "Memory"): ViT-T batch 8 measured 0.75 GiB distinct peak (estimate 0.77), with `--remat` 0.60 (0.60);
 * ViT-B batch 2 measured 3.42 (3.45). An estimate, not a bound: fragmentation of the wasm heap comes on top.
 *
 * @module
 */
import type { BackendInfo } from "../core/backend.ts";
import type { CaeV2Config, ClipConfig } from "../models/config.ts";
import { gridOf } from "../models/config.ts";

/** Bytes, by part (see the module doc). */
export interface Footprint {
  /** Parameters, AdamW moments, the teacher, the batch. */
  readonly stateBytes: number;
  /** What the optimizer step adds to the state. */
  readonly updateBytes: number;
  /** What the student's forward and backward passes add. */
  readonly activationBytes: number;
  /** What the teacher's forward pass adds. */
  readonly teacherBytes: number;
  /** `stateBytes + max(updateBytes, activationBytes, teacherBytes)`. */
  readonly peakBytes: number;
  /** The largest single tensor of the step (what one buffer binding must hold on WebGPU). */
  readonly largestTensorBytes: number;
}

const F32 = 4;

/** Parameters of the student (encoder, projection, mask token, regressor, head). */
export const studentParamCount = (c: CaeV2Config): number => {
  const d = c.dim, r = c.regressorDim, h = c.mlpRatio;
  const patch = c.patchSize * c.patchSize * 3 * d + d;
  const block = 2 * 2 * d + (3 * d * d + 2 * d) + (d * d + d) + 2 * d + (d * h * d + h * d) + (h * d * d + d);
  const encoder = patch + d + c.depth * block + 2 * d;
  const projection = r === d ? 0 : d * r + r + 2 * r;
  const rblock = 4 * 2 * r + (4 * r * r + 2 * r + r) + 2 * r + (r * h * r + h * r) + (h * r * r + r);
  return encoder + projection + r + c.regressorDepth * rblock + 2 * r + r * c.outDim + c.outDim;
};

/** Parameters of the CLIP teacher. */
export const teacherParamCount = (c: ClipConfig): number => {
  const { numPatches } = gridOf(c);
  const w = c.width;
  const block = 4 * w + (3 * w * w + 3 * w) + (w * w + w) + (4 * w * w + 4 * w) + (4 * w * w + w);
  return c.patchSize * c.patchSize * 3 * w + w + (1 + numPatches) * w + 4 * w + c.layers * block +
    w * c.outDim;
};

/** What one step holds at its peak, for micro-batches of `batch` images with `numMasked` masked patches. */
export const stepFootprint = (
  student: CaeV2Config,
  teacher: ClipConfig,
  batch: number,
  numMasked: number,
  remat: boolean,
): Footprint => {
  const p = studentParamCount(student), tp = teacherParamCount(teacher);
  const { numPatches } = gridOf(student);
  const n = 1 + numPatches - numMasked, d = student.dim, r = student.regressorDim;
  const tokens = batch * n * d * F32; // one [B, N, D]
  const perBlock = 26 * tokens;
  const probs = batch * student.heads * n * n * F32;
  const encoder = remat ? student.depth * tokens + perBlock : student.depth * perBlock;
  const nk = numPatches, nq = numMasked;
  const regressor = student.regressorDepth *
    (18 * batch * nq * r * F32 + 6 * batch * nk * r * F32 +
      3 * batch * student.regressorHeads * nq * nk * F32);
  const head = 6 * batch * (1 + numPatches) * Math.max(r, student.outDim) * F32;
  const activationBytes = encoder + 3 * probs + regressor + head;
  const t = gridOf(teacher).numPatches + 1, w = teacher.width;
  const teacherBytes = batch * t * F32 * (36 * w) + 3 * batch * teacher.heads * t * t * F32;
  // Gradients, new moments and updates (lib/optim/fused_adamw.ts leafwise; lib/train/step.ts frees the
  // gradients before the new parameters are made), plus one leaf's temporaries.
  const updateBytes = 4.1 * p * F32 + 12 * student.mlpRatio * d * d * F32;
  const stateBytes = (3 * p + tp) * F32 + batch * (student.imageSize ** 2 * 3 * 2) * F32;
  const largestTensorBytes = Math.max(
    probs,
    batch * teacher.heads * t * t * F32,
    batch * t * 4 * w * F32,
    batch * n * student.mlpRatio * d * F32,
    4 * d * student.mlpRatio * d,
  );
  return {
    stateBytes,
    updateBytes,
    activationBytes,
    teacherBytes,
    peakBytes: stateBytes + Math.max(updateBytes, activationBytes, teacherBytes),
    largestTensorBytes,
  };
};

/** What a backend can hold. */
export interface BackendLimits {
  /** The backend's name, for messages. */
  readonly backend: string;
  /** All tensor data together (the wasm heap), or undefined where no limit is known (cpu, the GPU). */
  readonly totalBytes?: number;
  /** One tensor (WebGPU's `maxStorageBufferBindingSize`), or undefined. */
  readonly tensorBytes?: number;
}

/** The wasm heap of tfjs-backend-wasm 4.22 grows to 4 GiB less 64 KiB (emscripten `getHeapMax`). */
export const WASM_HEAP_BYTES = 4294901760;

/** The limits of the backend `info` describes: the wasm heap, WebGPU's largest binding, none on cpu. */
export const backendLimits = (info: BackendInfo): BackendLimits => ({
  backend: info.name,
  totalBytes: info.name === "wasm" ? WASM_HEAP_BYTES : undefined,
  tensorBytes: info.name === "webgpu" ? info.limits?.maxStorageBufferBindingSize : undefined,
});

const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;

/**
 * Undefined when the step fits, else a message for people: the estimate, the limit, what to change.
 * A step is refused when its estimate exceeds 90% of the wasm heap (fragmentation takes the rest), or
 * when one tensor exceeds a WebGPU binding.
 */
export const checkFits = (
  f: Footprint,
  limits: BackendLimits,
  remat: boolean,
  batchFlag = "--batch-size",
): string | undefined => {
  const fixes = [
    `a smaller ${batchFlag}${
      batchFlag === "--batch-size" ? " (with --accumulate N to keep the total batch)" : ""
    }`,
    ...(remat ? [] : ["--remat (recompute each block in the backward pass)"]),
  ];
  if (limits.totalBytes !== undefined && f.peakBytes > 0.9 * limits.totalBytes) {
    return `this model and batch need about ${gib(f.peakBytes)} of tensor memory (estimate: state ${
      gib(f.stateBytes)
    }, update ${gib(f.updateBytes)}, activations ${gib(f.activationBytes)}, teacher ${
      gib(f.teacherBytes)
    }), more than the ${limits.backend} backend can hold (${
      gib(limits.totalBytes)
    }, of which about 90% is usable). ` +
      `Use ${
        [...fixes, ...(limits.backend === "wasm" ? ["--backend cpu (no heap limit, slower)"] : [])].join(
          ", or ",
        )
      }`;
  }
  if (limits.tensorBytes !== undefined && f.largestTensorBytes > limits.tensorBytes) {
    return `the largest tensor of this step needs about ${
      gib(f.largestTensorBytes)
    }, more than one ${limits.backend} ` +
      `buffer binding holds (${gib(limits.tensorBytes)}). Use ${fixes[0]}`;
  }
  return undefined;
};
