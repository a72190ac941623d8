/**
 * The wasm backend's `Identity` as a shared handle (one more reference to the same heap block), as the cpu
 * backend's is. Registered over tfjs-backend-wasm's kernel, which copies the whole tensor.
 *
 * Why: tfjs's tape keeps each tensor an op saves for its gradient as `clone(x)`, which runs `Identity`;
 * on wasm every saved tensor was therefore a full copy. For ViT-T at batch 8 (with the CLIP-B/16 teacher)
 * the saved tensors are about 1.5 GiB, so the copies doubled the heap the backward pass needs. The
 * backend counts references per block (`incRef` / `disposeData`, as its `Reshape` uses) and no wasm
 * kernel writes into its inputs, so sharing is safe.
 *
 * @module
 */
import { tf } from "../../deps.ts";
import { type Info, type KernelArgs, kernelOverride } from "./override.ts";

type WasmBackend = { incRef(dataId: object): void };

const identity = (args: KernelArgs, stock: (args: KernelArgs) => Info): Info => {
  const { x } = args.inputs as unknown as { x: Info };
  if (x.dtype === "string") return stock(args);
  (args.backend as unknown as WasmBackend).incRef(x.dataId);
  return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype as tf.DataType };
};

const override = kernelOverride("Identity", "wasm", identity);

/** Registers the shared-handle Identity over wasm's copy (idempotent; no-op without the wasm backend). */
export const registerWasmIdentity = override.register;

/** Puts wasm's own Identity back (idempotent). */
export const restoreWasmIdentity = override.restore;
