/**
 * Any optimizer's state as flat tensors plus a JSON skeleton, and back: what a checkpoint needs to save and
 * restore a state without knowing which optimizer made it.
 *
 * A state is a tree of tuples, records, tensors and host values (counts). {@link flattenState} names each
 * tensor by its path, the indices and keys joined with "." as `flatten` names parameters (AdamW's
 * `chain(clip, adam, decay, lr)`: `1.mu.encoder.cls`, `1.nu.encoder.cls`, ...), and keeps the rest as a
 * JSON skeleton of the same shape with `null` where a tensor was (`[{}, { count: 3, mu: {...}, nu: {...} },
 * { count: 3 }, { count: 3 }]`). {@link unflattenState} rebuilds the state against the optimizer's fresh
 * `init` for the same parameters: the tree, every tensor's name and shape and every host value's type must
 * match it, and anything missing or left over is named.
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Flat } from "../core/tree.ts";

/** A JSON value (the skeleton of a state). */
export type StateJson =
  | null
  | boolean
  | number
  | string
  | readonly StateJson[]
  | { readonly [key: string]: StateJson };

/** A state taken apart: its tensors by path, and the JSON skeleton that holds everything else. */
export interface FlatState {
  /** The state's own tensors (not copies), by dotted path. */
  readonly tensors: Flat;
  /** The state with each tensor replaced by `null`. */
  readonly host: StateJson;
}

const join = (prefix: string, key: string | number): string =>
  prefix === "" ? String(key) : `${prefix}.${key}`;

const isRecord = (x: unknown): x is Readonly<Record<string, unknown>> =>
  typeof x === "object" && x !== null && !Array.isArray(x) && !(x instanceof tf.Tensor);

/**
 * Takes a state apart into its tensors (by path) and a JSON skeleton. Throws on a value that is neither a
 * tensor, a tuple, a record nor a JSON scalar (a function, a typed array, a non-finite count).
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
import type { Flat } from "../core/tree.ts";
 * import { flattenState } from "./state_tree.ts";
 * import { scaleByAdam } from "./adam.ts";
 * await tf.setBackend("cpu");
 * const params = { w: tf.zeros([2]) };
 * const { tensors, host } = flattenState(scaleByAdam().init(params));
 * // tensors: "mu.w", "nu.w"; host: { count: 0, mu: { w: null }, nu: { w: null } }
 * if (Object.keys(tensors).join() !== "mu.w,nu.w" || JSON.stringify(host) !== '{"count":0,"mu":{"w":null},"nu":{"w":null}}') {
 *   throw new Error("unexpected");
 * }
 * ```
 */
export const flattenState = (state: unknown): FlatState => {
  const tensors: Record<string, tf.Tensor> = {};
  const walk = (x: unknown, path: string): StateJson => {
    if (x instanceof tf.Tensor) {
      tensors[path] = x;
      return null;
    }
    if (Array.isArray(x)) return x.map((v, i) => walk(v, join(path, i)));
    if (isRecord(x)) {
      return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, walk(v, join(path, k))]));
    }
    if (typeof x === "number" && !Number.isFinite(x)) {
      throw new Error(`flattenState: "${path}" is ${x}, which JSON cannot hold`);
    }
    if (x === null || typeof x === "number" || typeof x === "string" || typeof x === "boolean") return x;
    throw new Error(`flattenState: "${path}" is a ${typeof x}, not a tensor, tuple, record or JSON value`);
  };
  const host = walk(state, "");
  return { tensors, host };
};

const kind = (x: unknown): string =>
  x === undefined
    ? "missing"
    : x instanceof tf.Tensor
    ? "a tensor"
    : Array.isArray(x)
    ? "a tuple"
    : x === null
    ? "null"
    : isRecord(x)
    ? "a record"
    : `a ${typeof x}`;

/**
 * Rebuilds a state from {@link flattenState}'s parts, shaped like `like` (the optimizer's `init` for the
 * same parameters; the caller disposes it). The result holds the given tensors themselves. Throws naming
 * `where` and the first path whose structure, shape or type differs, a missing tensor, or tensors that
 * belong nowhere.
 */
export const unflattenState = <S>(like: S, flat: FlatState, where: string): S => {
  const used = new Set<string>();
  const fail = (path: string, what: string): never => {
    throw new Error(`${where}: optimizer state "${path || "(root)"}" ${what}`);
  };
  const walk = (l: unknown, h: StateJson | undefined, path: string): unknown => {
    if (l instanceof tf.Tensor) {
      const t = flat.tensors[path];
      if (t === undefined) return fail(path, "is missing");
      if (t.shape.join() !== l.shape.join()) {
        return fail(path, `has shape [${t.shape}], expected [${l.shape}]`);
      }
      if (t.dtype !== l.dtype) return fail(path, `is ${t.dtype}, expected ${l.dtype}`);
      used.add(path);
      return t;
    }
    if (Array.isArray(l)) {
      if (!Array.isArray(h) || h.length !== l.length) {
        return fail(
          path,
          `is ${kind(h)}${Array.isArray(h) ? ` of ${h.length}` : ""}, expected a tuple of ${l.length}`,
        );
      }
      return l.map((v, i) => walk(v, h[i], join(path, i)));
    }
    if (isRecord(l)) {
      if (!isRecord(h)) return fail(path, `is ${kind(h)}, expected a record`);
      const extra = Object.keys(h).filter((k) => !(k in l));
      if (extra.length > 0) {
        return fail(path, `has entries this optimizer does not: ${extra.slice(0, 3).join(", ")}`);
      }
      return Object.fromEntries(Object.entries(l).map(([k, v]) => [k, walk(v, h[k], join(path, k))]));
    }
    if (typeof h !== typeof l || (l === null) !== (h === null)) {
      return fail(path, `is ${kind(h)}, expected ${kind(l)}`);
    }
    return h;
  };
  const state = walk(like, flat.host, "") as S;
  const left = Object.keys(flat.tensors).filter((n) => !used.has(n));
  if (left.length > 0) {
    throw new Error(
      `${where}: ${left.length} optimizer state tensor(s) belong to no part of this optimizer's state ` +
        `(${left.slice(0, 3).join(", ")})`,
    );
  }
  return state;
};
