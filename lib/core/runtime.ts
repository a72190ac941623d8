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
import { type Precision, precisionProblem, setPrecision } from "./precision.ts";

/** Options of {@link startRuntime}. */
export interface RuntimeOptions {
  /** Fused kernels on (default) or the plain tfjs references everywhere. */
  readonly kernels?: "fused" | "stock";
  /** `--precision` (default f32); "f16" is refused where it cannot run (lib/core/precision.ts). */
  readonly precision?: Precision;
}

/** Thrown by {@link startRuntime} for a precision the started backend cannot run; nothing else has run. */
export class PrecisionError extends Error {
  /** `message`: why, and what to use instead. */
  constructor(message: string) {
    super(message);
    this.name = "PrecisionError";
  }
}

/**
 * Selects and starts the backend, then registers device-side gradients and (by default) the fused kernels,
 * and sets the precision; throws {@link PrecisionError} for a precision the backend cannot run.
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
  const kernels = opts.kernels ?? "fused";
  const problem = precisionProblem(opts.precision ?? "f32", info, kernels);
  if (problem !== undefined) throw new PrecisionError(problem);
  registerDeviceGradients();
  let tiles: string | undefined;
  if (kernels === "fused") {
    registerKernels();
    tiles = await installTileTable(info);
  } else restoreStockKernels();
  setPrecision(opts.precision ?? "f32");
  // Which measured tile table the matmuls follow goes into the backend line every task logs.
  return tiles === undefined ? info : { ...info, note: [info.note, tiles].filter(Boolean).join("; ") };
};
