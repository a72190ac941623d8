/**
 * End-to-end fine-tuning of a pretrained encoder for classification, as the official CAE v2 scripts run
 * `tools/run_class_finetuning.py` (BEiT's): the encoder without its final norm, the patch tokens
 * mean-pooled (cls excluded) through `fc_norm` (a LayerNorm initialised *from the pretrained final norm*:
 * the official loader renames `norm.*` to `fc_norm.*`), a Linear head (N(0, 0.02^2) times `init_scale`
 * 0.001), drop path, soft-target cross-entropy over mixup/CutMix targets with label smoothing, and AdamW
 * with layer-wise lr decay, weight decay 0.05 (not on 1-D tensors, biases, cls), no clipping, and the
 * per-iteration cosine schedule from 0 (warmup) to the peak and down to `min_lr` 1e-6.
 *
 * Official settings per preset (project/CAEv2/scripts/caev2_{tiny,small,base}_300e.sh; L from CAE v1's
 * scripts/cae_large_finetune.sh), at their total batch (per-GPU batch x update_freq x GPUs); the lr is
 * used as given, not rescaled by the script:
 *
 * | preset | batch | lr   | epochs | warmup | drop path | layer decay | smoothing | mixup | cutmix |
 * | ------ | ----- | ---- | ------ | ------ | --------- | ----------- | --------- | ----- | ------ |
 * | tiny   | 1024  | 4e-3 | 100    | 5      | 0.0       | 0.85        | 0.0       | 0.2   | 0.0    |
 * | small  | 1024  | 4e-4 | 200    | 20     | 0.1       | 0.75        | 0.1       | 0.8   | 1.0    |
 * | base   | 1024  | 2e-4 | 100    | 5      | 0.1       | 0.75        | 0.1       | 0.8   | 1.0    |
 * | large  | 4096  | 2e-3 | 50     | 5      | 0.2       | 0.75        | 0.1       | 0.8   | 1.0    |
 *
 * `micro` is a local choice for CPU runs. Not reproduced here: RandAugment (`rand-m9-mstd0.5-inc1`) and
 * random erasing (0.25) of the official training transform; the loader's pretraining augmentation
 * (colour jitter 0.4, flip, RandomResizedCrop with scale 0.4..1) stands in for them.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { type Key, split } from "../core/random.ts";
import { flatten, mapTree, type Params, type Tensor3D } from "../core/tree.ts";
import type { CaeV2Config } from "../models/config.ts";
import { block, type BlockParams } from "../models/encoder.ts";
import type { PresetName } from "../models/presets.ts";
import { dropPathRates } from "../nn/drop_path.ts";
import { linear, type LinearParams } from "../nn/linear.ts";
import { layerNorm, type LayerNormParams } from "../nn/norm.ts";
import { patchEmbed } from "../nn/patch_embed.ts";
import { type AdamState, scaleByAdam } from "../optim/adam.ts";
import { addDecayedWeights } from "../optim/decay.ts";
import { scaleByLearningRate } from "../optim/lr.ts";
import { cosineSchedule, type Schedule } from "../optim/schedule.ts";
import { chain, type CountState, type EmptyState, type GradientTransformation } from "../optim/transform.ts";
import type { EncoderModel } from "../models/encoder_model.ts";
import { linearHeadInit } from "./heads.ts";
import { finetuneDecayMask, layerScaleOf, scaleByParamScale } from "../optim/layer_decay.ts";

/** Fine-tuning settings of a preset (see the module table). */
export interface FinetuneSettings {
  /** Total batch of the official run. */
  readonly batchSize: number;
  /** Peak lr at that batch. */
  readonly lr: number;
  /** Final lr of the cosine (official 1e-6). */
  readonly minLr: number;
  /** Epochs. */
  readonly epochs: number;
  /** Linear warmup from 0, in epochs. */
  readonly warmupEpochs: number;
  /** Drop path of the last block, rising linearly from 0. */
  readonly dropPath: number;
  /** Layer-wise lr decay (layer_decay.ts). */
  readonly layerDecay: number;
  /** AdamW decoupled weight decay. */
  readonly weightDecay: number;
  /** Label smoothing. */
  readonly smoothing: number;
  /** Mixup Beta alpha (0: off). */
  readonly mixup: number;
  /** CutMix Beta alpha (0: off). */
  readonly cutmix: number;
  /** Head init multiplier (official `--init_scale` 0.001). */
  readonly initScale: number;
}

const common = { minLr: 1e-6, weightDecay: 0.05, initScale: 0.001 };

/** The official settings per preset (`micro`: a local choice for synthetic data on a CPU). */
export const finetuneSettings: Readonly<Record<PresetName, FinetuneSettings>> = {
  micro: {
    ...common,
    batchSize: 64,
    lr: 1e-3,
    epochs: 10,
    warmupEpochs: 1,
    dropPath: 0.1,
    layerDecay: 0.75,
    smoothing: 0.1,
    mixup: 0.8,
    cutmix: 1.0,
  },
  tiny: {
    ...common,
    batchSize: 1024,
    lr: 4e-3,
    epochs: 100,
    warmupEpochs: 5,
    dropPath: 0,
    layerDecay: 0.85,
    smoothing: 0,
    mixup: 0.2,
    cutmix: 0,
  },
  small: {
    ...common,
    batchSize: 1024,
    lr: 4e-4,
    epochs: 200,
    warmupEpochs: 20,
    dropPath: 0.1,
    layerDecay: 0.75,
    smoothing: 0.1,
    mixup: 0.8,
    cutmix: 1.0,
  },
  base: {
    ...common,
    batchSize: 1024,
    lr: 2e-4,
    epochs: 100,
    warmupEpochs: 5,
    dropPath: 0.1,
    layerDecay: 0.75,
    smoothing: 0.1,
    mixup: 0.8,
    cutmix: 1.0,
  },
  large: {
    ...common,
    batchSize: 4096,
    lr: 2e-3,
    epochs: 50,
    warmupEpochs: 5,
    dropPath: 0.2,
    layerDecay: 0.75,
    smoothing: 0.1,
    mixup: 0.8,
    cutmix: 1.0,
  },
};

