/**
 * One of this project's kernels registered over tfjs's own for one backend, keeping tfjs's kernel to fall
 * back on (for the cases the override does not take) and to put back. The four kernel overrides (webgpu
 * BatchMatMul and Sum, wasm BatchMatMul and Transpose) share this instead of each keeping its own copy.
 *
 * @module
 */
import { tf } from "../../deps.ts";

/** A tfjs kernel registration. */
export type KernelConfig = ReturnType<typeof tf.getKernel> & object;
/** What tfjs passes a kernel function: inputs, backend, attrs. */
export type KernelArgs = Parameters<KernelConfig["kernelFunc"]>[0];
/** A tensor as kernels see it. */
export type Info = { dataId: object; shape: number[]; dtype: tf.DataType };

/** Turns an override on and off. */
export interface KernelOverride {
  /** Registers it over tfjs's kernel (idempotent; a no-op while that backend is not loaded). */
  readonly register: () => void;
  /** Puts tfjs's kernel back (idempotent). */
  readonly restore: () => void;
  /** Whether it is registered now. */
  readonly registered: () => boolean;
}

/**
 * Registers `run` as `kernelName` on `backendName` when asked; `run` receives tfjs's kernel function as
 * `stock` for everything it leaves to tfjs.
 *
 * @example
 * ```ts
 * import { tf } from "../../deps.ts";
 * import { kernelOverride } from "./override.ts";
 * await tf.setBackend("cpu");
 * let calls = 0;
 * const counting = kernelOverride("Neg", "cpu", (args, stock) => (calls++, stock(args)));
 * counting.register();
 * tf.neg(tf.scalar(1)).dispose();
 * counting.restore();
 * tf.neg(tf.scalar(1)).dispose();
 * if (calls !== 1 || counting.registered()) throw new Error("unexpected");
 * ```
 */
export const kernelOverride = (
  kernelName: string,
  backendName: string,
  run: (args: KernelArgs, stock: (args: KernelArgs) => Info) => Info,
): KernelOverride => {
  let stock: KernelConfig | undefined;
  const stockFn = (args: KernelArgs): Info => stock!.kernelFunc(args) as unknown as Info;
  return {
    register: () => {
      if (stock !== undefined) return;
      const current = tf.getKernel(kernelName, backendName);
      if (current === undefined) return;
      stock = current;
      tf.unregisterKernel(kernelName, backendName);
      tf.registerKernel({
        ...current,
        kernelFunc: ((args: KernelArgs) => run(args, stockFn)) as unknown as KernelConfig["kernelFunc"],
      });
    },
    restore: () => {
      if (stock === undefined) return;
      tf.unregisterKernel(kernelName, backendName);
      tf.registerKernel(stock);
      stock = undefined;
    },
    registered: () => stock !== undefined,
  };
};
