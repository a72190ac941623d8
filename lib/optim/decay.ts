/**
 * Decoupled weight decay (Loshchilov & Hutter 2019) as a gradient transformation: `u + rate * p`, placed
 * before the learning-rate scaling so that the step is `-lr * (adam + rate * p)` on the OLD params,
 * which is PyTorch AdamW's `p *= 1 - lr * wd` followed by the Adam step.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { type Params, type Tensor, zipTree } from "../core/tree.ts";
import type { Schedule } from "./schedule.ts";
import { assertSameNames, type CountState, type GradientTransformation, tidy, valueAt } from "./transform.ts";

/** Which parameters decay: `true` = decay. Receives the dotted name (`encoder.blocks.0.attn.qkv.weight`). */
export type DecayMask = (name: string, x: Tensor) => boolean;

/**
 * The official CAE rule (`get_parameter_groups` in the official `optim_factory.py`, from BEiT): no decay
 * for 1-D tensors (LayerNorm weights and biases, q/v biases, layer-scale gammas) and for names ending in
 * `.bias`; everything else decays.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { officialDecayMask } from "./decay.ts";
 * await tf.setBackend("cpu");
 * if (officialDecayMask("encoder.norm.weight", tf.ones([4]))) throw new Error("1-D decays");
 * if (!officialDecayMask("encoder.blocks.0.mlp.fc1.weight", tf.ones([8, 4]))) throw new Error("no decay");
 * ```
 */
export const officialDecayMask: DecayMask = (name: string, x: Tensor): boolean =>
  x.rank !== 1 && !name.endsWith(".bias");

/** Decays every parameter (optax's default when no mask is given). */
export const decayAll: DecayMask = () => true;

/**
 * Adds `rate * params` to the updates where `mask` is true. `rate` may be a schedule (the official loop
 * also schedules the weight decay, constant 0.05 by default), read at the number of updates so far.
 */
export const addDecayedWeights = (
  rate: number | Schedule,
  mask: DecayMask = decayAll,
): GradientTransformation<CountState> => ({
  init: () => ({ count: 0 }),
  update: (updates: Params, state, params) => {
    assertSameNames("addDecayedWeights.update", updates, "updates", params, "params");
    return tidy(() => {
      const r = valueAt(rate, state.count);
      const out = zipTree(
        updates,
        params,
        // One scope per tensor: the product goes before the next leaf's is made.
        (u, p, name) => r !== 0 && mask(name, p) ? tf.tidy(() => tf.add(u, tf.mul(p, r))) : tf.clone(u),
      );
      return [out, { count: state.count + 1 }] as const;
    });
  },
});
