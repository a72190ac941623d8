/**
 * Named experiments, defined in code: each is a list of settings (config overrides over the pretraining
 * defaults), repeated over seeds, each run evaluated the same way. A size picks the scale: `test` (seconds,
 * for the test suite), `small` (the default: minutes on 2 CPU cores, on the embedded synthetic data),
 * `medium` (tens of minutes on a CPU) and `large` (the paper's models and image size: a GPU, a real CLIP
 * teacher via `--teacher` and real images via `--data`).
 *
 * The shipped experiments test the two findings of the CAE v2 paper (Zhang et al., arXiv 2211.09799,
 * TMLR 2023; abstract: "the supervision on visible patches achieves remarkable performance, even better
 * than that on masked patches" and "the optimal mask ratio positively correlates to the model size"):
 *
 * - `alignment-ablation`: visible latent alignment only, masked latent alignment only, and both (the
 *   official loss).
 * - `mask-ratio`: masked fraction against model size. The official scripts mask 30, 49 and 98 of 196
 *   patches (15%, 25%, 50%) for ViT-T, -S and -B.
 *
 * At the `small` size the teacher is a randomly initialised micro CLIP and the students train for a minute,
 * so the numbers show that the pipeline works and how much a setting moves them at that scale; they do not
 * reproduce the paper's figures. The `large` size is the setting to compare with the paper.
 *
 * @module
 */
import type { PretrainConfig } from "../config/pretrain.ts";
import { MICRO_LR } from "../train/lr_policy.ts";
import type { EvalSpec } from "./evaluate.ts";

/** How big an experiment runs. */
export type ExperimentSize = "test" | "small" | "medium" | "large";

/** Sizes, smallest first. */
export const experimentSizes: readonly ExperimentSize[] = ["test", "small", "medium", "large"];

/** `T` without a codec brand: a branded number (PositiveInt, ...) as a plain number. */
export type Plain<T> = T extends number ? number : T;

/**
 * Pretraining config fields to set, as plain values (numbers without the codec's brands); the merged
 * config is decoded by the codec, which rejects unknown keys and out-of-range values.
 */
export type ConfigOverrides = { readonly [K in keyof PretrainConfig]?: Plain<PretrainConfig[K]> };

/** A value of a setting's coordinate (an objective's name, a mask ratio, a preset). */
export type SettingValue = string | number;

/** One point of an experiment's grid: its coordinates and the config fields that realise it. */
export interface Setting {
  /** File-name-safe id, unique in the experiment ("visible-only", "micro-r0.25"). */
  readonly id: string;
  /** Human label for tables and legends. */
  readonly label: string;
  /** Coordinates, e.g. `{ objective: "visible only" }` or `{ model: "micro", maskRatio: 0.25 }`. */
  readonly values: Readonly<Record<string, SettingValue>>;
  /** Config fields set by this setting (over the experiment's base). */
  readonly overrides: ConfigOverrides;
}

/** A named experiment. */
export interface Experiment {
  /** The name on the command line (`deno task experiment NAME`). */
  readonly name: string;
  /** One line: what it compares. */
  readonly title: string;
  /** What the paper reports, for the report's reader to compare with. */
  readonly paper: string;
  /** Config fields common to all runs at a size (over the pretraining defaults). */
  readonly base: (size: ExperimentSize) => ConfigOverrides;
  /** The grid at a size. */
  readonly settings: (size: ExperimentSize) => readonly Setting[];
  /** How every run is evaluated at a size. */
  readonly evaluation: (size: ExperimentSize) => EvalSpec;
  /** Coordinate along the x axis of the bar charts (and the table's first column). */
  readonly groupBy: string;
  /** Coordinate that makes separate bars within a group, when there is one. */
  readonly seriesBy?: string;
  /** How to print a coordinate's name in tables and axes. */
  readonly axisNames: Readonly<Record<string, string>>;
}

/** One run of an experiment: a setting at a seed. */
export interface RunSpec {
  /** `<setting id>-s<seed>`: the run's folder name. */
  readonly id: string;
  /** The setting it realises. */
  readonly setting: Setting;
  /** The run's seed (`cfg.seed`): every random draw of the run derives from it. */
  readonly seed: number;
}

/** The runs of `settings` over `seeds`, settings outer (so a partial experiment covers whole settings). */
export const planRuns = (settings: readonly Setting[], seeds: readonly number[]): RunSpec[] =>
  settings.flatMap((setting) => seeds.map((seed) => ({ id: `${setting.id}-s${seed}`, setting, seed })));

// ---------------------------------------------------------------------------------------------------
// Sizes shared by the shipped experiments.

/**
 * The scale of a size: image, patch, batch, steps, checkpoints. Below `large` every model trains at the
 * micro preset's peak lr (1e-3): the linear scaling rule of the official recipe (1.5e-3 x batch / 2048)
 * would put a small batch below the final lr; at `large` the rule applies.
 */
const scale = (size: ExperimentSize): ConfigOverrides => {
  switch (size) {
    case "test":
      // Seconds: the test suite runs experiments at this size.
      return { imageSize: 32, patchSize: 8, batchSize: 4, steps: 3, lr: MICRO_LR, checkpointEvery: 1000 };
    case "small":
      // ~1 minute per micro run on 2 CPU cores (wasm, 0.3-0.6 s per step at 32 px, batch 16).
      return { imageSize: 32, patchSize: 8, batchSize: 16, steps: 100, lr: MICRO_LR, checkpointEvery: 50 };
    case "medium":
      return { imageSize: 64, patchSize: 8, batchSize: 32, steps: 600, lr: MICRO_LR, checkpointEvery: 100 };
    case "large":
      // The paper's resolution; pass --teacher (CLIP ViT-B/16) and --data (ImageNet) for its setting.
      return { imageSize: 224, patchSize: 16, batchSize: 64, steps: 20_000, checkpointEvery: 1000 };
  }
};