/** The classifier being fine-tuned (official `VisionTransformer` with `use_mean_pooling`). */
export type ClassifierParams = {
  readonly patchEmbed: LinearParams;
  /** `[1, 1, D]`: the pretrained cls token. */
  readonly clsToken: Tensor3D;
  readonly blocks: Readonly<Record<string, BlockParams>>;
  /** LayerNorm after mean pooling; starts as the pretrained encoder's final norm. */
  readonly fcNorm: LayerNormParams;
  readonly head: LinearParams;
};

/**
 * The classifier from a pretrained encoder (its tensors are copied; the encoder stays usable) and a new
 * head `[D] -> [numClasses]`: N(0, 0.02^2) then times `initScale` (official `trunc_normal_(std=.02)`, whose
 * +-2 cut is 100 standard deviations out, then `head.weight.data.mul_(init_scale)`).
 */
export const classifierInit = (
  k: Key,
  enc: Pick<EncoderModel, "params" | "config">,
  numClasses: number,
  initScale = 0.001,
): ClassifierParams => {
  const copy = <P extends Params>(p: P): P => mapTree(p, (x) => tf.clone(x));
  const h = linearHeadInit(k, enc.config.dim, numClasses, 0.02);
  const head = {
    kernel: tf.mul(h.kernel, initScale) as tf.Tensor2D,
    bias: tf.zerosLike(h.bias!) as tf.Tensor1D,
  };
  tf.dispose([h.kernel, h.bias!]);
  return {
    patchEmbed: copy(enc.params.patchEmbed),
    clsToken: tf.clone(enc.params.clsToken),
    blocks: copy(enc.params.blocks),
    fcNorm: copy(enc.params.norm),
    head,
  };
};

/** Training context: drop path needs a key while training. */
export interface ClassifierCtx {
  /** Training mode: drop path on. */
  readonly training: boolean;
  /** Key of the drop-path draws (required when training with drop path). */
  readonly key?: Key;
}

/**
 * `images: [B, H, W, 3]` -> logits `[B, C]`: patch embedding + sin-cos positions (`pos: [1, 1 + L, D]`,
 * cls row zero), cls prepended, the blocks with drop path rising linearly to `config.dropPath`, the mean of
 * the patch tokens, `fcNorm`, the head. No final norm before pooling (official `norm = Identity` when
 * `use_mean_pooling`).
 */
export const classifierApply = (
  p: ClassifierParams,
  c: CaeV2Config,
  pos: tf.Tensor3D,
  images: tf.Tensor4D,
  ctx: ClassifierCtx,
): tf.Tensor2D => {
  const b = images.shape[0], l = pos.shape[1] - 1;
  const tokens = tf.add(
    patchEmbed(p.patchEmbed, images, c.patchSize),
    tf.slice(pos, [0, 1, 0], [1, l, c.dim]),
  );
  let x = tf.concat([tf.broadcastTo(p.clsToken, [b, 1, c.dim]), tokens], 1) as tf.Tensor3D;
  const rates = dropPathRates(c.dropPath, c.depth);
  if (ctx.training && c.dropPath > 0 && ctx.key === undefined) {
    throw new Error("classifierApply: a key is required when training with drop path");
  }
  const keys = ctx.key ? split(ctx.key, c.depth) : [];
  for (let i = 0; i < c.depth; i++) {
    x = block(p.blocks[String(i)], x, c.heads, c.eps, rates[i], { training: ctx.training, key: keys[i] });
  }
  const pooled = tf.mean(tf.slice(x, [0, 1, 0], [b, l, c.dim]), 1);
  return linear(p.head, layerNorm(p.fcNorm, pooled, c.eps)) as tf.Tensor2D;
};

/** The fine-tuning optimizer's state: Adam, weight decay count, layer scales, lr count. */
export type FinetuneOptState = readonly [AdamState, CountState, EmptyState, CountState];

/**
 * `chain(scaleByAdam, addDecayedWeights(wd, finetuneDecayMask), scaleByParamScale(layer decay),
 * scaleByLearningRate(schedule))`: the step `-lr_t * scale(layer) * (adam + wd * p)`, PyTorch AdamW with
 * BEiT's parameter groups (no clipping: `--clip_grad` is unset in the official scripts).
 */
export const finetuneOptimizer = (
  o: {
    readonly lr: Schedule;
    readonly weightDecay: number;
    readonly layerDecay: number;
    readonly depth: number;
  },
): GradientTransformation<FinetuneOptState> =>
  chain(
    scaleByAdam(),
    addDecayedWeights(o.weightDecay, finetuneDecayMask),
    scaleByParamScale(layerScaleOf(o.layerDecay, o.depth)),
    scaleByLearningRate(o.lr),
  );

/**
 * The official per-iteration schedule (CAE `utils.cosine_scheduler`, start_warmup_value 0): linear from 0
 * to `lr` over the warmup, cosine down to `minLr`.
 */
export const finetuneSchedule = (
  o: {
    readonly lr: number;
    readonly minLr: number;
    readonly totalSteps: number;
    readonly warmupSteps: number;
  },
): Schedule =>
  cosineSchedule({ base: o.lr, final: o.minLr, totalSteps: o.totalSteps, warmupSteps: o.warmupSteps });

/** Flat names of a classifier, for messages and tests. */
export const classifierNames = (p: ClassifierParams): string[] => Object.keys(flatten(p));
