/**
 * The fused WebGPU LayerNorm (value, dx, dscale, dbias) against lib/nn/norm.ts, D = 96 and 200 (D not a multiple of the 64-thread row), on random inputs, on the WebGPU adapter present (llvmpipe on the CPU
 * machines; `deno task bench --check` runs model shapes on the H200). Skipped where no adapter exists.
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { selectBackend } from "../../lib/core/backend.ts";
import { restoreStockKernels } from "../../lib/core/kernels/dispatch.ts";
import { checkLayerNorm, formatChecks } from "../../lib/bench/kernel_check.ts";
import { assert } from "../../lib/core/std.ts";

const hasWebGPU = await selectBackend("webgpu").then(() => tf.getBackend() === "webgpu", () => false);

Deno.test({
  name: "fused layernorm matches its plain-tfjs reference",
  ignore: !hasWebGPU,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    try {
      const before = tf.memory().numTensors;
      const rs = [
        ...await checkLayerNorm([3, 5, 96]),
        ...await checkLayerNorm([7, 200], 1e-5),
      ];
      assert(rs.every((r) => r.ok), formatChecks(rs));
      assert(tf.memory().numTensors === before, "no tensor leaks");
    } finally {
      restoreStockKernels();
    }
  },
});
