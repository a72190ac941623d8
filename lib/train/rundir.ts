/**
 * The run directory of `deno task pretrain`:
 *
 * ```
 * <out>/config.json        the config as resolved from defaults, --config FILE and flags, pretty-printed
 * <out>/resolved.json      what the run derived from it: peak lr, steps, warmup, masked patches, shapes
 * <out>/metrics.jsonl      one JSON object per step (lib/train/metrics.ts)
 * <out>/checkpoints/       step-000123.safetensors + step-000123.json (lib/train/checkpoint.ts)
 * <out>/run.lock           while a process runs it (lib/train/lock.ts)
 * ```
 *
 * Why two files and not a `resolved` block inside config.json: config.json is the run's input, read back
 * as such. `--resume DIR` decodes it as a strict patch of the config (an extra key is refused, and an older
 * toolkit reading a newer run would refuse it too), a run that stopped before its first checkpoint compares
 * the hash of config.json as stored with the config's (`configHash`, which checkpoints carry: a derived
 * block would change it), and `--config DIR/config.json` repeats a run. So config.json stays exactly what
 * it was, and the derived numbers ({@link ResolvedRun}) go beside it, written atomically when the run
 * directory is created ({@link createRunDir}); nothing reads them back. A run directory written before
 * resolved.json existed has none, and resumes as before.
 *
 * A fresh run refuses a directory that already holds a run (nothing written is lost); a resumed run cuts
 * `metrics.jsonl` back to its checkpoint's step so that the file ends up identical to an uninterrupted
 * run's.
 *
 * @module
 */
import { E } from "../deps.ts";
import { exists, message, writeJsonAtomic } from "../core/fs.ts";
import type { PretrainConfig } from "../config/pretrain.ts";
import type { CaeV2Config, ClipConfig } from "../models/config.ts";
import { gridOf } from "../models/config.ts";
import { lrRule, peakLr, totalBatch, warmupStepsOf } from "./lr_policy.ts";
import { truncateMetricsAfter } from "./metrics.ts";

/** The paths of a run directory. */
export interface RunDir {
  readonly dir: string;
  readonly configPath: string;
  /** What the run derived from its config ({@link ResolvedRun}); absent in runs of older versions. */
  readonly resolvedPath: string;
  readonly metricsPath: string;
  readonly checkpointsDir: string;
}

/**
 * Every number a run derives from its config and uses, as the run uses it (resolved.json): the learning
 * rate policy, the run's length, the masking and the shapes of both models.
 */
export interface ResolvedRun {
  /** The config's hash (`configHash`), the one its checkpoints carry. */
  readonly configHash: string;
  /** Processes of the run (1 without `--distributed`). */
  readonly worldSize: number;
  /** Images per optimizer step over every rank: batchSize x accumulate x worldSize. */
  readonly totalBatch: number;
  /** Peak learning rate of the cosine schedule (lib/train/lr_policy.ts `peakLr`). */
  readonly peakLr: number;
  /** Where the peak comes from, with its numbers (`lrRule`). */
  readonly lrRule: string;
  /** Final learning rate of the cosine schedule. */
  readonly minLr: number;
  /** Optimizer steps of the whole run. */
  readonly totalSteps: number;
  /** Steps per epoch of a run measured in epochs (`totalSteps / epochs`); null for a run of `steps`. */
  readonly stepsPerEpoch: number | null;
  /** Linear warmup steps (`warmupStepsOf`). */
  readonly warmupSteps: number;
  /** Patches per image. */
  readonly numPatches: number;
  /** Masked patches per image. */
  readonly numMasked: number;
  /** numMasked / numPatches. */
  readonly maskRatio: number;
  /** The student's shapes (lib/models/config.ts `CaeV2Config`). */
  readonly student: CaeV2Config;
  /** The teacher's shapes (lib/models/config.ts `ClipConfig`). */
  readonly teacher: ClipConfig;
}

/** What a run knows once it has resolved its models and data: the inputs of {@link resolvedRun}. */
export interface RunFacts {
  /** Optimizer steps of the run (lib/train/lr_policy.ts `totalSteps`). */
  readonly steps: number;
  /** Masked patches per image. */
  readonly numMasked: number;
  /** The student's shapes. */
  readonly student: CaeV2Config;
  /** The teacher's shapes. */
  readonly teacher: ClipConfig;
  /** Processes of the run (default 1). */
  readonly worldSize?: number;
  /** `configHash(cfg)`. */
  readonly configHash: string;
}

/**
 * The numbers a run of `cfg` derives and uses (resolved.json): the same functions the run calls
 * (lib/train/lr_policy.ts), with the global batch of `worldSize` ranks.
 *
 * @example
 * ```ts
 * import { resolvedRun } from "./rundir.ts";
 * import { defaultPretrainConfig } from "../config/pretrain.ts";
 * import { clipMicro, studentPreset } from "../models/presets.ts";
 * const cfg = defaultPretrainConfig(new Date(0));
 * const teacher = clipMicro(64, 8);
 * const student = studentPreset("micro", { imageSize: 64, patchSize: 8, outDim: teacher.outDim });
 * const r = resolvedRun(cfg, { steps: 150, numMasked: 26, student, teacher, configHash: "x" });
 * if (r.peakLr !== 1e-3 || r.warmupSteps !== 5 || r.totalBatch !== 16 || r.numPatches !== 64) throw new Error();
 * ```
 */
