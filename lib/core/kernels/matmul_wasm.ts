/**
 * The wasm backend's `BatchMatMul`: float32 products (rank 2, or batched with the same batch on both sides)
 * go to the packed multi-threaded SIMD kernel of lib/core/kernels/gemm_pool.ts in any transpose; small
 * rank-2 products stay on XNNPACK, through an explicit transpose where one operand is transposed.
 * Registered over tfjs-backend-wasm's kernel (the stock one runs everything else: broadcast batch dims,
 * other dtypes, products too large for the kernel's shared memory).
 *
 * Why, measured on the 2-core CPU machine (Deno 2.9.6, tfjs-backend-wasm 4.22 with SIMD, 1 thread):
 * - tfjs-wasm multiplies untransposed operands with XNNPACK but transposed ones on a slow path, ms per call:
 *   `[334,768]^T x [334,192]` 62.2 (transposeA) vs 5.4 (transpose, then plain); `[334,192] x [768,192]^T`
 *   63.3 vs 11.1. Every linear layer's backward has one of each (dW = x^T dy, dx = dy W^T).
 * - Its batched products (attention's `q k^T`, `p v` and their gradients) run on a scalar loop at ~2
 *   GFLOP/s: `[8, 12, 197, 64] x [8, 12, 197, 64]^T` 223 ms.
 * - XNNPACK runs on one thread; the packed kernel uses both cores (BENCHMARKS.md, "The CPU target").
 *
 * @module
 */
import { tf } from "../../deps.ts";
import { type Info, type KernelArgs, kernelOverride } from "./override.ts";
import { gemm, gemmAvailable } from "./gemm_pool.ts";

/** Rank-2 products smaller than this (M K N) stay on XNNPACK: packing and waking workers would not pay. */
const GEMM_MIN_WORK = 1 << 18;

type WasmBackend = {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(info: Info): Float32Array;
  disposeData(id: object): void;
};

const batchMatMul = (args: KernelArgs, stock: (args: KernelArgs) => Info) => {
  const { a, b } = args.inputs as unknown as { a: Info; b: Info };
  const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
  const packed = packedGemm(args, a, b, transposeA, transposeB);
  if (packed !== undefined) return packed;
  const batched = a.shape.slice(0, -2).some((d) => d > 1) || b.shape.slice(0, -2).some((d) => d > 1);
  if (batched || (!transposeA && !transposeB)) return stock(args);
  const transpose = tf.getKernel("Transpose", "wasm")!.kernelFunc;
  const t = (x: Info): Info => {
    const r = x.shape.length;
    const perm = [...Array(r - 2).keys(), r - 1, r - 2];
    return transpose({ inputs: { x } as never, backend: args.backend, attrs: { perm } as never }) as Info;
  };
  const a2 = transposeA ? t(a) : a, b2 = transposeB ? t(b) : b;
  const out = stock({
    inputs: { a: a2, b: b2 } as never,
    backend: args.backend,
    attrs: { ...args.attrs, transposeA: false, transposeB: false },
  });
  const backend = args.backend as unknown as WasmBackend;
  for (const x of [a2, b2]) if (x !== a && x !== b) backend.disposeData(x.dataId);
  return out;
};

/**
 * Products on the packed kernel; undefined for what it does not take (broadcast batch dims, other dtypes,
 * small rank-2 products, the kernel off or unavailable, operands beyond its memory), which tfjs runs.
 */
const packedGemm = (args: KernelArgs, a: Info, b: Info, tA: boolean, tB: boolean): Info | undefined => {
  // Batch dims without leading 1s must agree: broadcasting ([12, 1] against [1, 12]) is left to tfjs.
  const batch = (x: Info) => x.shape.slice(0, -2).join(",").replace(/^(1,)+/, "");
  if (batch(a) !== batch(b) || a.dtype !== "float32" || b.dtype !== "float32" || !gemmAvailable()) {
    return undefined;
  }
  const G = tf.util.sizeFromShape(a.shape.slice(0, -2));
  const [ra, ca] = a.shape.slice(-2), [rb, cb] = b.shape.slice(-2);
  const [M, K] = tA ? [ca, ra] : [ra, ca];
  const N = tB ? rb : cb;
  if (G === 1 && M * K * N < GEMM_MIN_WORK) return undefined;
  const backend = args.backend as unknown as WasmBackend;
  // The output first: making it may grow tfjs's heap, which would detach views taken before.
  const out = backend.makeOutput(
    [...(a.shape.length >= b.shape.length ? a : b).shape.slice(0, -2), M, N],
    "float32",
  );
  const done = gemm(
    G,
    M,
    K,
    N,
    { data: backend.typedArrayFromHeap(a), transposed: tA },
    { data: backend.typedArrayFromHeap(b), transposed: tB },
    backend.typedArrayFromHeap(out),
  );
  if (done) return out;
  backend.disposeData(out.dataId);
  return undefined;
};

const override = kernelOverride("BatchMatMul", "wasm", batchMatMul);

/** Registers the routing over wasm's BatchMatMul (idempotent; no-op without the wasm backend). */
export const registerWasmMatMul = override.register;

/** Puts wasm's own BatchMatMul back (idempotent). */
export const restoreWasmMatMul = override.restore;
