/**
 * Parameter records: readonly nested records of tensors ("parameters are data", docs/design.md, principle 1).
 * `flatten` / `unflatten` convert to and from dotted names (`encoder.blocks.0.attn.qkv.w`); gradients,
 * optimizer masks, checkpoints and weight conversion all speak those names.
 *
 * @module
 */
import { tf } from "../deps.ts";

/** A tensor leaf. */
export type Tensor = tf.Tensor;
/** A rank-0 tensor (a loss, a norm). */
export type Scalar = tf.Scalar;
/** A rank-1 tensor `[N]` (a bias, a LayerNorm scale). */
export type Tensor1D = tf.Tensor1D;
/** A rank-2 tensor `[in, out]` (a kernel). */
export type Tensor2D = tf.Tensor2D;
/** A rank-3 tensor `[B, N, D]` (tokens). */
export type Tensor3D = tf.Tensor3D;
/** A rank-4 tensor `[B, H, W, C]` (images) or `[B, H, N, dh]` (heads). */
export type Tensor4D = tf.Tensor4D;

/** A parameter record: nested readonly records whose leaves are tensors. */
export type Params = { readonly [name: string]: Tensor | Params };

/** A flat view of a record: dotted name -> tensor. */
export type Flat = Readonly<Record<string, Tensor>>;

const isTensor = (x: unknown): x is Tensor => x instanceof tf.Tensor;

/**
 * Flattens a record into dotted names, in key insertion order.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { flatten } from "./tree.ts";
 * await tf.setBackend("cpu");
 * const flat = flatten({ a: { w: tf.zeros([2]) } });
 * if (Object.keys(flat)[0] !== "a.w") throw new Error("unexpected");
 * ```
 */
export const flatten = (p: Params, prefix = ""): Flat => {
  const out: Record<string, Tensor> = {};
  const walk = (node: Params, pre: string) => {
    for (const [k, v] of Object.entries(node)) {
      const name = pre === "" ? k : `${pre}.${k}`;
      if (isTensor(v)) out[name] = v;
      else walk(v, name);
    }
  };
  walk(p, prefix);
  return out;
};

/** Inverse of {@link flatten}: builds nested records from dotted names. */
export const unflatten = (flat: Flat): Params => {
  // deno-lint-ignore no-explicit-any
  const root: Record<string, any> = {};
  for (const [name, v] of Object.entries(flat)) {
    const parts = name.split(".");
    let node = root;
    for (const p of parts.slice(0, -1)) {
      if (node[p] === undefined) node[p] = {};
      if (isTensor(node[p])) throw new Error(`unflatten: "${name}" nests under a tensor leaf "${p}"`);
      node = node[p];
    }
    const last = parts[parts.length - 1];
    if (node[last] !== undefined) throw new Error(`unflatten: duplicate name "${name}"`);
    node[last] = v;
  }
  return root as Params;
};

/** Applies `f` to every leaf, keeping the structure. `f` receives the dotted name. */
export const mapTree = <P extends Params>(p: P, f: (x: Tensor, name: string) => Tensor): P => {
  const flat = flatten(p);
  const out: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(flat)) out[k] = f(v, k);
  return unflatten(out) as P;
};

/**
 * Combines two records with the same names leaf by leaf. Throws naming the first mismatched name.
 */
export const zipTree = <P extends Params>(
  a: P,
  b: Params,
  f: (x: Tensor, y: Tensor, name: string) => Tensor,
): P => {
  const fa = flatten(a), fb = flatten(b);
  const ka = Object.keys(fa), kb = new Set(Object.keys(fb));
  for (const k of ka) if (!kb.has(k)) throw new Error(`zipTree: "${k}" is missing in the second record`);
  if (kb.size !== ka.length) {
    const extra = [...kb].find((k) => !(k in fa));
    throw new Error(`zipTree: "${extra}" is missing in the first record`);
  }
  const out: Record<string, Tensor> = {};
  for (const k of ka) out[k] = f(fa[k], fb[k], k);
  return unflatten(out) as P;
};

/** Disposes every leaf of a record (or several). */
export const disposeTree = (...ps: (Params | undefined)[]): void => {
  for (const p of ps) if (p) { for (const v of Object.values(flatten(p))) v.dispose(); }
};

/** Number of scalar entries in a record. */
export const countParams = (p: Params): number => Object.values(flatten(p)).reduce((n, v) => n + v.size, 0);

const isRecord = (x: unknown): x is Readonly<Record<string, unknown>> => typeof x === "object" && x !== null;

/** Every tensor inside a value made of arrays, records and tensors (states, param records, tuples). */
export const tensorsIn = (x: unknown): Tensor[] => {
  const out: Tensor[] = [];
  const walk = (v: unknown): void => {
    if (isTensor(v)) out.push(v);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (isRecord(v)) Object.values(v).forEach(walk);
  };
  walk(x);
  return out;
};

/**
 * `tf.tidy` for any result type: runs `fn`, keeps the tensors inside its result and disposes every other
 * tensor created meanwhile. (`tf.tidy` itself only types results that are `TensorContainer`s.)
 */
export const tidy = <T>(fn: () => T): T => {
  const box: T[] = [];
  tf.tidy(() => {
    const result = fn();
    box.push(result);
    return tensorsIn(result);
  });
  return box[0];
};
