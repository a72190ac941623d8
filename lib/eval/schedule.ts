/**
 * The learning-rate schedule of the official linear probe (facebookresearch/mae `util/lr_sched.py`, copied
 * as CAE's `linear_util/lr_sched.py`): linear warmup then a half-cycle cosine, evaluated at the fractional
 * epoch `step / itersPerEpoch` before every update (`engine_finetune.train_one_epoch`).
 *
 * @module
 */
import type { Schedule } from "../optim/schedule.ts";

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
