/**
 * Runs a named experiment (its plan: plan.ts): every (setting, seed) as a pretraining run (lib/train/pretrain.ts) in its own
 * folder, each evaluated (evaluate.ts), then a random-init baseline per model, then the experiment folder's
 * summary files and report:
 *
 * ```
 * <out>/experiment.json     the plan: experiment, size, seeds, flags, every run's config hash, versions
 * <out>/results.json        per run: setting, seed, config hash, final losses, probe and k-NN accuracy
 * <out>/results.csv         the same, one row per run (results.ts)
 * <out>/report.md           results table, plots, versions (report.ts)
 * <out>/plots/*.svg, *.png  loss curves per run; probe and k-NN accuracy per setting
 * <out>/timing.json         wall-clock seconds per run (the only file that differs between reruns)
 * <out>/runs/<id>/          a pretraining run directory (config.json, metrics.jsonl, checkpoints/, ...)
 *                           plus eval.json (its scores) and run.json (versions, config hash, git commit)
 * ```
 *
 * Reproducible: the same experiment, size, seeds and flags on the same backend write byte-identical
 * metrics.jsonl, eval.json, results.json and results.csv (every random draw derives from the seed; no
 * clock or path goes into them). Rerunning into the same folder continues where it stopped: finished runs
 * (same config hash) are reused, an interrupted one resumes from its checkpoint.
 *
 * @module
 */
import { E } from "../deps.ts";
import { type BackendInfo, selectBackend } from "../core/backend.ts";
import {
  exists,
  message,
  parseJson,
  readTextIfExists,
  writeJsonAtomic,
  writeTextAtomic,
} from "../core/fs.ts";
import { stableHash } from "../config/hash.ts";
import type { PresetName } from "../models/presets.ts";
import { parseDataSource } from "../../data/source.ts";
import { latestCheckpoint } from "../train/checkpoint.ts";
import { readMetrics } from "../train/metrics.ts";
import { pretrain } from "../train/pretrain.ts";
import { pretrainEvaluators } from "../eval/monitor.ts";
import { runPaths } from "../train/rundir.ts";
import { evaluateEncoder } from "./evaluate.ts";
import type { Experiment, ExperimentSize, SettingValue } from "./registry.ts";
import { type ExperimentOptions, planExperiment, type PlannedRun, trimSlash } from "./plan.ts";
import { writeReport } from "./report.ts";
import {
  type BaselineRecord,
  type EvalRecord,
  type ExperimentResults,
  finalLosses,
  formatScores,
  resultsCsv,
  type RunRecord,
} from "./results.ts";
import { collectVersions, type Versions } from "./versions.ts";

/** Where the runner's text goes. */
export interface ExperimentIO {
  /** Receives every line of progress and results. */
  readonly log: (line: string) => void;
  /** Progress bars on a terminal (see lib/train/progress.ts); default: plain lines. */
  readonly tty?: boolean;
}

/** What {@link runExperiment} returns. */
export interface ExperimentSummary {
  /** The experiment folder. */
  readonly dir: string;
  /** What results.json holds. */
  readonly results: ExperimentResults;
  /** What computed it. */
  readonly versions: Versions;
  /** `<dir>/report.md`. */
  readonly reportPath: string;
  /** Wall-clock seconds per run id (and "evaluation", "report"). */
  readonly seconds: Readonly<Record<string, number>>;
  /** Runs reused from an earlier invocation. */
  readonly reused: readonly string[];
}

/** The JSON object a previous invocation wrote at `path`; undefined when absent or not valid JSON. */
const readJson = async <T>(path: string): Promise<T | undefined> => {
  const text = await readTextIfExists(path);
  if (text === undefined) return undefined;
  const json = parseJson(text, path);
  return E.isRight(json) ? json.right as T : undefined;
};

const relative = (root: string, path: string): string => {
  const r = `${trimSlash(root)}/`;
  return path.startsWith(r) ? path.slice(r.length) : path;
};

/** The per-run record written next to the run: what computed it. */
interface RunJson {
  readonly experiment: string;
  readonly size: ExperimentSize;
  readonly id: string;
  readonly setting: string;
  readonly values: Readonly<Record<string, SettingValue>>;
  readonly seed: number;
  readonly configHash: string;
  readonly versions: Versions;
}

/**
 * Trains (or resumes, or reuses) one run and evaluates it. Left: a message; `interrupted` when Ctrl-C
 * stopped the training (its checkpoint is on disk; rerunning continues).
 */
