/**
 * Evaluators of a pretraining run: measurements of the live student encoder every so many steps, each
 * logged to its own `<run dir>/<name>.jsonl` (one `{"step": t, ...}` line per evaluation). As in
 * big_vision, the trainer only calls them: whoever starts the run builds them (the pretrain task builds
 * the k-NN monitor of `--knn-every N` with lib/eval/monitor.ts), and nothing here knows what they measure.
 *
 * @module
 */
import { E } from "../deps.ts";
import type { FrozenEncoder } from "../models/encoder_model.ts";

/** What an evaluator is given: the state of the run after a step. */
export interface EvaluatorInput {
  /** Optimizer steps done. */
  readonly step: number;
  /** Steps of the whole run. */
  readonly steps: number;
  /** The live student encoder (shapes, parameters, position embedding): read it, never dispose it. */
  readonly encoder: FrozenEncoder;
}

/** A measurement run during pretraining. */
export interface Evaluator {
  /** Names its log, `<run dir>/<name>.jsonl`: letters, digits, `_` and `-`; not `metrics` or `timing`. */
  readonly name: string;
  /** Runs after every step that is a multiple of this, and after the run's last step. */
  readonly every: number;
  /**
   * The numbers logged for this step (the line is `{ step, ...numbers }`, in this order). Deterministic
   * for a resumed run to log the same as an uninterrupted one.
   */
  readonly run: (input: EvaluatorInput) => Promise<Readonly<Record<string, number>>>;
  /** The progress line for a result; default `<name> at step <t>: key=value ...`. */
  readonly describe?: (step: number, numbers: Readonly<Record<string, number>>) => string;
}

/** Log names the run writes itself. */
const RESERVED = ["metrics", "timing"];

/**
 * Checks a run's evaluators: usable, distinct names and a positive whole `every`. Left: what is wrong.
 *
 * @example
 * ```ts
 * import { checkEvaluators } from "./evaluator.ts";
 * const e = { name: "knn", every: 10, run: () => Promise.resolve({}) };
 * if (checkEvaluators([e])._tag !== "Right" || checkEvaluators([e, e])._tag !== "Left") throw new Error();
 * ```
 */
export const checkEvaluators = (
  evaluators: readonly Evaluator[],
): E.Either<string, readonly Evaluator[]> => {
  const seen = new Set<string>();
  for (const e of evaluators) {
    if (!/^[A-Za-z0-9_-]+$/.test(e.name) || RESERVED.includes(e.name)) {
      return E.left(
        `evaluator "${e.name}": a name of letters, digits, "_" and "-", other than ${RESERVED.join(" and ")}`,
      );
    }
    if (seen.has(e.name)) {
      return E.left(`two evaluators are named "${e.name}" (they would share ${e.name}.jsonl)`);
    }
    seen.add(e.name);
    if (!Number.isInteger(e.every) || e.every < 1) {
      return E.left(`evaluator "${e.name}": every ${e.every}, expected a whole number of steps >= 1`);
    }
  }
  return E.right(evaluators);
};

/** Whether `e` runs after `step` of a run of `steps`. */
export const evaluatesAt = (e: Pick<Evaluator, "every">, step: number, steps: number): boolean =>
  step % e.every === 0 || step === steps;

/** The default progress line of an evaluation. */
export const describeEvaluation = (
  e: Pick<Evaluator, "name" | "describe">,
  step: number,
  numbers: Readonly<Record<string, number>>,
): string =>
  e.describe?.(step, numbers) ??
    `${e.name} at step ${step}: ${Object.entries(numbers).map(([k, v]) => `${k}=${v}`).join(" ")}`;
