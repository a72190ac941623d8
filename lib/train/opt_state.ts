/**
 * AdamW's optimizer state to and from flat tensors + host JSON, for checkpoints: tensors `mu.<param>` and
 * `nu.<param>`, counts as JSON. Restoring checks that every parameter has both moments.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { type Flat, flatten, type Params, unflatten } from "../core/tree.ts";
import type { AdamWState } from "../optim/adamw.ts";

/** The host part of the state. */
export interface AdamWHost {
  readonly adam: number;
  readonly decay: number;
  readonly lr: number;
}

/** Flattens the state: `{ tensors, host }`. The tensors are the state's own (not copies). */
export const adamwStateToFlat = (s: AdamWState): { tensors: Flat; host: AdamWHost } => {
  const tensors: Record<string, tf.Tensor> = {};
  for (const [n, t] of Object.entries(flatten(s[1].mu))) tensors[`mu.${n}`] = t;
  for (const [n, t] of Object.entries(flatten(s[1].nu))) tensors[`nu.${n}`] = t;
  return { tensors, host: { adam: s[1].count, decay: s[2].count, lr: s[3].count } };
};

/** Rebuilds the state for `params` from checkpoint tensors; throws naming the first missing moment. */
export const adamwStateFromFlat = (
  params: Params,
  tensors: Flat,
  host: AdamWHost,
  where: string,
): AdamWState => {
  const mu: Record<string, tf.Tensor> = {}, nu: Record<string, tf.Tensor> = {};
  for (const [n, p] of Object.entries(flatten(params))) {
    for (const [k, dst] of [["mu", mu], ["nu", nu]] as const) {
      const t = tensors[`${k}.${n}`];
      if (!t) throw new Error(`${where}: optimizer state "${k}.${n}" is missing`);
      if (t.shape.join() !== p.shape.join()) {
        throw new Error(
          `${where}: optimizer state "${k}.${n}" has shape [${t.shape}], expected [${p.shape}]`,
        );
      }
      dst[n] = t;
    }
  }
  return [{}, { count: host.adam, mu: unflatten(mu), nu: unflatten(nu) }, { count: host.decay }, {
    count: host.lr,
  }];
};
