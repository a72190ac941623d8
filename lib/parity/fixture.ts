/**
 * Reads a parity fixture (format: tests/fixtures/README.md, computed in float64 by the official PyTorch
 * modules) into project configs, parameters and inputs. Missing or misshapen tensors fail with the
 * tensor's name, the expected and the found shape.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { type Key } from "../core/random.ts";
import { type HostTensor, readSafetensors, toTensor } from "../core/safetensors.ts";
import type { CaeV2Config, ClipConfig } from "../models/config.ts";
import { caev2Init, type CaeV2Params } from "../models/caev2.ts";
import { clipInit, type ClipParams } from "../models/clip.ts";
import { clipOpenAiName, fromOfficial, hostSource, studentOfficialName } from "../models/names.ts";
import { disposeTree } from "../core/tree.ts";
import { adamw, type AdamWState } from "../optim/adamw.ts";
import type { DecayMask } from "../optim/decay.ts";
import type { GradientTransformation } from "../optim/transform.ts";

/** The fixture's `optimizer` metadata: PyTorch AdamW's arguments, with the gradient clip. */
export interface FixtureOptimizer {
  readonly lr: number;
  readonly betas: readonly [number, number];
  readonly eps: number;
  readonly weight_decay: number;
  readonly clip_grad: number;
}

/** This library's AdamW with the fixture's PyTorch arguments (`clip`: the global-norm clip; `mask`: decay). */
export const fixtureAdamw = (
  o: FixtureOptimizer,
  clip: number,
  mask?: DecayMask,
): GradientTransformation<AdamWState> =>
  adamw({ lr: o.lr, b1: o.betas[0], b2: o.betas[1], eps: o.eps, weightDecay: o.weight_decay, clip, mask });

/** The fixture's `config` metadata. */
export interface FixtureConfig {
  readonly img: number;
  readonly patch: number;
  readonly dim: number;
  readonly depth: number;
  readonly heads: number;
  readonly rdepth: number;
  readonly rdim: number;
  readonly rheads: number;
  readonly out: number;
  readonly n_mask: number;
  readonly batch: number;
  readonly clip: number;
}

/** A loaded fixture: configs, float32 params and inputs, and the float64 references by name. */
export interface Fixture {
  readonly file: string;
  readonly config: FixtureConfig;
  readonly student: CaeV2Config;
  readonly teacher: ClipConfig;
  readonly studentParams: CaeV2Params;
  readonly teacherParams: ClipParams;
  /** `[B, H, W, 3]`, converted from the fixture's `[B, 3, H, W]`. */
  readonly studentImages: tf.Tensor4D;
  readonly teacherImages: tf.Tensor4D;
  /** `[B * L]`, 1 = masked. */
  readonly mask: Uint8Array;
  readonly unused: readonly string[];
  readonly zeroGradient: readonly string[];
  readonly optimizer: FixtureOptimizer;
  /** Reference tensors (`output.*`, `grad.*`, `step1.*`, ...) as float64 host data. */
  readonly refs: Readonly<Record<string, HostTensor>>;
}

const need = (file: string, tensors: Record<string, HostTensor>, name: string, shape?: readonly number[]) => {
  const t = tensors[name];
  if (!t) throw new Error(`${file}: missing tensor "${name}"`);
  if (shape && (t.shape.length !== shape.length || t.shape.some((v, i) => v !== shape[i]))) {
    throw new Error(
      `${file}: tensor "${name}" has shape [${t.shape.join(", ")}], expected [${shape.join(", ")}]`,
    );
  }
  return t;
};

const nchwToNhwc = (h: HostTensor) => tf.tidy(() => tf.transpose(toTensor(h), [0, 2, 3, 1]) as tf.Tensor4D);

/** Loads a fixture file. The caller disposes with {@link disposeFixture}. */
export const loadFixture = async (file: string): Promise<Fixture> => {
  const { metadata, tensors } = await readSafetensors(file);
  if (!metadata.config) {
    throw new Error(`${file}: no "config" in the safetensors metadata; is this a parity fixture?`);
  }
  const config = JSON.parse(metadata.config) as FixtureConfig;
  const optimizer = JSON.parse(metadata.optimizer ?? "{}");
  const L = (config.img / config.patch) ** 2;
  const teacherWidth = need(file, tensors, "teacher.visual.class_embedding").shape[0];
  const teacherLayers =
    Object.keys(tensors).filter((n) => /^teacher\.visual\.transformer\.resblocks\.\d+\.ln_1\.weight$/.test(n))
      .length;
  const student: CaeV2Config = {
    imageSize: config.img,
    patchSize: config.patch,
    dim: config.dim,
    depth: config.depth,
    heads: config.heads,
    mlpRatio: 4,
    regressorDim: config.rdim,
    regressorDepth: config.rdepth,
    regressorHeads: config.rheads,
    outDim: config.out,
    dropPath: 0,
    layerScale: 0.1,
    eps: 1e-6,
  };
  const teacher: ClipConfig = {
    imageSize: config.img,
    patchSize: config.patch,
    width: teacherWidth,
    layers: teacherLayers,
    // The fixture's small CLIP tower uses the student's head count (metadata names no teacher heads).
    heads: config.heads,
    outDim: config.out,
    eps: 1e-5,
  };
  const k: Key = [0, 0];
  const sLike = caev2Init(k, student), tLike = clipInit(k, teacher);
  const cache: tf.Tensor[] = [];
  const get = hostSource(tensors, cache);
  const source = (prefix: string) => (name: string) => get(prefix + name);
  try {
    const studentParams = fromOfficial(sLike, source("student."), studentOfficialName, file);
    const teacherParams = fromOfficial(tLike, source("teacher.visual."), clipOpenAiName, file);
    const maskH = need(file, tensors, "input.mask", [config.batch, L]);
    const mask = Uint8Array.from(maskH.data, (v) => (v ? 1 : 0));
    const imgShape = [config.batch, 3, config.img, config.img];
    return {
      file,
      config,
      student,
      teacher,
      studentParams,
      teacherParams,
      studentImages: nchwToNhwc(need(file, tensors, "input.student_images", imgShape)),
      teacherImages: nchwToNhwc(need(file, tensors, "input.teacher_images", imgShape)),
      mask,
      unused: JSON.parse(metadata.unused_parameters ?? "[]"),
      zeroGradient: JSON.parse(metadata.zero_gradient_parameters ?? "[]"),
      optimizer,
      refs: tensors,
    };
  } finally {
    cache.forEach((t) => t.dispose());
    disposeTree(sLike, tLike);
  }
};

/** Releases a fixture's tensors. */
export const disposeFixture = (f: Fixture): void => {
  disposeTree(f.studentParams, f.teacherParams);
  f.studentImages.dispose();
  f.teacherImages.dispose();
};
