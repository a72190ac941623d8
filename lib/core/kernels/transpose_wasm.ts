/**
 * The wasm backend's `Transpose` of rank 5 and above, done as a few rank-4 transposes. Registered over
 * tfjs-backend-wasm's kernel, which keeps every rank up to 4.
 *
 * Why: tfjs-backend-wasm 4.22 has specialised loops up to rank 4 and a generic per-element index loop
 * beyond. Attention splits q, k and v with one rank-5 transpose, `[B, N, 3, H, dh] -> [3, B, H, N, dh]`,
 * and its gradient is another. Measured on the 2-core CPU machine (Deno 2.9.6, SIMD, 1 thread,
 * 2026-11-26), ms per call for `[8, 197, 3, 12, 64]` with perm `[2, 0, 3, 1, 4]` (the ViT-B/16 teacher at
 * batch 8): stock 206.5, as the two moves below 21.8 (same bytes). In the CPU target's step the rank-5
 * transposes took 3.7 s of 25.9 (`deno task bench --model tiny --batch 8 --backend wasm`).
 *
 * How: any permutation is a sequence of single-axis moves (the axis wanted at position p is moved there
 * from its current position i > p). With the axes merged around it, one move is always the rank-4
 * transpose `[A, M, X, C] -> [A, X, M, C]` (perm `[0, 2, 1, 3]`): A = the axes already placed, M = those
 * between p and i, X = the moved axis, C = the rest. A rank-r permutation needs at most r - 1 moves.
 *
 * @module
 */
import { tf } from "../../deps.ts";
import { type Info, type KernelArgs, kernelOverride } from "./override.ts";

/** One single-axis move as a rank-4 transpose of the merged shape `[A, M, X, C]` with perm `[0, 2, 1, 3]`. */
export type Move = readonly [a: number, m: number, x: number, c: number];

/**
 * The moves that apply `perm` to a tensor of `shape`, in order (empty for the identity).
 *
 * @example
 * ```ts
 * import { planTransposeMoves } from "./transpose_wasm.ts";
 * // Attention's q/k/v split: two rank-4 transposes instead of one of rank 5.
 * const moves = planTransposeMoves([8, 197, 3, 12, 64], [2, 0, 3, 1, 4]);
 * if (JSON.stringify(moves) !== "[[1,1576,3,768],[24,197,12,64]]") throw new Error("unexpected");
 * ```
 */
export const planTransposeMoves = (shape: readonly number[], perm: readonly number[]): Move[] => {
  const order = [...perm.keys()]; // order[j] = the input axis now at position j
  const moves: Move[] = [];
  for (let p = 0; p < perm.length; p++) {
    const i = order.indexOf(perm[p]);
    if (i === p) continue;
    const dims = order.map((axis) => shape[axis]);
    const size = tf.util.sizeFromShape;
    moves.push([size(dims.slice(0, p)), size(dims.slice(p, i)), dims[i], size(dims.slice(i + 1))]);
    order.splice(p, 0, ...order.splice(i, 1));
  }
  return moves;
};

const transpose = (args: KernelArgs, stock: (args: KernelArgs) => Info) => {
  const { x } = args.inputs as unknown as { x: Info };
  const { perm } = args.attrs as unknown as { perm: number[] };
  if (x.shape.length <= 4) return stock(args);
  const backend = args.backend as unknown as { disposeData(id: object): void };
  let cur: Info = x;
  for (const [a, m, xx, c] of planTransposeMoves(x.shape, perm)) {
    // The same buffer seen as [A, M, X, C]: a reshape is only a new shape on the same data.
    const input: Info = { dataId: cur.dataId, shape: [a, m, xx, c], dtype: cur.dtype };
    const out = stock({
      inputs: { x: input } as never,
      backend: args.backend,
      attrs: { perm: [0, 2, 1, 3] } as never,
    }) as Info;
    if (cur !== x) backend.disposeData(cur.dataId);
    cur = out;
  }
  if (cur === x) return stock(args); // identity permutation: let tfjs make its copy
  return { dataId: cur.dataId, shape: perm.map((axis) => x.shape[axis]), dtype: x.dtype };
};

const override = kernelOverride("Transpose", "wasm", transpose);

/** Registers the rank-5+ routing over wasm's Transpose (idempotent; no-op without the wasm backend). */
export const registerWasmTranspose = override.register;

/** Puts wasm's own Transpose back (idempotent). */
export const restoreWasmTranspose = override.restore;
