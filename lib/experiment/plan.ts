/**
 * The plan of a named experiment: its options, and every (setting, seed) of it as a run with its resolved,
 * valid pretraining config and config hash, before anything runs (runner.ts runs the plan).
 *
 * @module
 */
import { E, pipe } from "../deps.ts";
import { decodeWith } from "../config/codec.ts";
import {
  checkPretrainConfig,
  configHash,
  defaultPretrainConfig,
  type PretrainConfig,
  PretrainConfigCodec,
} from "../config/pretrain.ts";
import {
  type ConfigOverrides,
  type Experiment,
  type ExperimentSize,
  planRuns,
  type RunSpec,
} from "./registry.ts";

/** How to run an experiment. */
export interface ExperimentOptions {
  /** How big: `test`, `small`, `medium` or `large` (registry.ts). */
  readonly size: ExperimentSize;
  /** Seeds of every setting (each seed is one run per setting). */
  readonly seeds: readonly number[];
  /** The experiment folder. */
  readonly out: string;
  /** Config fields set for every run (command-line flags), over the experiment's own. */
  readonly overrides?: ConfigOverrides;
  /** Evaluate a randomly initialised encoder of each model as a baseline (default true). */
  readonly baseline?: boolean;
  /** Write PNG copies of the plots (default true). */
  readonly png?: boolean;
}

/** A run with its resolved config. */
export interface PlannedRun extends RunSpec {
  /** The run's resolved, valid pretraining config. */
  readonly config: PretrainConfig;
  /** Its `configHash`. */
  readonly configHash: string;
}

/** `p` without trailing slashes ("." for none left). */
export const trimSlash = (p: string) => p.replace(/\/+$/, "") || ".";

/**
 * The config of one run: pretraining defaults < the experiment's base at `size` < the setting < the
 * command-line overrides < seed and folder. Left: what is wrong, naming the run.
 *
 * @example
 * ```ts
 * import { resolveRunConfig } from "./plan.ts";
 * import { alignmentAblation, planRuns } from "./registry.ts";
 * const [run] = planRuns(alignmentAblation.settings("small"), [7]);
 * const cfg = resolveRunConfig(alignmentAblation, "small", run, {}, "runs/x");
 * if (cfg._tag === "Left" || cfg.right.maskedWeight !== 0 || cfg.right.seed !== 7) throw new Error("unexpected");
 * if (cfg.right.out !== "runs/x/runs/visible-only-s7") throw new Error(cfg.right.out);
 * ```
 */
export const resolveRunConfig = (
  exp: Experiment,
  size: ExperimentSize,
  run: RunSpec,
  overrides: ConfigOverrides,
  out: string,
): E.Either<string, PretrainConfig> => {
  const dir = `${trimSlash(out)}/runs/${run.id}`;
  const merged = {
    ...defaultPretrainConfig(new Date(0)),
    // The size fixes the length by steps; an experiment never counts epochs.
    epochs: undefined,
    ...exp.base(size),
    ...run.setting.overrides,
    ...overrides,
    seed: run.seed,
    out: dir,
    resume: null,
  };
  return pipe(
    decodeWith(PretrainConfigCodec, merged, `${exp.name} run ${run.id}`),
    E.chain(checkPretrainConfig),
    E.mapLeft((m) => `${exp.name} run ${run.id}: ${m}`),
  );
};

/** Every run of the experiment with its config and config hash. Left: the first config that is invalid. */
export const planExperiment = async (
  exp: Experiment,
  o: Pick<ExperimentOptions, "size" | "seeds" | "out" | "overrides">,
): Promise<E.Either<string, PlannedRun[]>> => {
  if (o.seeds.length === 0) return E.left("no seeds given");
  const planned: PlannedRun[] = [];
  for (const run of planRuns(exp.settings(o.size), o.seeds)) {
    const cfg = resolveRunConfig(exp, o.size, run, o.overrides ?? {}, o.out);
    if (E.isLeft(cfg)) return cfg;
    planned.push({ ...run, config: cfg.right, configHash: await configHash(cfg.right) });
  }
  return E.right(planned);
};
