/**
 * What an experiment's results are, and their plain renderings: the records of results.json (runs with
 * their final losses and scores, random-init baselines), the final losses of a metrics log, the one-line
 * scores and results.csv. Shared by the runner (runner.ts), which computes them, and the report
 * (report.ts), which draws them; it imports neither.
 *
 * @module
 */
import type { EvalResult, Scores } from "./evaluate.ts";
import { accuracyFigures } from "../eval/heads.ts";
import type { ExperimentSize, SettingValue } from "./registry.ts";

/** The final losses of a run: means over its last steps (less noisy than the last step alone). */
export interface FinalLosses {
  /** The optimised loss. */
  readonly loss: number;
  /** Visible latent alignment (`1 - cos`). */
  readonly lossVisible: number;
  /** Masked latent alignment (`1 - cos`). */
  readonly lossMasked: number;
  /** How many last steps were averaged. */
  readonly overSteps: number;
}

/** One run's entry in results.json. */
export interface RunRecord {
  /** `<setting id>-s<seed>`. */
  readonly id: string;
  /** The setting's id. */
  readonly setting: string;
  /** The setting's label. */
  readonly label: string;
  /** The setting's coordinates. */
  readonly values: Readonly<Record<string, SettingValue>>;
  /** The run's seed. */
  readonly seed: number;
  /** `configHash` of the run's config (what it computes). */
  readonly configHash: string;
  /** The student preset. */
  readonly model: string;
  /** Optimizer steps of the run. */
  readonly steps: number;
  /** Losses at the end of training. */
  readonly final: FinalLosses;
  /** Probe and k-NN scores of the final checkpoint. */
  readonly eval: EvalRecord;
  /** The run folder, relative to the experiment folder. */
  readonly dir: string;
}

/** Evaluation of one encoder, as stored (paths relative to the experiment folder). */
export type EvalRecord = Omit<EvalResult, "encoder"> & { readonly encoder: string };

/** A random-init encoder evaluated like the runs. */
export interface BaselineRecord {
  /** The preset of the random encoder. */
  readonly model: string;
  /** Its init seed. */
  readonly seed: number;
  /** Its probe and k-NN scores. */
  readonly eval: EvalRecord;
}

/** What results.json holds. */
export interface ExperimentResults {
  /** The experiment's name. */
  readonly experiment: string;
  /** The size it ran at. */
  readonly size: ExperimentSize;
  /** The seeds of every setting. */
  readonly seeds: readonly number[];
  /** Hash of the plan (experiment, size, seeds, every run's config hash, the evaluation settings). */
  readonly planHash: string;
  /** Every run, in plan order. */
  readonly runs: readonly RunRecord[];
  /** Random-init encoders, one per model. */
  readonly baselines: readonly BaselineRecord[];
}

/** Means of the losses over the last `n` steps of a metrics log (10% of the run, at least 1, at most 50). */
export const finalLosses = (records: readonly Readonly<Record<string, unknown>>[]): FinalLosses => {
  const n = Math.min(records.length, Math.max(1, Math.min(50, Math.round(records.length / 10))));
  const tail = records.slice(records.length - n);
  const mean = (k: string) => tail.reduce((a, r) => a + Number(r[k]), 0) / Math.max(1, n);
  return {
    loss: mean("loss"),
    lossVisible: mean("lossVisible"),
    lossMasked: mean("lossMasked"),
    overSteps: n,
  };
};

/**
 * The top-5 of scores over `classes` classes, or undefined below 6 classes, where it is 100% by
 * construction or a smaller k (lib/eval/heads.ts `accuracyFigures`, the rule of every task's report).
 *
 * @example
 * ```ts
 * import { top5Of } from "./results.ts";
 * if (top5Of({ top1: 20, top5: 60 }, 10) !== 60 || top5Of({ top1: 20, top5: 60 }, 5) !== undefined) throw new Error();
 * ```
 */
export const top5Of = (s: Scores | null | undefined, classes: number): number | undefined =>
  s ? accuracyFigures({ ...s, count: 0 }, classes).top5 : undefined;

/**
 * `probe top-1 23.40% (top-5 71.20%), k-NN top-1 19.80%`; no top-5 below 6 classes.
 *
 * @example
 * ```ts
 * import { formatScores } from "./results.ts";
 * const e = { probe: { top1: 23.4, top5: 71.2, bestTop1: 24 }, knn: { top1: 19.8, top5: 60 } };
 * if (formatScores({ ...e, numClasses: 10 }) !== "probe top-1 23.40% (top-5 71.20%), k-NN top-1 19.80%") throw new Error();
 * if (formatScores({ ...e, numClasses: 3 }) !== "probe top-1 23.40%, k-NN top-1 19.80%") throw new Error();
 * ```
 */
export const formatScores = (e: Pick<EvalResult, "probe" | "knn" | "numClasses">): string => {
  const probe5 = top5Of(e.probe, e.numClasses);
  return [
    e.probe
      ? `probe top-1 ${e.probe.top1.toFixed(2)}%` +
        (probe5 === undefined ? "" : ` (top-5 ${probe5.toFixed(2)}%)`)
      : undefined,
    e.knn ? `k-NN top-1 ${e.knn.top1.toFixed(2)}%` : undefined,
  ].filter((s) => s !== undefined).join(", ") || "no evaluation";
};

const csvCell = (v: unknown): string => {
  const s = v === null || v === undefined ? "" : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

/**
 * results.csv: one row per run, the setting's coordinates as columns, then the numbers; the top-5 cells
 * are empty for a run scored on fewer than 6 classes ({@link top5Of}).
 *
 * @example
 * ```ts
 * import { resultsCsv } from "./results.ts";
 * const csv = resultsCsv({ experiment: "x", size: "test", seeds: [0], planHash: "h", baselines: [], runs: [] });
 * if (!csv.startsWith("run,seed,config_hash")) throw new Error(csv);
 * ```
 */
export const resultsCsv = (r: ExperimentResults): string => {
  const coords = [...new Set(r.runs.flatMap((x) => Object.keys(x.values)))];
  const head = [
    "run",
    "seed",
    "config_hash",
    ...coords,
    "steps",
    "loss",
    "loss_visible",
    "loss_masked",
    "probe_top1",
    "probe_top5",
    "probe_best_top1",
    "knn_top1",
    "knn_top5",
  ];
  const rows = r.runs.map((x) => [
    x.id,
    x.seed,
    x.configHash,
    ...coords.map((c) => x.values[c]),
    x.steps,
    x.final.loss,
    x.final.lossVisible,
    x.final.lossMasked,
    x.eval.probe?.top1,
    top5Of(x.eval.probe, x.eval.numClasses),
    x.eval.probe?.bestTop1,
    x.eval.knn?.top1,
    top5Of(x.eval.knn, x.eval.numClasses),
  ]);
  return [head, ...rows].map((row) => row.map(csvCell).join(",")).join("\n") + "\n";
};