export const resolvedRun = (cfg: PretrainConfig, facts: RunFacts): ResolvedRun => {
  const worldSize = facts.worldSize ?? 1;
  const global: PretrainConfig = { ...cfg, batchSize: cfg.batchSize * worldSize };
  const numPatches = gridOf(facts.student).numPatches;
  return {
    configHash: facts.configHash,
    worldSize,
    totalBatch: totalBatch(global),
    peakLr: peakLr(global),
    lrRule: lrRule(global),
    minLr: cfg.minLr,
    totalSteps: facts.steps,
    stepsPerEpoch: cfg.steps === undefined && cfg.epochs !== undefined ? facts.steps / cfg.epochs : null,
    warmupSteps: warmupStepsOf(cfg, facts.steps),
    numPatches,
    numMasked: facts.numMasked,
    maskRatio: facts.numMasked / numPatches,
    student: facts.student,
    teacher: facts.teacher,
  };
};

/** The paths of the run in `dir` (nothing is touched). */
export const runPaths = (dir: string): RunDir => {
  const d = dir.replace(/\/+$/, "") || "/";
  return {
    dir: d,
    configPath: `${d}/config.json`,
    resolvedPath: `${d}/resolved.json`,
    metricsPath: `${d}/metrics.jsonl`,
    checkpointsDir: `${d}/checkpoints`,
  };
};

const hasFiles = async (dir: string): Promise<boolean> => {
  try {
    for await (const _ of Deno.readDir(dir)) return true;
    return false;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
};

/** Whether `dir` holds a checkpoint index (`step-*.json`, written last by a save that finished). */
const hasIndex = async (dir: string): Promise<boolean> => {
  try {
    for await (const e of Deno.readDir(dir)) if (/^step-\d+\.json$/.test(e.name)) return true;
    return false;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
};

/**
 * Creates the directory of a fresh run: `config.json` (the resolved `config`), `resolved.json` (what the
 * run derived from it, {@link resolvedRun}, when given), an empty `metrics.jsonl` and `checkpoints/`.
 * Refuses a directory that already holds a run.
 */
export const createRunDir = async (
  dir: string,
  config: unknown,
  resolved?: ResolvedRun,
): Promise<E.Either<string, RunDir>> => {
  const run = runPaths(dir);
  if (
    (await exists(run.configPath)) || (await exists(run.metricsPath)) || (await hasFiles(run.checkpointsDir))
  ) {
    // A run that died before its first checkpoint is not a dead end: `--resume` restarts it from step 0
    // with its own config (lib/train/pretrain.ts). Reusing the directory for a fresh run would overwrite
    // its config.json, so that stays refused.
    if (await exists(run.configPath) && !(await hasIndex(run.checkpointsDir))) {
      return E.left(
        `${run.dir} already holds a run that stopped before its first checkpoint (its config.json is there, ` +
          `no checkpoint): continue it from step 0 with --resume ${run.dir} (its own config; the metrics it ` +
          `logged are written again, identically), or choose another directory with --out`,
      );
    }
    return E.left(
      `${run.dir} already holds a run (config.json, metrics.jsonl or checkpoints): continue it with ` +
        `--resume ${run.dir}, or choose another directory with --out`,
    );
  }
  try {
    await Deno.mkdir(run.checkpointsDir, { recursive: true });
    await writeJsonAtomic(run.configPath, config);
    if (resolved !== undefined) await writeJsonAtomic(run.resolvedPath, resolved);
    await Deno.writeTextFile(run.metricsPath, "");
  } catch (e) {
    return E.left(
      `cannot create the run directory ${run.dir}: ${message(e)}`,
    );
  }
  return E.right(run);
};

/** What resuming a run directory did. */
export interface ResumedRun {
  readonly run: RunDir;
  /** Lines of metrics.jsonl removed because they came after the checkpoint (or were cut by a crash). */
  readonly droppedMetrics: number;
}

/**
 * Prepares the run in `dir` to continue from the checkpoint of `step`: checks that it is a run directory
 * and removes the metrics lines written after `step`. With `config`, rewrites `config.json` with it (for a
 * resume whose flags changed something that does not alter the numbers, such as `logEvery`).
 */
export const resumeRunDir = async (
  dir: string,
  step: number,
  config?: unknown,
): Promise<E.Either<string, ResumedRun>> => {
  const run = runPaths(dir);
  if (!(await exists(run.configPath))) {
    return E.left(
      `${run.dir} is not a run directory (no config.json); start a fresh run with --out ${run.dir}`,
    );
  }
  try {
    await Deno.mkdir(run.checkpointsDir, { recursive: true });
    if (config !== undefined) await writeJsonAtomic(run.configPath, config);
    const droppedMetrics = await truncateMetricsAfter(run.metricsPath, step);
    return E.right({ run, droppedMetrics });
  } catch (e) {
    return E.left(`cannot resume ${run.dir}: ${message(e)}`);
  }
};
