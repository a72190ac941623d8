/**
 * Schedules: functions from the number of updates applied so far (0-based) to a value, read on the host
 * once per step (no tensor, no readback).
 *
 * @module
 */

/** A schedule: `step` = number of updates applied so far, 0 for the first update. */
export type Schedule = (step: number) => number;

/** A schedule that always returns `value`. */
export const constantSchedule = (value: number): Schedule => () => value;

/** Options of {@link cosineSchedule}, in iterations (official: `epochs * niter_per_ep`). */
export interface CosineScheduleOptions {
  /** Peak value, reached at the end of the warmup (official `base_value`, e.g. the lr). */
  readonly base: number;
  /** Value the cosine decays towards (official `final_value`, `min_lr`). */
  readonly final: number;
  /** Length of the whole schedule: `epochs * niterPerEpoch`. */
  readonly totalSteps: number;
  /** Warmup length: `warmupEpochs * niterPerEpoch` (0: no warmup). */
  readonly warmupSteps: number;
  /** First warmup value (official `start_warmup_value`, 0 in CAE's pretraining script). */
  readonly warmupStart?: number;
}

const isCount = (n: number) => Number.isInteger(n) && n >= 0;

/**
 * The per-iteration cosine schedule with linear warmup of the official code, value for value
 * (CAE/BEiT/DINO `utils.cosine_scheduler`, github.com/Atten4Vis/CAE `furnace/utils.py`):
 *
 * - `i < W`: `np.linspace(warmupStart, base, W)[i]`, i.e. `warmupStart + i * (base - warmupStart) / (W - 1)`
 *   (and exactly `base` at `i = W - 1`; a single warmup step is `warmupStart`);
 * - `W <= i < T`: `final + 0.5 * (base - final) * (1 + cos(pi * (i - W) / (T - W)))`;
 * - `i >= T`: the last value, held (the official array simply ends there).
 *
 * `final` above `base` is allowed and the formula runs as written, the cosine then rising from `base` to
 * `final`: the official function does not check the order, and a small batch under the lr scaling rule
 * peaks below the official min lr 1e-5 (lib/train/lr_policy.ts `lrScheduleNote` says so in the log).
 *
 * CAE's training loop sets the lr of iteration `it` (0-based) to `schedule[it]` before the update, so the
 * first update uses `schedule(0) = warmupStart`: with warmup, the very first step does not move the
 * weights.
 *
 * @example
 * ```ts
 * import { cosineSchedule } from "./schedule.ts";
 * // CAE v2: 1.5e-3 peak, 1e-5 floor, 10 of 300 epochs warmup, here at 5 iterations per epoch.
 * const lr = cosineSchedule({ base: 1.5e-3, final: 1e-5, totalSteps: 300 * 5, warmupSteps: 10 * 5 });
 * if (lr(0) !== 0 || lr(49) !== 1.5e-3 || lr(50) !== 1.5e-3) throw new Error("unexpected");
 * ```
 */
export const cosineSchedule = (opts: CosineScheduleOptions): Schedule => {
  const { base, final, totalSteps: T, warmupSteps: W, warmupStart = 0 } = opts;
  if (!isCount(T) || T < 1) {
    throw new Error(`cosineSchedule: totalSteps must be a positive integer (epochs * iterations), got ${T}`);
  }
  if (!isCount(W) || W > T) {
    throw new Error(`cosineSchedule: warmupSteps must be an integer in [0, totalSteps = ${T}], got ${W}`);
  }
  for (const [k, v] of [["base", base], ["final", final], ["warmupStart", warmupStart]] as const) {
    if (!Number.isFinite(v)) throw new Error(`cosineSchedule: ${k} must be a finite number, got ${v}`);
  }
  // numpy.linspace: step = (stop - start) / (num - 1); y = i * step + start; y[-1] = stop.
  const warmupDelta = W > 1 ? (base - warmupStart) / (W - 1) : 0;
  const at = (i: number): number => {
    if (i < W) return i === W - 1 && W > 1 ? base : i * warmupDelta + warmupStart;
    return final + 0.5 * (base - final) * (1 + Math.cos(Math.PI * (i - W) / (T - W)));
  };
  return (step) => {
    if (!isCount(step)) throw new Error(`cosineSchedule: step must be a non-negative integer, got ${step}`);
    return at(Math.min(step, T - 1));
  };
};
