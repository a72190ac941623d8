/**
 * The fused WebGPU GELU and QuickGELU (value and gradient) against lib/nn/mlp.ts, vec4 and scalar sizes, on random inputs, on the WebGPU adapter present (llvmpipe on the CPU
 * machines; `deno task bench --check` runs model shapes on the H200). Skipped where no adapter exists.
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { selectBackend } from "../../lib/core/backend.ts";
import { restoreStockKernels } from "../../lib/core/kernels/dispatch.ts";
import { checkGelu, formatChecks } from "../../lib/bench/kernel_check.ts";
import { assert } from "../../lib/core/std.ts";

const hasWebGPU = await selectBackend("webgpu").then(() => tf.getBackend() === "webgpu", () => false);

Deno.test({
  name: "fused gelu matches its plain-tfjs reference",
  ignore: !hasWebGPU,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    try {
      const before = tf.memory().numTensors;
      const rs = [
        ...await checkGelu([6, 50], false),
        ...await checkGelu([5, 7], true),
      ];
      assert(rs.every((r) => r.ok), formatChecks(rs));
      assert(tf.memory().numTensors === before, "no tensor leaks");
    } finally {
      restoreStockKernels();
    }
  },
});
