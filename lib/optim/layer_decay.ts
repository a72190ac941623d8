/**
 * Layer-wise learning-rate decay for fine-tuning (BEiT, Bao et al. 2022; CAE `furnace/optim_factory.py`
 * `LayerDecayValueAssigner` and `get_num_layer_for_vit`): parameter group `i` of a depth-`L` ViT trains
 * with `lr * decay^(L + 1 - i)`, where layer 0 is the patch embedding and the cls token (and the fixed
 * positions), block `b` is layer `b + 1`, and everything after the blocks (the pooled norm, the head) is
 * layer `L + 1` with scale 1. The scale multiplies the whole step, weight decay included, because PyTorch
 * AdamW decays by the group's lr (`p *= 1 - lr * wd`).
 *
 * @module
 */
import { tf } from "../deps.ts";
import { mapTree } from "../core/tree.ts";
import type { DecayMask } from "./decay.ts";
import { type EmptyState, type GradientTransformation, tidy } from "./transform.ts";

/** Layer id of a classifier parameter (names of lib/eval/finetune.ts's `ClassifierParams`). */
export const layerIdOf = (name: string, depth: number): number => {
  if (name === "clsToken" || name.startsWith("patchEmbed.")) return 0;
  const m = /^blocks\.(\d+)\./.exec(name);
  return m ? Number(m[1]) + 1 : depth + 1;
};

/** `decay^(depth + 1 - layerId(name))`, the official `assigner.get_scale(get_layer_id(name))`. */
export const layerScaleOf = (decay: number, depth: number) => (name: string): number =>
  decay ** (depth + 1 - layerIdOf(name, depth));

/**
 * The official fine-tuning no-decay rule: 1-D tensors, names ending in `.bias`, and the model's
 * `no_weight_decay()` set (`cls_token`, `pos_embed`; the positions are not parameters here).
 */
export const finetuneDecayMask: DecayMask = (name, x) =>
  x.rank !== 1 && !name.endsWith(".bias") && name !== "clsToken";

/**
 * Multiplies each update by a per-parameter factor read off its name (a layer-decay scale). Stateless;
 * put it between the weight decay and the learning rate.
 */
export const scaleByParamScale = (scaleOf: (name: string) => number): GradientTransformation<EmptyState> => ({
  init: () => ({}),
  update: (updates, state) =>
    [
      tidy(() =>
        mapTree(updates, (u, name) => {
          const s = scaleOf(name);
          return s === 1 ? tf.clone(u) : tf.mul(u, s);
        })
      ),
      state,
    ] as const,
});
