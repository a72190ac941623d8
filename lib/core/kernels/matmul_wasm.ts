/**
 * The wasm backend's `BatchMatMul`: a rank-2 product with a transposed operand goes through an explicit
 * transpose and the untransposed product, a batched product through a SIMD kernel. Registered over
 * tfjs-backend-wasm's kernel (the stock one runs everything else).
 *
 * Why: tfjs-backend-wasm 4.22 multiplies untransposed operands with XNNPACK but transposed ones with a
 * slow path. Measured on the 2-core CPU machine (Deno 2.9.6, SIMD, 1 thread), ms per call:
 * `[334,768]^T x [334,192]` 62.2 (transposeA) vs 5.4 (transpose, then plain); `[334,192] x [768,192]^T`
 * 63.3 vs 11.1; plain `[334,192] x [192,768]` 6.7. Every linear layer's backward has one of each (dW =
 * x^T dy, dx = dy W^T). Batched products (attention's `q k^T`, `p v` and their gradients) go to a WebAssembly
 * SIMD kernel (lib/core/kernels/bmm_simd.ts): `[8, 12, 197, 64] x [8, 12, 197, 64]^T` 223 ms stock, ~26 ms
 * there.
 *
 * @module
 */
import { tf } from "../../deps.ts";
import { type Info, type KernelArgs, kernelOverride } from "./override.ts";
import { batchedMatMul, simdAvailable } from "./bmm_simd.ts";

const batchMatMul = (args: KernelArgs, stock: (args: KernelArgs) => Info) => {
  const { a, b } = args.inputs as unknown as { a: Info; b: Info };
  const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
  const batched = a.shape.slice(0, -2).some((d) => d > 1) || b.shape.slice(0, -2).some((d) => d > 1);
  if (batched) return batchedSimd(args, a, b, transposeA, transposeB) ?? stock(args);
  if (!transposeA && !transposeB) return stock(args);
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
  const backend = args.backend as unknown as { disposeData(id: object): void };
  for (const x of [a2, b2]) if (x !== a && x !== b) backend.disposeData(x.dataId);
  return out;
};

type WasmBackend = {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(info: Info): Float32Array;
};

/**
 * Batched products (same batch size on both sides, float32) through lib/core/kernels/bmm_simd.ts; undefined
 * for what it does not take (broadcast batch dims, other dtypes, no SIMD), which the stock kernel runs.
 */
const batchedSimd = (args: KernelArgs, a: Info, b: Info, tA: boolean, tB: boolean): Info | undefined => {
  // Batch dims without leading 1s must agree: broadcasting ([12, 1] against [1, 12]) is left to tfjs.
  const batch = (x: Info) => x.shape.slice(0, -2).join(",").replace(/^(1,)+/, "");
  if (batch(a) !== batch(b) || a.dtype !== "float32" || b.dtype !== "float32" || !simdAvailable()) {
    return undefined;
  }
  const G = tf.util.sizeFromShape(a.shape.slice(0, -2));
  const [ra, ca] = a.shape.slice(-2), [rb, cb] = b.shape.slice(-2);
  const [M, K] = tA ? [ca, ra] : [ra, ca];
  const N = tB ? rb : cb;
  const backend = args.backend as unknown as WasmBackend;
  // The output first: making it may grow tfjs's heap, which would detach views taken before.
  const out = backend.makeOutput(
    [...(a.shape.length >= b.shape.length ? a : b).shape.slice(0, -2), M, N],
    "float32",
  );
  batchedMatMul(
    G,
    M,
    K,
    N,
    { data: backend.typedArrayFromHeap(a), transposed: tA },
    { data: backend.typedArrayFromHeap(b), transposed: tB },
    backend.typedArrayFromHeap(out),
  );
  return out;
};

const override = kernelOverride("BatchMatMul", "wasm", batchMatMul);

/** Registers the routing over wasm's BatchMatMul (idempotent; no-op without the wasm backend). */
export const registerWasmMatMul = override.register;

/** Puts wasm's own BatchMatMul back (idempotent). */
export const restoreWasmMatMul = override.restore;
