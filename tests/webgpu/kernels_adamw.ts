/**
 * The fused WebGPU AdamW (two updates: updates, first and second moments) against the reference chain of lib/optim/adamw.ts, clipping active, odd-sized and decay-masked tensors, on random inputs, on the WebGPU adapter present (llvmpipe on the CPU
 * machines; `deno task bench --check` runs model shapes on the H200). Skipped where no adapter exists.
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { selectBackend } from "../../lib/core/backend.ts";
import { restoreStockKernels } from "../../lib/core/kernels/dispatch.ts";
import { checkAdamw, formatChecks } from "../../lib/bench/kernel_check.ts";
import { assert } from "../../lib/core/std.ts";

const hasWebGPU = await selectBackend("webgpu").then(() => tf.getBackend() === "webgpu", () => false);

Deno.test({
  name: "fused adamw matches its plain-tfjs reference",
  ignore: !hasWebGPU,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    try {
      const before = tf.memory().numTensors;
      const rs = [
        ...await checkAdamw(),
      ];
      assert(rs.every((r) => r.ok), formatChecks(rs));
      assert(tf.memory().numTensors === before, "no tensor leaks");
    } finally {
      restoreStockKernels();
    }
  },
});
