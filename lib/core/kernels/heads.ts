/**
 * Attention's batched products with the heads read and written in place, on the tiled matmul
 * (lib/core/kernels/matmul.ts, through its {@link MatrixView}s).
 *
 * Why: attention works on `[B, H, N, dh]` heads, but the projections make and take `[B, N, H dh]`. With
 * contiguous operands every attention layer pays a transpose of the qkv projection, a slice per q, k, v,
 * and a transpose back before the output projection; its backward a pad of each of dq, dk, dv to the
 * width of qkv, two adds, and the transposes again (`Transpose`, `PadV2` and `Slice` were 6% of the ViT-B
 * step on the H200). Here q, k and v are read straight out of the projection (head `h` of row `n` is
 * columns `col + h dh ..` of row `n`), the context `P v` is written merged, and the gradients of q, k and v
 * are written side by side into one `[B, N, 3 H dh]` tensor: no copy of a head exists in either pass.
 *
 * The products are the ones of lib/nn/sdpa.ts `attentionCore`, term for term: the same tiles (the
 * chooser sees the same shapes), the scale applied where that code applies it (to q as it is loaded, to
 * the product `dS k` in the epilogue), so the values are the same bit for bit.
 *
 * @module
 */
import { tf, type WebGPUBackend } from "../../deps.ts";
import type { TensorInfo } from "./program.ts";
import type { Info, KernelArgs, KernelConfig } from "./override.ts";
import {
  fastMatMulRegistered,
  type GemmScale,
  type MatrixView,
  planChoices,
  planMatMul,
  runMatMul,
} from "./matmul.ts";

/**
 * `H` heads of `dh` columns in place: columns `[col, col + H dh)` of `x: [B, N, W]`, head `h` at
 * `col + h dh`. A head is the matrix `[N, dh]` with rows `W` apart.
 */
export interface Heads {
  readonly x: tf.Tensor;
  readonly col: number;
}

/**
 * The tfjs kernel of one head product (a kernel, so that `tf.profile` and the step profile list it and its
 * time). Inputs `a`, `b`, and `into` where the product writes into an existing tensor.
 */
const HEAD_MATMUL = "CaeHeadMatMul";

/** The kernel's attrs. A column of -1: the operand (output) is a contiguous `[B H, rows, cols]` tensor. */
interface HeadAttrs {
  readonly transA: boolean;
  readonly transB: boolean;
  readonly heads: number;
  readonly dh: number;
  readonly aCol: number;
  readonly bCol: number;
  readonly cCol: number;
  /** The width `W` of a fresh heads output `[B, M, W]` (its first product). */
  readonly cWidth: number;
  readonly scale: GemmScale;
  readonly alpha: number;
}

const stored = (x: TensorInfo, col: number, dh: number): [number, number] =>
  col < 0 ? [x.shape[1], x.shape[2]] : [x.shape[1], dh];

const view = (x: TensorInfo, col: number, heads: number, dh: number): MatrixView => {
  const [, r, c] = x.shape as [number, number, number];
  return col < 0
    ? { base: 0, outer: heads * r * c, inner: r * c, ld: c }
    : { base: col, outer: r * c, inner: dh, ld: c };
};

const headMatMulKernel = (args: KernelArgs): Info => {
  const { a, b, into } = args.inputs as unknown as { a: TensorInfo; b: TensorInfo; into?: TensorInfo };
  const at = args.attrs as unknown as HeadAttrs;
  const backend = args.backend as WebGPUBackend;
  // The batch: `B` of a heads operand, `B H / H` of a contiguous one.
  const batch = at.aCol >= 0 ? a.shape[0] : at.bCol >= 0 ? b.shape[0] : a.shape[0] / at.heads;
  const bh = batch * at.heads;
  const [ra, ca] = stored(a, at.aCol, at.dh), [rb, cb] = stored(b, at.bCol, at.dh);
  // Planned as the contiguous product of the same shapes (the tile a table or the default rule gives
  // attention's products), with no K split: a product on views writes its output in place.
  const first = planMatMul([bh, ra, ca], [bh, rb, cb], at.transA, at.transB);
  if (first === null) throw new Error(`${HEAD_MATMUL}: [${ra}, ${ca}] x [${rb}, ${cb}] is not planned`);
  const plan = first.splits === 1 ? first : planMatMul([bh, ra, ca], [bh, rb, cb], at.transA, at.transB, {
    tile: first.tile,
    splits: 1,
    ...planChoices(first),
  })!;
  const { m, n } = plan;
  let c: MatrixView, outShape: number[];
  if (at.cCol < 0) {
    c = { base: 0, outer: at.heads * m * n, inner: m * n, ld: n };
    outShape = [bh, m, n];
  } else {
    const width = into?.shape[2] ?? at.cWidth;
    if (n !== at.dh || (into !== undefined && (into.shape[0] !== batch || into.shape[1] !== m))) {
      throw new Error(`${HEAD_MATMUL}: [${bh}, ${m}, ${n}] does not fit heads of [${into?.shape}]`);
    }
    c = { base: at.cCol, outer: m * width, inner: at.dh, ld: width };
    outShape = [batch, m, width];
  }
  const out = runMatMul(backend, a, b, plan, {
    views: {
      heads: at.heads,
      a: view(a, at.aCol, at.heads, at.dh),
      b: view(b, at.bCol, at.heads, at.dh),
      c,
      outShape,
      into,
      scale: at.scale,
      alpha: at.alpha,
    },
  });
  // Written into `into`: the result is one more handle on its data (as tfjs's Reshape returns one).
  if (into !== undefined) backend.incRef(into.dataId);
  return out as unknown as Info;
};

