/**
 * The wasm backend's `BatchMatMul` with a transposed operand, routed through an explicit transpose and the
 * untransposed product. Registered over tfjs-backend-wasm's kernel (the stock one runs everything else).
 *
 * Why: tfjs-backend-wasm 4.22 multiplies untransposed operands with XNNPACK but transposed ones with a
 * slow path. Measured on the 2-core CPU machine (Deno 2.9.6, SIMD, 1 thread), ms per call:
 * `[334,768]^T x [334,192]` 62.2 (transposeA) vs 5.4 (transpose, then plain); `[334,192] x [768,192]^T`
 * 63.3 vs 11.1; plain `[334,192] x [192,768]` 6.7. Every linear layer's backward has one of each (dW =
 * x^T dy, dx = dy W^T). Batched products (attention) are left alone: there the explicit transpose does not
 * pay (p^T dO: 11.1 stock vs 20.7).
 *
 * @module
 */
import { tf } from "../../deps.ts";

type KernelConfig = ReturnType<typeof tf.getKernel> & object;
type KernelArgs = Parameters<KernelConfig["kernelFunc"]>[0];
type Info = { dataId: object; shape: number[]; dtype: tf.DataType };

let stock: KernelConfig | undefined;

const batchMatMul = (args: KernelArgs) => {
  const { a, b } = args.inputs as unknown as { a: Info; b: Info };
  const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
  const batched = a.shape.slice(0, -2).some((d) => d > 1) || b.shape.slice(0, -2).some((d) => d > 1);
  if ((!transposeA && !transposeB) || batched) return stock!.kernelFunc(args);
  const transpose = tf.getKernel("Transpose", "wasm")!.kernelFunc;
  const t = (x: Info): Info => {
    const r = x.shape.length;
    const perm = [...Array(r - 2).keys(), r - 1, r - 2];
    return transpose({ inputs: { x } as never, backend: args.backend, attrs: { perm } as never }) as Info;
  };
  const a2 = transposeA ? t(a) : a, b2 = transposeB ? t(b) : b;
  const out = stock!.kernelFunc({
    inputs: { a: a2, b: b2 } as never,
    backend: args.backend,
    attrs: { ...args.attrs, transposeA: false, transposeB: false },
  });
  const backend = args.backend as unknown as { disposeData(id: object): void };
  for (const x of [a2, b2]) if (x !== a && x !== b) backend.disposeData(x.dataId);
  return out;
};

/** Registers the routing over wasm's BatchMatMul (idempotent; no-op without the wasm backend). */
export const registerWasmMatMul = (): void => {
  if (stock !== undefined) return;
  const current = tf.getKernel("BatchMatMul", "wasm");
  if (current === undefined) return;
  stock = current;
  tf.unregisterKernel("BatchMatMul", "wasm");
  tf.registerKernel({ ...current, kernelFunc: batchMatMul as KernelConfig["kernelFunc"] });
};

/** Puts wasm's own BatchMatMul back (idempotent). */
export const restoreWasmMatMul = (): void => {
  if (stock === undefined) return;
  tf.unregisterKernel("BatchMatMul", "wasm");
  tf.registerKernel(stock);
  stock = undefined;
};
