/**
 * The fused WebGPU kernels against their plain-tfjs references on random inputs, on the WebGPU adapter
 * present (llvmpipe on the CPU machines; `deno task bench --check` runs model shapes on the H200); skipped
 * where no adapter exists:
 * - LayerNorm (value, dx, dscale, dbias) against lib/nn/norm.ts, D = 96 and 200 (D not a multiple of the
 *   64-thread row);
 * - GELU and QuickGELU (value and gradient) against lib/nn/mlp.ts, vec4 and scalar sizes;
 * - AdamW (two updates: updates, first and second moments) against the reference chain of
 *   lib/optim/adamw.ts, clipping active, odd-sized and decay-masked tensors;
 * - the two-stage full sum and the one-reduction Tile gradient against tfjs's own.
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { selectBackend } from "../../lib/core/backend.ts";
import { restoreStockKernels } from "../../lib/core/kernels/dispatch.ts";
import {
  checkAdamw,
  checkGelu,
  checkLayerNorm,
  checkReduceAndTile,
  type CheckResult,
  formatChecks,
} from "../../lib/bench/kernel_check.ts";
import { assert } from "../../lib/core/std.ts";

const hasWebGPU = await selectBackend("webgpu").then(() => tf.getBackend() === "webgpu", () => false);

/** One test: every check passes, and no tensor leaks. */
const kernelTest = (kernel: string, checks: () => Promise<CheckResult[]>) =>
  Deno.test({
    name: `fused ${kernel} matches its plain-tfjs reference`,
    ignore: !hasWebGPU,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      await selectBackend("webgpu"); // another suite in this process may have switched backends
      try {
        const before = tf.memory().numTensors;
        const rs = await checks();
        assert(rs.every((r) => r.ok), formatChecks(rs));
        assert(tf.memory().numTensors === before, "no tensor leaks");
      } finally {
        restoreStockKernels();
      }
    },
  });

kernelTest(
  "layernorm",
  async () => [...await checkLayerNorm([3, 5, 96]), ...await checkLayerNorm([7, 200], 1e-5)],
);
kernelTest("gelu", async () => [...await checkGelu([6, 50], false), ...await checkGelu([5, 7], true)]);
kernelTest("adamw", () => checkAdamw());
kernelTest("sum and Tile gradient", () => checkReduceAndTile());
