/**
 * What tests/nn_grad_test.ts (cpu, wasm) and tests/webgpu/custom_grad.ts (WebGPU) share: one comparison of a
 * hand-written backward pass (`customOp`, lib/core/autodiff.ts) against its plain-tfjs reference, by every
 * walk (tfjs's `tf.grads`, the project's `gradients`, and `gradients` seeded with `dy = w`).
 *
 * @module
 */
import { tf } from "../lib/deps.ts";
import { gradients } from "../lib/core/autodiff.ts";
import { relativeError } from "../lib/core/compare.ts";

/** ||x - ref|| / ||ref|| bounds: the forward runs the reference's own ops, the backward other formulas. */
export const VALUE_TOL = 1e-6;
export const GRAD_TOL = 1e-5;

export type Op = (...xs: tf.Tensor[]) => tf.Tensor;

/** One comparison: a custom op and its reference on the same inputs. */
export interface Case {
  readonly name: string;
  /** Names of the differentiated inputs, for the messages. */
  readonly names: readonly string[];
  /** Makes the differentiated inputs and any constants the two ops close over (on the active backend). */
  readonly make: () => { xs: tf.Tensor[]; consts?: tf.Tensor[]; custom: Op; reference: Op };
}

export const randn = (shape: number[], seed: number, mean = 0, std = 1) =>
  tf.randomNormal(shape, mean, std, "float32", seed);

/**
 * The value and the gradients of one case by every walk, against the reference's; the problems found
 * (empty when all agree), including leaked tensors.
 */
export const checkCase = async (c: Case, seed: number): Promise<string[]> => {
  const { xs, consts = [], custom, reference } = c.make();
  const w = tf.tidy(() => randn(reference(...xs).shape, seed));
  const before = tf.memory().numTensors;
  const loss = (f: Op) => (...v: tf.Tensor[]) => tf.sum(tf.mul(f(...v), w));
  const refValue = tf.tidy(() => reference(...xs));
  const value = tf.tidy(() => custom(...xs));
  const refGrads = tf.grads(loss(reference))(xs);
  const byTfjs = tf.grads(loss(custom))(xs);
  const byOwn = gradients(loss(custom), xs);
  const byOwnDy = gradients(custom, xs, w);
  const problems: string[] = [];
  const compare = async (what: string, got: tf.Tensor, want: tf.Tensor, tol: number) => {
    if (!tf.util.arraysEqual(got.shape, want.shape)) {
      problems.push(`${what}: shape [${got.shape}], reference [${want.shape}]`);
      return;
    }
    const e = relativeError(await got.data(), await want.data());
    if (!(e <= tol)) problems.push(`${what}: relative error ${e.toExponential(2)} > ${tol}`);
  };
  await compare("value", value, refValue, VALUE_TOL);
  await compare("value (gradients, dy = w)", byOwnDy.value, refValue, VALUE_TOL);
  for (const [i, name] of c.names.entries()) {
    await compare(`d${name} (tf.grads)`, byTfjs[i], refGrads[i], GRAD_TOL);
    await compare(`d${name} (gradients)`, byOwn.grads[i], refGrads[i], GRAD_TOL);
    await compare(`d${name} (gradients, dy = w)`, byOwnDy.grads[i], refGrads[i], GRAD_TOL);
  }
  tf.dispose([refValue, value, ...refGrads, ...byTfjs, byOwn.value, ...byOwn.grads, byOwnDy.value]);
  tf.dispose(byOwnDy.grads);
  const leaked = tf.memory().numTensors - before;
  if (leaked !== 0) problems.push(`${leaked} tensors left after disposing the results`);
  tf.dispose([...xs, ...consts, w]);
  return problems.map((p) => `${c.name} on ${tf.getBackend()}: ${p}`);
};
