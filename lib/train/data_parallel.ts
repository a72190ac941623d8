/**
 * The data-parallel training step: every process (rank) holds the same parameters and optimizer state and
 * one slice of the global batch; it computes its gradients and loss parts, the ranks average them with one
 * bucketed all-reduce (lib/dist/collective.ts), and every rank applies the identical optimizer update.
 *
 * With `size` ranks of `B` images each, the step equals one process's step on the global batch of
 * `size * B` images (the mean over the global batch is the mean of the ranks' means) when rank `r` holds
 * rows `r * B .. (r + 1) * B` of that batch and draws the randomness of those rows: masks and crops are
 * keyed by sample (data/), drop path by `StepBatch.rows` (lib/nn/drop_path.ts). Float32 sums in another
 * order make the two differ in the last bits.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { flatten, type Params, type Scalar, unflatten } from "../core/tree.ts";
import type { CaeV2Params } from "../models/caev2.ts";
import type { BatchRows } from "../nn/drop_path.ts";
import { allReduceParts, type Collective } from "../dist/collective.ts";
import {
  accumulatedGrads,
  applyLocalGrads,
  type PretrainState,
  type StepBatch,
  type StepConfig,
  type StepResult,
} from "./step.ts";

/** The rows of the global batch that rank `rank` of `size` holds, for micro-batches of `batch` images. */
export const rowsOf = (rank: number, size: number, batch: number): BatchRows => ({
  offset: rank * batch,
  total: size * batch,
});

/**
 * Builds the data-parallel reducer: `(state, batches) -> Promise<{ state, metrics }>`, the same contract as
 * `trainStep` (never disposes its input; returns fresh tensors). `batches` are this rank's micro-batches,
 * each with its `rows`. With one rank it is `trainStep`.
 */
export const dataParallelStep = <S>(
  cfg: StepConfig<S>,
  c: Collective,
): (state: PretrainState<S>, batches: readonly StepBatch[]) => Promise<StepResult<S>> =>
async (state: PretrainState<S>, batches: readonly StepBatch[]): Promise<StepResult<S>> => {
  const local = accumulatedGrads(cfg, state, batches);
  if (c.size === 1) return applyLocalGrads(cfg, state, local);
  const flat = flatten(local.grads);
  const names = Object.keys(flat);
  let host: Float32Array[];
  try {
    host = await Promise.all([
      ...names.map((n) => flat[n].data()),
      tf.stack([...local.means]).data(),
    ]) as Float32Array[];
  } finally {
    tf.dispose([...Object.values(flat), ...local.means]);
  }
  await allReduceParts(c, host);
  const inv = 1 / c.size;
  for (const h of host) for (let i = 0; i < h.length; i++) h[i] *= inv;
  const grads: Record<string, tf.Tensor> = {};
  names.forEach((n, i) => (grads[n] = tf.tensor(host[i], flat[n].shape, "float32")));
  const m = host[names.length];
  const means = [tf.scalar(m[0]), tf.scalar(m[1]), tf.scalar(m[2])] as [Scalar, Scalar, Scalar];
  return applyLocalGrads(cfg, state, { grads: unflatten(grads) as Params as CaeV2Params, means });
};

/**
 * Makes every rank's parameter record equal to rank 0's (at the start of a run: the same start everywhere).
 * Returns a new record; the caller disposes the old one.
 */
export const broadcastParams = async <P extends Params>(c: Collective, params: P): Promise<P> => {
  const flat = flatten(params);
  const out: Record<string, tf.Tensor> = {};
  for (const [name, t] of Object.entries(flat)) {
    const data = new Float32Array(await t.data() as Float32Array);
    await c.broadcast(data, 0);
    out[name] = tf.tensor(data, t.shape, "float32");
  }
  return unflatten(out) as P;
};
