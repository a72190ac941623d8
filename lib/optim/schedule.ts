/**
 * Schedules: functions from the number of updates applied so far (0-based) to a value, read on the host
 * once per step (no tensor, no readback): constant, the per-iteration cosine of CAE's pretraining and
 * fine-tuning ({@link cosineSchedule}), and the per-epoch half-cycle cosine of the official linear probe
 * ({@link halfCycleCosine}: facebookresearch/mae `util/lr_sched.py`, copied as CAE's
 * `linear_util/lr_sched.py`: linear warmup then a half-cycle cosine, evaluated at the fractional epoch
 * `step / itersPerEpoch` before every update, `engine_finetune.train_one_epoch`).
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

/** Options of {@link halfCycleCosine}, in epochs. */
export interface HalfCycleCosineOptions {
  /** Peak lr (`args.lr`, i.e. `blr * batch / 256` when only blr is given). */
  readonly lr: number;
  /** Final lr (`--min_lr`, 0 in the probe). */
  readonly minLr: number;
  /** Length of the schedule, in epochs. */
  readonly epochs: number;
  /** Linear warmup from 0, in epochs. */
  readonly warmupEpochs: number;
  /** Optimizer steps per epoch (`len(data_loader)`). */
  readonly itersPerEpoch: number;
}

/**
 * `epoch = step / itersPerEpoch`; `lr * epoch / warmup` during warmup, then
 * `minLr + (lr - minLr) / 2 * (1 + cos(pi * (epoch - warmup) / (epochs - warmup)))`. The first update uses
 * lr 0 when there is a warmup, as the official loop does.
 *
 * @example
 * ```ts
 * import { halfCycleCosine } from "./schedule.ts";
 * const s = halfCycleCosine({ lr: 1, minLr: 0, epochs: 10, warmupEpochs: 2, itersPerEpoch: 5 });
 * if (s(0) !== 0 || s(5) !== 0.5 || s(10) !== 1 || Math.abs(s(30) - 0.5) > 1e-12) throw new Error();
 * ```
 */
export const halfCycleCosine = (o: HalfCycleCosineOptions): Schedule => {
  if (!(o.itersPerEpoch >= 1)) {
    throw new Error(`halfCycleCosine: itersPerEpoch must be >= 1, got ${o.itersPerEpoch}`);
  }
  if (!(o.warmupEpochs >= 0 && o.warmupEpochs <= o.epochs)) {
    throw new Error(
      `halfCycleCosine: warmupEpochs must be in [0, epochs = ${o.epochs}], got ${o.warmupEpochs}`,
    );
  }
  return (step) => {
    const epoch = step / o.itersPerEpoch;
    if (epoch < o.warmupEpochs) return (o.lr * epoch) / o.warmupEpochs;
    const span = o.epochs - o.warmupEpochs;
    const t = span > 0 ? Math.min(1, (epoch - o.warmupEpochs) / span) : 1;
    return o.minLr + (o.lr - o.minLr) * 0.5 * (1 + Math.cos(Math.PI * t));
  };
};
