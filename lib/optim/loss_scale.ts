/**
 * Dynamic loss scaling for `--precision f16` (as PyTorch's `torch.amp.GradScaler` and jmp's
 * `DynamicLossScale`): the loss is multiplied by `scale` before the backward pass, so that gradients too
 * small for f16 (below 6e-8, or 6e-5 without subnormals) survive the f16 products, and the gradients are
 * divided by it before the update. A step whose gradients are not finite overflowed f16 somewhere: its
 * update is skipped and the scale halved; after `growthInterval` finite steps in a row the scale doubles.
 *
 * The state is three host numbers, updated by {@link nextLossScale} from the finiteness the training loop
 * reads back with its metrics each step (no extra device read); it is saved in checkpoints so a resumed
 * run scales exactly as an uninterrupted one.
 *
 * @module
 */

/** The loss scale between steps. */
export interface LossScale {
  /** What the loss is multiplied by. */
  readonly scale: number;
  /** Finite steps since the scale last changed. */
  readonly good: number;
  /** Steps skipped so far in the run (non-finite gradients). */
  readonly skipped: number;
  /** Steps skipped in a row up to now (0 after a finite one). */
  readonly inARow: number;
}

/** How the scale moves (defaults: PyTorch's GradScaler). */
export interface LossScaleConfig {
  /** First scale (2^16). */
  readonly initial: number;
  /** Finite steps before the scale grows (2000). */
  readonly growthInterval: number;
  /** Growth on a run of finite steps, and the divisor on an overflow (2). */
  readonly factor: number;
  /** Skips in a row after which the run stops: the overflow is not the scale's (30: 2^16 / 2^30). */
  readonly maxSkipsInARow: number;
}

/** PyTorch GradScaler's defaults (init_scale 2^16, growth_interval 2000, factors 2 and 0.5). */
export const DEFAULT_LOSS_SCALE: LossScaleConfig = {
  initial: 2 ** 16,
  growthInterval: 2000,
  factor: 2,
  maxSkipsInARow: 30,
};

/** The scale a run starts with. */
export const initialLossScale = (cfg: LossScaleConfig = DEFAULT_LOSS_SCALE): LossScale => ({
  scale: cfg.initial,
  good: 0,
  skipped: 0,
  inARow: 0,
});

/**
 * The scale after a step whose gradients were (`finite`) or were not finite.
 *
 * @example
 * ```ts
 * import { initialLossScale, nextLossScale } from "./loss_scale.ts";
 * const after = nextLossScale(initialLossScale(), false);
 * if (after.scale !== 2 ** 15 || after.skipped !== 1) throw new Error("unexpected");
 * ```
 */
export const nextLossScale = (
  ls: LossScale,
  finite: boolean,
  cfg: LossScaleConfig = DEFAULT_LOSS_SCALE,
): LossScale => {
  if (!finite) {
    return { scale: ls.scale / cfg.factor, good: 0, skipped: ls.skipped + 1, inARow: ls.inARow + 1 };
  }
  const good = ls.good + 1;
  return good >= cfg.growthInterval
    ? { scale: ls.scale * cfg.factor, good: 0, skipped: ls.skipped, inARow: 0 }
    : { scale: ls.scale, good, skipped: ls.skipped, inARow: 0 };
};
