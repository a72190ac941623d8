/**
 * The keys of a pretraining run, all from its seed: one per independent consumer (init, teacher, data,
 * steps). Its own module so that evaluation (lib/eval/load.ts: the `random` encoder is the one a run of
 * the same seed starts from) needs nothing of the run itself.
 *
 * @module
 */
import { type Key, key as makeKey, split } from "../core/random.ts";

/**
 * Keys of the run: one per independent consumer, all from the seed.
 *
 * @example
 * ```ts
 * import { runKeys } from "./run_keys.ts";
 * const a = runKeys(3), b = runKeys(3);
 * if (JSON.stringify(a) !== JSON.stringify(b) || JSON.stringify(a.init) === JSON.stringify(a.train)) {
 *   throw new Error("keys are a pure function of the seed, one per consumer");
 * }
 * ```
 */
export const runKeys = (seed: number): { init: Key; teacher: Key; data: Key; train: Key } => {
  const [init, teacher, data, train] = split(makeKey(seed), 4);
  return { init, teacher, data, train };
};