// The probe is `deno task probe`'s default recipe (whitened features, lr chosen on held-back training
// features, at least 3000 updates): it converges whatever the set's size, so every size but `test` (a smoke
// run of the code) takes its defaults.
const evaluationAt = (size: ExperimentSize): EvalSpec => {
  switch (size) {
    case "test":
      return {
        maxTrain: 40,
        maxVal: 20,
        probe: { epochs: 5, minSteps: 20, batchSize: 20 },
        knn: {},
      };
    case "small":
      return {
        maxTrain: 1000,
        maxVal: 500,
        probe: {},
        knn: {},
      };
    case "medium":
      return {
        maxTrain: 5000,
        maxVal: 1000,
        probe: {},
        knn: {},
      };
    case "large":
      return {
        maxTrain: 50_000,
        maxVal: 10_000,
        probe: {},
        knn: {},
      };
  }
};

const model = (size: ExperimentSize): ConfigOverrides => ({ model: size === "large" ? "tiny" : "micro" });

// ---------------------------------------------------------------------------------------------------
// alignment-ablation

const objectives: readonly { id: string; label: string; visibleWeight: number; maskedWeight: number }[] = [
  { id: "visible-only", label: "visible only", visibleWeight: 1, maskedWeight: 0 },
  { id: "masked-only", label: "masked only", visibleWeight: 0, maskedWeight: 1 },
  { id: "both", label: "both (official)", visibleWeight: 1, maskedWeight: 1 },
];

/** Visible-only, masked-only and both latent alignment objectives, all else equal. */
export const alignmentAblation: Experiment = {
  name: "alignment-ablation",
  title: "Which latent alignment matters: visible tokens only, masked tokens only, or both",
  paper: "CAE v2 (Zhang et al., TMLR 2023): supervision on the visible patches alone performs remarkably " +
    "well, better than supervision on the masked patches alone (the usual MIM target); the official recipe " +
    "uses both.",
  base: (size) => ({ ...scale(size), ...model(size) }),
  settings: () =>
    objectives.map((o) => ({
      id: o.id,
      label: o.label,
      values: { objective: o.label },
      overrides: { visibleWeight: o.visibleWeight, maskedWeight: o.maskedWeight },
    })),
  evaluation: evaluationAt,
  groupBy: "objective",
  axisNames: { objective: "objective" },
};

// ---------------------------------------------------------------------------------------------------
// mask-ratio

const ratiosAt = (size: ExperimentSize): readonly number[] =>
  size === "test" ? [0.25, 0.75] : size === "large" ? [0.1, 0.25, 0.5, 0.75] : [0.25, 0.5, 0.75];

const modelsAt = (size: ExperimentSize): readonly ("micro" | "tiny" | "small")[] =>
  size === "test" ? ["micro"] : size === "large" ? ["tiny", "small"] : ["micro", "tiny"];

/**
 * `mask-ratio` at `small` trains the tiny preset (5.5 M parameters, ~9x a micro step on wasm) next to
 * micro: batch 8 and 40 steps for both keep it to minutes; the other sizes keep their scale.
 */
const lengthOf = (size: ExperimentSize): ConfigOverrides =>
  size === "small" ? { batchSize: 8, steps: 40 } : {};

/** The masked fraction of the patches against the model size. */
export const maskRatio: Experiment = {
  name: "mask-ratio",
  title: "Mask ratio against model size",
  paper: "CAE v2 (Zhang et al., TMLR 2023): the optimal mask ratio grows with the model size, the smaller " +
    "the model the lower the ratio; the official scripts mask 15% (ViT-T), 25% (ViT-S) and 50% (ViT-B).",
  base: (size) => scale(size),
  settings: (size) => {
    const { imageSize = 32, patchSize = 8 } = scale(size);
    const patches = (imageSize / patchSize) ** 2;
    return modelsAt(size).flatMap((m) =>
      ratiosAt(size).map((r) => ({
        id: `${m}-r${r}`,
        label: `${m}, ${Math.round(r * 100)}% masked`,
        values: { model: m, maskRatio: r },
        overrides: { model: m, numMasked: Math.max(1, Math.round(r * patches)), ...lengthOf(size) },
      }))
    );
  },
  evaluation: evaluationAt,
  groupBy: "maskRatio",
  seriesBy: "model",
  axisNames: { maskRatio: "mask ratio", model: "model" },
};

/** Every shipped experiment by name. */
export const experiments: Readonly<Record<string, Experiment>> = {
  [alignmentAblation.name]: alignmentAblation,
  [maskRatio.name]: maskRatio,
};

/**
 * The experiment called `name`, or a message listing the known ones.
 *
 * @example
 * ```ts
 * import { findExperiment } from "./registry.ts";
 * const e = findExperiment("alignment-ablation");
 * if (typeof e === "string" || e.settings("small").length !== 3) throw new Error("three objectives");
 * if (typeof findExperiment("nope") !== "string") throw new Error("unknown names are refused");
 * ```
 */
export const findExperiment = (name: string): Experiment | string =>
  experiments[name] ??
    `unknown experiment "${name}"; known: ${
      Object.keys(experiments).join(", ")
    } (deno task experiment --list)`;
