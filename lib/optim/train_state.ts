/**
 * The state every trainer folds over, `{ params, opt, step, key }`, and the one optimizer step that moves it
 * (docs/design.md, principle 3). Pretraining, the probes, segmentation, fine-tuning and the parity check all
 * hold a `TrainState<P, S>` and advance it with {@link applyGradients}.
 *
 * Ownership rule (lib/optim/transform.ts's): {@link applyGradients} returns fresh params and optimizer state,
 * disposes the gradients it is given and never touches the state it was given; a loop that moves on disposes
 * the old state with {@link disposeTrainState}.
 *
 * @module
 */
import type { Key } from "../core/random.ts";
import { disposeTree, type Params } from "../core/tree.ts";
import { optimizerStep } from "./apply.ts";
import { disposeState, type GradientTransformation } from "./transform.ts";

/** A training state: parameters `P`, optimizer state `S`, the updates applied so far, the run's key. */
export interface TrainState<P extends Params, S> {
  /** The parameters being trained. */
  readonly params: P;
  /** The optimizer's state (AdamW: clip, moments, counts). */
  readonly opt: S;
  /** Optimizer updates applied so far. */
  readonly step: number;
  /** The run key (constant); step t draws from `foldIn(key, t)`. */
  readonly key: Key;
}

/** The state before the first update: `optimizer.init(params)`, step 0. Takes ownership of `params`. */
export const initTrainState = <P extends Params, S>(
  optimizer: GradientTransformation<S>,
  params: P,
  key: Key,
): TrainState<P, S> => ({ params, opt: optimizer.init(params), step: 0, key });

/**
 * One optimizer update: the new params and optimizer state, `step + 1`. Disposes `grads`; the old state is
 * untouched (the caller disposes it once it has moved on).
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { applyGradients, disposeTrainState, initTrainState } from "./train_state.ts";
 * import { scaleByLearningRate } from "./lr.ts";
 * await tf.setBackend("cpu");
 * const opt = scaleByLearningRate(0.5); // plain SGD
 * const s0 = initTrainState(opt, { w: tf.tensor1d([1, 2]) }, [0, 0]);
 * const s1 = applyGradients(opt, s0, { w: tf.tensor1d([2, 2]) });
 * disposeTrainState(s0);
 * // w - 0.5 * g = [0, 1], one step
 * if (s1.step !== 1 || (await s1.params.w.data())[1] !== 1) throw new Error("unexpected");
 * ```
 */
export const applyGradients = <P extends Params, S>(
  optimizer: GradientTransformation<S>,
  state: TrainState<P, S>,
  grads: Params,
): TrainState<P, S> => {
  const [params, opt] = optimizerStep(optimizer, state.params, state.opt, grads);
  return { params, opt, step: state.step + 1, key: state.key };
};

/** Disposes the state's params and optimizer state. */
export const disposeTrainState = (state: TrainState<Params, unknown>): void => {
  disposeTree(state.params);
  disposeState(state.opt);
};
