/**
 * The tiled WebGPU matmul (lib/core/kernels/matmul.ts) against tfjs's own kernel on random inputs, in
 * every load/store layout, with broadcasting, split K and through gradients; on the WebGPU adapter present
 * (llvmpipe on the CPU machines; `deno task bench --check` runs the model-scale cases on the H200).
 * Skipped where no WebGPU adapter exists. The 128 x 128 tile takes ~30 s to compile on llvmpipe, so it is
 * checked here only with CAEV2_FULL_KERNEL_TESTS=1 (and always by `bench --check`).
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { selectBackend } from "../../lib/core/backend.ts";
import { planMatMul, restoreStockMatMul } from "../../lib/core/kernels/matmul.ts";
import { registerKernels, restoreStockKernels } from "../../lib/core/kernels/dispatch.ts";
import { BindingSizeError, checkBindable } from "../../lib/core/kernels/program.ts";
import {
  checkMatMul,
  checkMatMulGrad,
  formatChecks,
  modelMatMulCases,
  smallMatMulCases,
} from "../../lib/bench/kernel_check.ts";
import { relativeError } from "../../lib/core/compare.ts";
import { assert, assertEquals, assertThrows } from "../../lib/core/std.ts";

const hasWebGPU = await selectBackend("webgpu").then(() => tf.getBackend() === "webgpu", () => false);
const full = Deno.env.get("CAEV2_FULL_KERNEL_TESTS") === "1";

Deno.test({
  name: "tiled matmul matches tfjs's kernel in every layout, and its gradients too",
  ignore: !hasWebGPU,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    try {
      const rs = [
        ...await checkMatMul(full ? [...smallMatMulCases, modelMatMulCases[0]] : smallMatMulCases),
        ...await checkMatMulGrad(),
      ];
      assert(rs.every((r) => r.ok), formatChecks(rs));
    } finally {
      restoreStockMatMul();
    }
  },
});

Deno.test("binding-size guard refuses tensors larger than one binding", () => {
  assertThrows(
    () => checkBindable("test", [1024, 1024, 64], 128 * 2 ** 20),
    BindingSizeError,
    "maxStorageBufferBindingSize",
  );
  checkBindable("test", [1024, 1024, 32], 128 * 2 ** 20);
});

Deno.test("planMatMul: tile by size, split K for long thin products, fallbacks", () => {
  assertEquals(planMatMul([50432, 768], [768, 2304], false, false)!.tile.bm, 128);
  assertEquals(planMatMul([3072, 167, 16], [3072, 167, 16], false, true)!.tile.bm, 64);
  assert(planMatMul([25344, 768], [25344, 2304], true, false)!.splits > 1, "weight gradient splits K");
  assertEquals(planMatMul([3168, 768], [768, 2304], false, false)!.splits, 1);
  assertEquals(planMatMul([2, 3, 4, 5], [3, 2, 5, 4], false, false), null, "general broadcast: stock");
});

Deno.test({
  name: "wasm: transposed products routed through an explicit transpose equal the stock kernel's",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const ok = await selectBackend("wasm").then(() => tf.getBackend() === "wasm", () => false);
    if (!ok) return;
    const a = tf.randomNormal([33, 20], 0, 1, "float32", 1),
      b = tf.randomNormal([33, 12], 0, 1, "float32", 2);
    const run = async () => {
      const ys = [tf.matMul(a, b, true, false), tf.matMul(b, a, true, false), tf.matMul(a, a, false, true)];
      const out = await Promise.all(ys.map((y) => y.data()));
      tf.dispose(ys);
      return out;
    };
    restoreStockKernels();
    const ref = await run();
    registerKernels();
    const got = await run();
    restoreStockKernels();
    ref.forEach((r, i) => assert(relativeError(got[i], r) < 1e-6, `product ${i}`));
    tf.dispose([a, b]);
  },
});
