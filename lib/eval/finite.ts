/**
 * The guard every evaluation runs on what it is about to score: a model whose weights went NaN or Inf
 * (a diverged run) makes NaN features and scores, and a NaN compares false against everything, so a
 * top-k count that asks "how many classes score above the label" counts none and calls every sample a hit.
 * Such numbers stop the evaluation with an error naming the model, never a score.
 *
 * @module
 */

/** Index of the first NaN or infinite value, or -1. */
export const firstNonFinite = (values: ArrayLike<number>): number => {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
  return -1;
};

/**
 * Throws when `values` holds a NaN or an infinity: `what` names the numbers ("features", "logits",
 * "the loss at epoch 3") and `source` the model they came from (a checkpoint path, "random init").
 *
 * @example
 * ```ts
 * import { assertFinite } from "./finite.ts";
 * assertFinite(new Float32Array([1, 2]), "features", "runs/a/checkpoints/step-000010.safetensors");
 * let message = "";
 * try {
 *   assertFinite([1, NaN], "features", "run R");
 * } catch (e) {
 *   message = (e as Error).message;
 * }
 * if (!message.includes("NaN") || !message.includes("run R")) throw new Error(message);
 * ```
 */
export const assertFinite = (values: ArrayLike<number>, what: string, source: string): void => {
  const i = firstNonFinite(values);
  if (i < 0) return;
  throw new Error(
    `${what} of ${source} hold ${values[i]} (at index ${i} of ${values.length}): the model's weights are ` +
      `not finite, or so large that its outputs overflow (a diverged run?). No score is reported for it; ` +
      `evaluate an earlier checkpoint.`,
  );
};