/** Registers `CaeHeadMatMul` on WebGPU (idempotent; a no-op while WebGPU is not loaded). */
export const registerHeadMatMul = (): void => {
  // The WebGPU package is loaded when tfjs has its kernels (asking for the backend itself would start it).
  if (
    tf.getKernel("BatchMatMul", "webgpu") === undefined || tf.getKernel(HEAD_MATMUL, "webgpu") !== undefined
  ) {
    return;
  }
  tf.registerKernel({
    kernelName: HEAD_MATMUL,
    backendName: "webgpu",
    kernelFunc: headMatMulKernel as unknown as KernelConfig["kernelFunc"],
  });
};

/** Removes `CaeHeadMatMul` (idempotent). */
export const unregisterHeadMatMul = (): void => {
  if (tf.getKernel(HEAD_MATMUL, "webgpu") !== undefined) tf.unregisterKernel(HEAD_MATMUL, "webgpu");
};

/**
 * Whether the in-place head products run now: WebGPU active, `CaeHeadMatMul` and the tiled matmul
 * registered (lib/core/kernels/dispatch.ts `registerKernels`), and `batchHeads` (B H) products within one
 * dispatch.
 */
export const headProductsOn = (batchHeads = 1): boolean =>
  tf.getBackend() === "webgpu" && tf.getKernel(HEAD_MATMUL, "webgpu") !== undefined &&
  fastMatMulRegistered() &&
  batchHeads <= MAX_PRODUCTS;

/** One workgroup layer per (batch, head) pair: WebGPU's dispatch limit per dimension. */
const MAX_PRODUCTS = 65535;

type Operand = Heads | tf.Tensor;

const colOf = (o: Operand): number => (o instanceof tf.Tensor ? -1 : o.col);
const tensorOf = (o: Operand): tf.Tensor => (o instanceof tf.Tensor ? o : o.x);

/** An output `[B, N, W]` written head by head: its shape, and its tensor once the first product has run. */
export interface Written {
  readonly shape: [number, number, number];
  tensor?: tf.Tensor3D;
}

/**
 * `op(A) op(B)` for every (batch, head) pair. Operands: heads in place, or contiguous `[B H, rows, cols]`
 * tensors. Output: a fresh `[B H, M, N]` tensor, or (`target`) the heads at `target.col` of `target.into`.
 */
const product = (
  a: Operand,
  transA: boolean,
  b: Operand,
  transB: boolean,
  heads: number,
  dh: number,
  target?: { readonly col: number; readonly into: Written },
  scale: GemmScale = "none",
  alpha = 1,
): tf.Tensor3D => {
  const attrs: HeadAttrs = {
    transA,
    transB,
    heads,
    dh,
    aCol: colOf(a),
    bCol: colOf(b),
    cCol: target?.col ?? -1,
    cWidth: target?.into.shape[2] ?? 0,
    scale,
    alpha,
  };
  const existing = target?.into.tensor;
  const inputs: tf.NamedTensorMap = { a: tensorOf(a), b: tensorOf(b) };
  if (existing) inputs.into = existing;
  return tf.engine().runKernel(HEAD_MATMUL, inputs, attrs as unknown as tf.NamedAttrMap) as tf.Tensor3D;
};

/** Writes a head product into `into`: the first one makes its tensor, the others write into it. */
const writeInto = (into: Written, result: tf.Tensor3D): void => {
  if (into.tensor === undefined) into.tensor = result;
  else result.dispose(); // one more handle on the same data
};

/** An output `[B, N, W]` to be written head by head ({@link written} gives its tensor once complete). */
export const writing = (shape: [number, number, number]): Written => ({ shape });

/** The tensor of a {@link Written} every column of which has been written. */
export const written = (w: Written): tf.Tensor3D => {
  if (w.tensor === undefined) throw new Error("head products: an output nothing was written to");
  return w.tensor;
};

/** Scores `(q s) k^T: [B H, Nq, Nk]` (q scaled as it is loaded, as `tf.mul(q, s)` would). */
export const headScores = (q: Heads, k: Heads, heads: number, dh: number, s: number): tf.Tensor3D =>
  product(q, false, k, true, heads, dh, undefined, "a", s);

/** `g v^T: [B H, Nq, Nk]` for `g` (the gradient of the merged context) and v in place. */
export const headOuter = (g: Heads, v: Heads, heads: number, dh: number): tf.Tensor3D =>
  product(g, false, v, true, heads, dh);

/** `p v` (`p: [B H, Nq, Nk]`) into the heads at `col` of `into` (the merged context `[B, Nq, H dh]`). */
export const headContext = (
  p: tf.Tensor,
  v: Heads,
  heads: number,
  dh: number,
  into: Written,
  col = 0,
): void => writeInto(into, product(p, false, v, false, heads, dh, { col, into }));

/** `p^T g` (`p: [B H, Nq, Nk]`, g heads `[Nq, dh]`) into the heads at `col` of `into`: dv. */
export const headTransposedContext = (
  p: tf.Tensor,
  g: Heads,
  heads: number,
  dh: number,
  into: Written,
  col: number,
): void => writeInto(into, product(p, true, g, false, heads, dh, { col, into }));

/** `(ds k) s` into the heads at `col` of `into`: dq. */
export const headQueryGrad = (
  ds: tf.Tensor,
  k: Heads,
  heads: number,
  dh: number,
  s: number,
  into: Written,
  col: number,
): void => writeInto(into, product(ds, false, k, false, heads, dh, { col, into }, "c", s));

/** `ds^T (q s)` into the heads at `col` of `into`: dk. */
export const headKeyGrad = (
  ds: tf.Tensor,
  q: Heads,
  heads: number,
  dh: number,
  s: number,
  into: Written,
  col: number,
): void => writeInto(into, product(ds, true, q, false, heads, dh, { col, into }, "b", s));