const runOne = async (
  exp: Experiment,
  o: ExperimentOptions,
  run: PlannedRun,
  versions: Versions,
  io: ExperimentIO,
): Promise<E.Either<string, { record: RunRecord; reused: boolean }>> => {
  const dir = run.config.out;
  const paths = runPaths(dir);
  const evalPath = `${dir}/eval.json`, runJsonPath = `${dir}/run.json`;
  const { steps = 0 } = run.config;
  const base = {
    id: run.id,
    setting: run.setting.id,
    label: run.setting.label,
    values: run.setting.values,
    seed: run.seed,
    configHash: run.configHash,
    model: run.config.model,
    steps,
    dir: relative(o.out, dir),
  };
  const finish = async (ev: EvalRecord, reused: boolean) => {
    const log = await readMetrics(paths.metricsPath);
    return E.right({ record: { ...base, final: finalLosses(log.records), eval: ev }, reused });
  };

  const previous = await readJson<RunJson>(runJsonPath);
  const done = await readJson<EvalRecord>(evalPath);
  if (previous !== undefined && previous.configHash !== run.configHash) {
    return E.left(
      `${dir} holds a run with config hash ${previous.configHash}, this plan's run ${run.id} hashes to ` +
        `${run.configHash}: give the experiment another --out, or remove ${dir}`,
    );
  }
  if (previous !== undefined && done !== undefined) {
    io.log(`${run.id}: done earlier (config ${run.configHash}), reusing ${relative(o.out, evalPath)}`);
    return finish(done, true);
  }

  // Train: fresh, or resume what an interrupted invocation left.
  let cfg = run.config;
  if (await exists(paths.configPath)) {
    const latest = await latestCheckpoint(dir);
    if (latest.checkpoint === undefined) {
      return E.left(
        `${dir} holds a started run without a complete checkpoint (stopped before its first one): remove ` +
          `${dir} and run the experiment again to start that run afresh`,
      );
    }
    if (latest.checkpoint.meta.configHash !== run.configHash) {
      return E.left(
        `${dir} was written with config hash ${latest.checkpoint.meta.configHash}, the plan's run hashes to ` +
          `${run.configHash}: give the experiment another --out, or remove ${dir}`,
      );
    }
    cfg = { ...cfg, resume: dir };
  }
  await Deno.mkdir(dir, { recursive: true });
  const runJson: RunJson = {
    experiment: exp.name,
    size: o.size,
    id: run.id,
    setting: run.setting.id,
    values: run.setting.values,
    seed: run.seed,
    configHash: run.configHash,
    versions,
  };
  io.log(`${run.id}: ${run.setting.label}, seed ${run.seed}, config ${run.configHash}`);
  const trained = cfg.resume !== null && (await latestCheckpoint(dir)).checkpoint?.step === steps
    ? undefined
    : await pretrain(cfg, { log: io.log, tty: io.tty ?? false }, { evaluators: pretrainEvaluators(cfg) });
  if (trained !== undefined) {
    if (E.isLeft(trained)) return E.left(`${run.id}: ${trained.left}`);
    if (trained.right.interrupted) {
      return E.left(
        `interrupted during ${run.id} at step ${trained.right.steps} (checkpoint saved): run the same command ` +
          "again to continue",
      );
    }
  }

  const source = parseDataSource(cfg.data);
  if (E.isLeft(source)) return source;
  const ev = await evaluateEncoder({ kind: "run", dir }, source.right, exp.evaluation(o.size), run.seed);
  if (E.isLeft(ev)) return E.left(`${run.id}: ${ev.left}`);
  const record: EvalRecord = { ...ev.right, encoder: relative(o.out, ev.right.encoder) };
  io.log(`${run.id}: ${formatScores(record)}`);
  await writeJsonAtomic(evalPath, record);
  await writeJsonAtomic(runJsonPath, runJson);
  return finish(record, false);
};

