/**
 * Starting the compute runtime the way every task wants it: the backend (lib/core/backend.ts), the
 * device-side gradients of reductions (lib/core/gradients.ts) and the fused kernels (lib/core/kernels),
 * which are numerically the references (tests compare them) and run only where they apply.
 *
 * @module
 */
import { type BackendChoice, type BackendInfo, selectBackend } from "./backend.ts";
import { registerDeviceGradients } from "./gradients.ts";
import { registerKernels, restoreStockKernels } from "./kernels/dispatch.ts";
import { installTileTable } from "./kernels/tile_table.ts";

/** Options of {@link startRuntime}. */
export interface RuntimeOptions {
  /** Fused kernels on (default) or the plain tfjs references everywhere. */
  readonly kernels?: "fused" | "stock";
}

/**
 * Selects and starts the backend, then registers device-side gradients and (by default) the fused kernels.
 *
 * @example
 * ```ts
 * import { startRuntime } from "./runtime.ts";
 * const info = await startRuntime("cpu");
 * if (info.name !== "cpu") throw new Error("unexpected");
 * ```
 */
export const startRuntime = async (
  preferred: BackendChoice = "auto",
  opts: RuntimeOptions = {},
): Promise<BackendInfo> => {
  const info = await selectBackend(preferred);
  registerDeviceGradients();
  if ((opts.kernels ?? "fused") === "fused") {
    registerKernels();
    await installTileTable(info);
  } else restoreStockKernels();
  return info;
};
