/**
 * Applying updates: `params + updates`, leaf by leaf, and the whole optimizer step built on it.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { disposeTree, type Params, zipTree } from "../core/tree.ts";
import { type GradientTransformation, tidy } from "./transform.ts";

/**
 * Returns NEW params `p + u` (inputs untouched; the caller disposes the old params and the updates).
 * Throws naming the first parameter missing on either side.
 */
export const applyUpdates = <P extends Params>(params: P, updates: Params): P =>
  tidy(() => zipTree(params, updates, (p, u) => tf.add(p, u)));

/**
 * One optimizer update, the sequence every trainer runs: `update` the state with `grads`, add the updates to
 * the params. Returns the NEW params and state; disposes `grads` and the updates, and never touches the old
 * params and state (the caller disposes them once it has moved on: a reducer returns them untouched, a loop
 * swaps them). The gradients go before the new params are made, one parameter-sized set less at the peak.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { optimizerStep } from "./apply.ts";
 * import { scaleByLearningRate } from "./lr.ts";
 * await tf.setBackend("cpu");
 * const params = { w: tf.tensor1d([1, 2]) };
 * const opt = scaleByLearningRate(0.5); // plain SGD
 * const [next] = optimizerStep(opt, params, opt.init(params), { w: tf.tensor1d([2, 2]) });
 * // w - 0.5 * g = [0, 1]
 * if ((await (next.w as tf.Tensor).data())[1] !== 1) throw new Error("unexpected");
 * ```
 */
export const optimizerStep = <P extends Params, S>(
  optimizer: GradientTransformation<S>,
  params: P,
  state: S,
  grads: Params,
): readonly [P, S] => {
  const [updates, next] = optimizer.update(grads, state, params);
  disposeTree(grads);
  const stepped = applyUpdates(params, updates);
  disposeTree(updates);
  return [stepped, next];
};
