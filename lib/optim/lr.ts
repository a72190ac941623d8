/**
 * Learning-rate scaling: the last member of a chain, turning a direction into a step.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { mapTree } from "../core/tree.ts";
import type { Schedule } from "./schedule.ts";
import { type CountState, type GradientTransformation, tidy, valueAt } from "./transform.ts";

/**
 * Multiplies the updates by `-lr` (descent), where `lr` is a number or a schedule read at the number of
 * updates applied so far (0 for the first update, like the official `lr_schedule_values[it]`).
 */
export const scaleByLearningRate = (lr: number | Schedule): GradientTransformation<CountState> => ({
  init: () => ({ count: 0 }),
  update: (updates, state) =>
    tidy(() => {
      const factor = -valueAt(lr, state.count);
      return [mapTree(updates, (u) => tf.mul(u, factor)), { count: state.count + 1 }] as const;
    }),
});
