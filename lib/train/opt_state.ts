/**
 * Any optimizer's state to and from a checkpoint: its tensors under their paths in the state tree
 * (`opt.1.mu.<param>` for AdamW's `chain(clip, adam, decay, lr)`), its host part as the JSON skeleton
 * `{ tree }` in the checkpoint's meta (lib/optim/state_tree.ts). Restoring rebuilds the state against the
 * optimizer's own `init` for the run's parameters, so a checkpoint of another optimizer, preset or shape is
 * refused by name.
 *
 * Checkpoints written before the state tree (AdamW only: tensors `mu.<param>` and `nu.<param>`, host
 * `{ adam, decay, lr }` counts) are still read, as the same AdamW state.
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Flat, Params } from "../core/tree.ts";
import { flattenState, type StateJson, unflattenState } from "../optim/state_tree.ts";
import { disposeState, type GradientTransformation } from "../optim/transform.ts";

/** The checkpoint's host part of an optimizer state. */
export interface OptHost {
  /** The state's JSON skeleton (`null` where a tensor is). */
  readonly tree: StateJson;
}

/** Takes a state apart for a checkpoint: `{ tensors, host }`. The tensors are the state's own (not copies). */
export const optStateToFlat = (state: unknown): { tensors: Flat; host: OptHost } => {
  const f = flattenState(state);
  return { tensors: f.tensors, host: { tree: f.host } };
};

type Legacy = { readonly adam: number; readonly decay: number; readonly lr: number };

const isLegacy = (h: unknown): h is Legacy =>
  typeof h === "object" && h !== null && !("tree" in h) &&
  ["adam", "decay", "lr"].every((k) => typeof (h as Record<string, unknown>)[k] === "number");

/** The pre-state-tree AdamW layout, renamed into the state tree of `like` (an AdamW chain's init). */
const fromLegacy = (
  like: unknown,
  tensors: Flat,
  host: Legacy,
  where: string,
): { tensors: Flat; host: StateJson } => {
  const tree = flattenState(like).host;
  const adamw = Array.isArray(tree) && tree.length === 4 &&
    tree.slice(1).every((s) => typeof s === "object" && s !== null && "count" in s) &&
    typeof tree[1] === "object" && tree[1] !== null && "mu" in tree[1] && "nu" in tree[1];
  if (!adamw) {
    throw new Error(
      `${where}: its optimizer state is in the AdamW-only layout of older checkpoints, and this run's ` +
        "optimizer is not AdamW",
    );
  }
  const renamed: Record<string, tf.Tensor> = {};
  for (const [n, t] of Object.entries(tensors)) renamed[/^(mu|nu)\./.test(n) ? `1.${n}` : n] = t;
  const [clip, adam, decay, lr] = tree as readonly Record<string, StateJson>[];
  return {
    tensors: renamed,
    host: [clip, { ...adam, count: host.adam }, { ...decay, count: host.decay }, { ...lr, count: host.lr }],
  };
};

/**
 * Rebuilds `optimizer`'s state for `params` from a checkpoint's tensors and host part (either layout). The
 * result holds the given tensors. Throws naming `where` and the first tensor or value that does not fit.
 */
export const optStateFromFlat = <S>(
  optimizer: GradientTransformation<S>,
  params: Params,
  tensors: Flat,
  host: unknown,
  where: string,
): S => {
  const like = optimizer.init(params);
  try {
    if (isLegacy(host)) return unflattenState(like, fromLegacy(like, tensors, host, where), where);
    if (typeof host !== "object" || host === null || !("tree" in host)) {
      throw new Error(`${where}: the optimizer state's host part is not { tree } (a damaged checkpoint?)`);
    }
    return unflattenState(like, { tensors, host: (host as OptHost).tree }, where);
  } finally {
    disposeState(like);
  }
};