/** Random-init encoders: one per model (and image/patch size) among the runs, at the first seed. */
const baselines = async (
  exp: Experiment,
  o: ExperimentOptions,
  runs: readonly PlannedRun[],
  io: ExperimentIO,
): Promise<E.Either<string, BaselineRecord[]>> => {
  const seen = new Map<string, PlannedRun>();
  for (const r of runs) {
    const k = `${r.config.model}/${r.config.imageSize}/${r.config.patchSize}/${r.config.data}`;
    if (!seen.has(k)) seen.set(k, r);
  }
  const out: BaselineRecord[] = [];
  for (const r of seen.values()) {
    const c = r.config;
    const source = parseDataSource(c.data);
    if (E.isLeft(source)) return source;
    const ev = await evaluateEncoder(
      {
        kind: "random",
        model: c.model as PresetName,
        imageSize: c.imageSize,
        patchSize: c.patchSize,
        seed: c.seed,
      },
      source.right,
      exp.evaluation(o.size),
      c.seed,
    );
    if (E.isLeft(ev)) return E.left(`baseline (${c.model}, random init): ${ev.left}`);
    io.log(`baseline ${c.model} (random init, no pretraining): ${formatScores(ev.right)}`);
    out.push({ model: c.model, seed: c.seed, eval: ev.right });
  }
  return E.right(out);
};

/**
 * Runs `exp` into `o.out` (see the module doc for what is written). Left: a message for people; every
 * finished run stays on disk and is reused by the next invocation with the same folder.
 */
export const runExperiment = async (
  exp: Experiment,
  o: ExperimentOptions,
  io: ExperimentIO,
): Promise<E.Either<string, ExperimentSummary>> => {
  const out = trimSlash(o.out);
  const opts = { ...o, out };
  const plan = await planExperiment(exp, opts);
  if (E.isLeft(plan)) return plan;
  const runs = plan.right;
  let info: BackendInfo;
  try {
    info = await selectBackend(runs[0].config.backend);
  } catch (e) {
    return E.left(message(e));
  }
  const versions = await collectVersions(info);
  // What the results depend on: every run's config and the evaluation (not the folder, not the backend).
  const planHash = await stableHash({
    experiment: exp.name,
    size: o.size,
    seeds: [...o.seeds],
    runs: runs.map((r) => [r.id, r.configHash]),
    evaluation: exp.evaluation(o.size),
  });
  const planPath = `${out}/experiment.json`;
  const previous = await readJson<{ planHash?: string }>(planPath);
  if (previous !== undefined && previous.planHash !== planHash) {
    return E.left(
      `${out} holds another plan (${previous.planHash}; this one is ${planHash}: a different experiment, ` +
        "size, seeds or flags): give it another --out, or remove the folder",
    );
  }
  await Deno.mkdir(`${out}/runs`, { recursive: true });
  await writeJsonAtomic(planPath, {
    experiment: exp.name,
    title: exp.title,
    size: o.size,
    seeds: o.seeds,
    overrides: o.overrides ?? {},
    evaluation: exp.evaluation(o.size),
    planHash,
    runs: runs.map((r) => ({ id: r.id, setting: r.setting.id, seed: r.seed, configHash: r.configHash })),
    versions,
  });
  io.log(
    `experiment ${exp.name} (${o.size}): ${runs.length} run(s) = ${
      exp.settings(o.size).length
    } setting(s) x ` +
      `${o.seeds.length} seed(s), into ${out}`,
  );

  const seconds: Record<string, number> = {};
  const records: RunRecord[] = [];
  const reused: string[] = [];
  for (const [i, run] of runs.entries()) {
    io.log(`--- run ${i + 1}/${runs.length}`);
    const t0 = performance.now();
    const r = await runOne(exp, opts, run, versions, io);
    if (E.isLeft(r)) return r;
    seconds[run.id] = (performance.now() - t0) / 1000;
    records.push(r.right.record);
    if (r.right.reused) reused.push(run.id);
  }

  const t1 = performance.now();
  const base = o.baseline === false ? E.right([]) : await baselines(exp, opts, runs, io);
  if (E.isLeft(base)) return base;
  seconds.baselines = (performance.now() - t1) / 1000;

  const results: ExperimentResults = {
    experiment: exp.name,
    size: o.size,
    seeds: [...o.seeds],
    planHash,
    runs: records,
    baselines: base.right,
  };
  const t2 = performance.now();
  await writeJsonAtomic(`${out}/results.json`, results);
  await writeTextAtomic(`${out}/results.csv`, resultsCsv(results));
  const reportPath = await writeReport(exp, results, versions, runs.map((r) => r.config), out, {
    png: o.png ?? true,
    overrides: o.overrides ?? {},
    log: io.log,
  });
  seconds.report = (performance.now() - t2) / 1000;
  await writeJsonAtomic(`${out}/timing.json`, { seconds, reused });
  return E.right({ dir: out, results, versions, reportPath, seconds, reused });
};
