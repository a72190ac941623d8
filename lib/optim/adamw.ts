/**
 * AdamW as the official CAE v2 run uses it: global-norm clipping, Adam, decoupled weight decay with the
 * official no-decay rule, learning rate (or schedule). Nothing but a chain (optax `alias.py`).
 *
 * @module
 */
import { type AdamState, scaleByAdam } from "./adam.ts";
import { clipByGlobalNorm } from "./clip.ts";
import { addDecayedWeights, type DecayMask, officialDecayMask } from "./decay.ts";
import { scaleByLearningRate } from "./lr.ts";
import type { Schedule } from "./schedule.ts";
import {
  chain,
  type CountState,
  type EmptyState,
  type GradientTransformation,
  identity,
} from "./transform.ts";

/** AdamW's options. Defaults: PyTorch's betas and eps, CAE's weight decay 0.05 and no-decay rule. */
export interface AdamWOptions {
  /** Learning rate or schedule (read at the number of updates so far). */
  readonly lr: number | Schedule;
  /** Decay of the first moment (0.9). */
  readonly b1?: number;
  /** Decay of the second moment (0.999). */
  readonly b2?: number;
  /** Added to the root of the second moment (1e-8). */
  readonly eps?: number;
  /** Decoupled weight decay, multiplied by the lr like PyTorch's AdamW (default 0.05). */
  readonly weightDecay?: number | Schedule;
  /** Which params decay (default {@link officialDecayMask}: not 1-D tensors, not `.bias`). */
  readonly mask?: DecayMask;
  /** Global-norm clip applied to the raw gradients first (CAE v2: 3.0); none when absent. */
  readonly clip?: number;
}

/** AdamW's state: [clip (or identity), Adam, weight decay count, lr count]. */
export type AdamWState = readonly [EmptyState, AdamState, CountState, CountState];

/**
 * `chain(clipByGlobalNorm(clip) | identity, scaleByAdam, addDecayedWeights(wd, mask),
 * scaleByLearningRate(lr))`: the update is `-lr * (adam(clip(g)) + wd * p)`, numerically PyTorch's
 * `AdamW.step` after `clip_grad_norm_` (decay on the old params, then the bias-corrected Adam step).
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { adamw } from "./adamw.ts";
 * import { applyUpdates } from "./apply.ts";
 * await tf.setBackend("cpu");
 * const opt = adamw({ lr: 0.1, clip: 3 });
 * const params = { w: tf.tensor2d([[1, 2]]) };
 * const [updates, state] = opt.update({ w: tf.tensor2d([[0.5, -0.5]]) }, opt.init(params), params);
 * const next = applyUpdates(params, updates);
 * if (state[1].count !== 1) throw new Error("unexpected");
 * ```
 */
export const adamw = (opts: AdamWOptions): GradientTransformation<AdamWState> =>
  chain(
    opts.clip === undefined ? identity() : clipByGlobalNorm(opts.clip),
    scaleByAdam({ b1: opts.b1, b2: opts.b2, eps: opts.eps }),
    addDecayedWeights(opts.weightDecay ?? 0.05, opts.mask ?? officialDecayMask),
    scaleByLearningRate(opts.lr),
  );

/** Adam without weight decay (optax `adam`): `chain(scaleByAdam, scaleByLearningRate)`. */
export const adam = (
  opts: { readonly lr: number | Schedule; readonly b1?: number; readonly b2?: number; readonly eps?: number },
): GradientTransformation<readonly [AdamState, CountState]> =>
  chain(scaleByAdam({ b1: opts.b1, b2: opts.b2, eps: opts.eps }), scaleByLearningRate(opts.lr));
