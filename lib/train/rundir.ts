/**
 * The run directory of `deno task pretrain`:
 *
 * ```
 * <out>/config.json        the resolved config, pretty-printed
 * <out>/metrics.jsonl      one JSON object per step (lib/train/metrics.ts)
 * <out>/checkpoints/       step-000123.safetensors + step-000123.json (lib/train/checkpoint.ts)
 * <out>/run.lock           while a process runs it (lib/train/lock.ts)
 * ```
 *
 * A fresh run refuses a directory that already holds a run (nothing written is lost); a resumed run cuts
 * `metrics.jsonl` back to its checkpoint's step so that the file ends up identical to an uninterrupted
 * run's.
 *
 * @module
 */
import { E } from "../deps.ts";
import { exists, message, writeJsonAtomic } from "../core/fs.ts";
import { truncateMetricsAfter } from "./metrics.ts";

/** The paths of a run directory. */
export interface RunDir {
  readonly dir: string;
  readonly configPath: string;
  readonly metricsPath: string;
  readonly checkpointsDir: string;
}

/** The paths of the run in `dir` (nothing is touched). */
export const runPaths = (dir: string): RunDir => {
  const d = dir.replace(/\/+$/, "") || "/";
  return {
    dir: d,
    configPath: `${d}/config.json`,
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
 * Creates the directory of a fresh run: `config.json` (the resolved `config`), an empty `metrics.jsonl`
 * and `checkpoints/`. Refuses a directory that already holds a run.
 */
export const createRunDir = async (dir: string, config: unknown): Promise<E.Either<string, RunDir>> => {
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
