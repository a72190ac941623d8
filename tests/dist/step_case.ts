/**
 * The data-parallel step case shared by tests/dist_test.ts (one process, the global batch) and
 * tests/dist/step_rank.ts (one rank of `mpirun -np 2`, its half): a micro student with drop path, a
 * random micro teacher, a global batch of 8 images with masks, 3 steps of AdamW.
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { key, split } from "../../lib/core/random.ts";
import { flatten } from "../../lib/core/tree.ts";
import { caev2Buffers, caev2Init } from "../../lib/models/caev2.ts";
import { clipInit } from "../../lib/models/clip.ts";
import { clipMicro, studentPreset } from "../../lib/models/presets.ts";
import { fusedAdamw } from "../../lib/optim/fused_adamw.ts";
import type { AdamWState } from "../../lib/optim/adamw.ts";
import type { PretrainState, StepBatch, StepConfig } from "../../lib/train/step.ts";
import { randomMask } from "../../lib/bench/step.ts";

export const IMG = 32, PATCH = 8, GLOBAL = 8, STEPS = 3;
const L = (IMG / PATCH) ** 2, MASKED = 6;

/** The model, optimizer and initial state (the same on every rank: every key derives from one seed). */
export const setup = () => {
  const teacher = clipMicro(IMG, PATCH);
  const student = studentPreset("micro", {
    imageSize: IMG,
    patchSize: PATCH,
    outDim: teacher.outDim,
    dropPath: 0.2,
  });
  const [k1, k2, k3] = split(key(21), 3);
  const optimizer = fusedAdamw({ lr: 1e-3, clip: 3 }, "leafwise");
  const params = caev2Init(k1, student);
  const cfg: StepConfig<AdamWState> = {
    student,
    teacher,
    teacherParams: clipInit(k2, teacher),
    buffers: caev2Buffers(student),
    optimizer,
  };
  const state: PretrainState<AdamWState> = { params, opt: optimizer.init(params), step: 0, key: k3 };
  return { cfg, state };
};

/** Rows `offset .. offset + count` of step `step`'s global batch (seeded images and masks). */
export const batchRows = (step: number, offset: number, count: number): StepBatch => {
  const all = tf.randomNormal([GLOBAL, IMG, IMG, 3], 0, 1, "float32", 100 + step) as tf.Tensor4D;
  const images = tf.slice(all, [offset, 0, 0, 0], [count, -1, -1, -1]) as tf.Tensor4D;
  all.dispose();
  const mask = randomMask(key(200 + step), GLOBAL, L, MASKED).slice(offset * L, (offset + count) * L);
  return { studentImages: images, teacherImages: images, mask, rows: { offset, total: GLOBAL } };
};

/** A parameter record as plain numbers, for comparing across processes. */
export const paramValues = async (state: PretrainState<AdamWState>): Promise<Record<string, number[]>> => {
  const out: Record<string, number[]> = {};
  for (const [n, t] of Object.entries(flatten(state.params))) out[n] = [...await t.data()];
  return out;
};
