/**
 * The wasm backend's `Slice` of a contiguous block (every axis after the first sliced one taken whole), done
 * as one copy out of tfjs's heap. Registered over tfjs-backend-wasm's kernel, which keeps the other slices.
 *
 * Why: tfjs-backend-wasm 4.22 reads the input with `readSync`, which copies the whole input out of the heap
 * into a fresh array, before copying the slice. Attention splits q, k and v as three slices of one
 * `[3, B * H * N * dh]` tensor, so each split copied the input three times. Measured on the 2-core CPU
 * machine (Deno 2.9.6, 2026-11-26, a loaded afternoon), the three slices of a `[3, 1210368]` tensor (the
 * ViT-B/16 teacher at batch 8): stock 91 to 96 ms; in the CPU target's step they were 0.67 s (3.1%).
 *
 * @module
 */
import { tf } from "../../deps.ts";
import { type Info, type KernelArgs, kernelOverride } from "./override.ts";

type WasmBackend = {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(info: Info): Float32Array | Int32Array | Uint8Array;
};

const slice = (args: KernelArgs, stock: (args: KernelArgs) => Info): Info => {
  const { x } = args.inputs as unknown as { x: Info };
  const { begin, size } = args.attrs as unknown as { begin: number | number[]; size: number | number[] };
  if (x.dtype === "string") return stock(args);
  const [begin_, size_] = tf.slice_util.parseSliceParams(x as unknown as tf.TensorInfo, begin, size);
  if (!tf.slice_util.isSliceContinous(x.shape, begin_, size_)) return stock(args);
  const backend = args.backend as unknown as WasmBackend;
  // The output first: making it may grow tfjs's heap, which would detach views taken before.
  const out = backend.makeOutput(size_, x.dtype);
  const offset = tf.slice_util.computeFlatOffset(begin_, tf.util.computeStrides(x.shape));
  const n = tf.util.sizeFromShape(size_);
  backend.typedArrayFromHeap(out).set(backend.typedArrayFromHeap(x).subarray(offset, offset + n));
  return out;
};

const override = kernelOverride("Slice", "wasm", slice);

/** Registers the contiguous-slice copy over wasm's Slice (idempotent; no-op without the wasm backend). */
export const registerWasmSlice = override.register;

/** Puts wasm's own Slice back (idempotent). */
export const restoreWasmSlice = override.restore;
