/**
 * The learning-rate policy of a pretraining run: its peak (the linear scaling rule anchored at the official
 * runs, or the `micro` default), its length in optimizer steps and its warmup, and the note a run logs when
 * `--min-lr` is above the peak. `lib/train/pretrain.ts` builds its cosine schedule (lib/optim/schedule.ts)
 * from these.
 *
 * Official settings (github.com/Atten4Vis/CAE, project/CAEv2/scripts/caev2_{tiny,small,base}_300e.sh and
 * tools/run_pretraining.py): batch 256 per GPU on 8 GPUs = 2048 in total, `--lr 1.5e-3` used as given
 * (run_pretraining.py applies no batch scaling), min lr 1e-5, warmup 10 of 300 epochs.
 *
 * @module
 */
import { E } from "../deps.ts";
import type { PretrainConfig } from "../config/pretrain.ts";

/** Peak learning rate of the official CAE v2 runs (scripts: `--lr 1.5e-3`) ... */
export const OFFICIAL_LR = 1.5e-3;
/** ... at this total batch (256 per GPU x 8 GPUs). */
export const OFFICIAL_BATCH = 2048;
/** Peak learning rate of `micro` runs when none is given (a local choice, not the paper's). */
export const MICRO_LR = 1e-3;
/** The batch `--blr` is per (MAE's and CAE's `lr = blr * total batch / 256`). */
export const BLR_BATCH = 256;

/** Images per optimizer step. */
export const totalBatch = (cfg: PretrainConfig): number => cfg.batchSize * cfg.accumulate;

/**
 * The peak learning rate: `cfg.lr` when given; `cfg.blr x total batch / 256` when `blr` is (MAE's and CAE's
 * `--blr`); otherwise the linear scaling rule anchored at the official point, lr = 1.5e-3 x (batchSize x
 * accumulate) / 2048 (= 1.875e-4 per 256 images; the official pretraining script uses its `--lr` as is,
 * only its linear-probing script scales `blr x batch / 256`). `micro` runs default to `MICRO_LR`: at batch
 * 16 the rule would give 1.2e-5, below `minLr`, and a 150-step run would not move. Pass the config with the
 * global batch (`batchSize` x ranks) under data-parallel training.
 */
export const peakLr = (cfg: PretrainConfig): number =>
  cfg.lr ??
    (cfg.blr !== undefined
      ? (cfg.blr * totalBatch(cfg)) / BLR_BATCH
      : cfg.model === "micro"
      ? MICRO_LR
      : (OFFICIAL_LR * cfg.batchSize * cfg.accumulate) / OFFICIAL_BATCH);

/**
 * Where {@link peakLr} comes from, in words with the numbers: `--lr 0.002`, `--blr 0.00015 x total batch
 * 4096 / 256`, `the micro default, 0.001`, `0.0015 x total batch 64 / 2048`.
 */
export const lrRule = (cfg: PretrainConfig): string =>
  cfg.lr !== undefined
    ? `--lr ${cfg.lr}`
    : cfg.blr !== undefined
    ? `--blr ${cfg.blr} x total batch ${totalBatch(cfg)} / ${BLR_BATCH}`
    : cfg.model === "micro"
    ? `the micro default, ${MICRO_LR}`
    : `${OFFICIAL_LR} x total batch ${totalBatch(cfg)} / ${OFFICIAL_BATCH}`;

/**
 * A line for the run's log when `--min-lr` is above the peak learning rate, else undefined. Small batches
 * under the scaling rule peak low (`--model tiny --batch-size 4`: 1.5e-3 x 4 / 2048 = 2.9e-6, below the
 * official min lr 1e-5); the run goes ahead as the official code's would (its `cosine_scheduler` applies the
 * formula whatever the order of the two), so after the warmup the lr rises from the peak to `--min-lr`.
 * This says so once, with the flags that change it.
 */
export const lrScheduleNote = (cfg: PretrainConfig): string | undefined => {
  const peak = peakLr(cfg);
  if (cfg.minLr <= peak) return undefined;
  const from = cfg.lr !== undefined || cfg.blr !== undefined || cfg.model === "micro"
    ? lrRule(cfg)
    : `${OFFICIAL_LR} x --batch-size ${cfg.batchSize} x --accumulate ${cfg.accumulate} / ${OFFICIAL_BATCH}`;
  return `note: --min-lr ${cfg.minLr} is above the peak learning rate ${peak} (${from}): after the warmup ` +
    "the cosine rises from the peak to --min-lr, as the official scheduler does; for a decaying schedule " +
    "set --min-lr below the peak (e.g. --min-lr 0) or raise it with --lr";
};

/**
 * Optimizer steps of the run: `steps` when given, else `epochs` x the steps per epoch of a data set of
 * `datasetSize` images (the last incomplete step of an epoch is dropped, as the official loader does).
 */
export const totalSteps = (cfg: PretrainConfig, datasetSize?: number): E.Either<string, number> => {
  if (cfg.steps !== undefined) return E.right(cfg.steps);
  if (cfg.epochs === undefined) return E.left("set --steps or --epochs");
  if (datasetSize === undefined || !Number.isFinite(datasetSize)) {
    return E.left(`--epochs ${cfg.epochs} needs a finite data set (${cfg.data} has no size): use --steps`);
  }
  const perEpoch = Math.floor(datasetSize / totalBatch(cfg));
  if (perEpoch < 1) {
    return E.left(
      `the data set (${datasetSize} images) is smaller than one step (${totalBatch(cfg)} images)`,
    );
  }
  return E.right(cfg.epochs * perEpoch);
};

/**
 * Warmup steps of a run of `steps` optimizer steps: `cfg.warmupSteps` when given; `cfg.warmupEpochs` x the
 * steps per epoch (`steps / epochs`) for a run measured in epochs (lib/config/pretrain.ts refuses
 * `warmupEpochs` in a run of `steps`), rounded; else 1/30 of the run (official: 10 of 300 epochs).
 */
export const warmupStepsOf = (cfg: PretrainConfig, steps: number): number =>
  Math.min(
    steps,
    cfg.warmupSteps ??
      (cfg.warmupEpochs !== undefined && cfg.steps === undefined && cfg.epochs !== undefined
        ? Math.round((cfg.warmupEpochs * steps) / cfg.epochs)
        : Math.round(steps / 30)),
  );
