/**
 * The two-stage full sum (lib/core/kernels/reduce.ts) and the reduction gradient of Tile
 * (lib/core/kernels/tile_grad.ts) against tfjs's own on random inputs, on the WebGPU adapter present
 * (llvmpipe on the CPU machines); the Tile gradient also on cpu. Skipped where no adapter exists.
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { selectBackend } from "../../lib/core/backend.ts";
import { registerKernels, restoreStockKernels } from "../../lib/core/kernels/dispatch.ts";
import { checkReduceAndTile, formatChecks, relErr } from "../../lib/bench/kernel_check.ts";
import { assert } from "../../lib/core/std.ts";

const hasWebGPU = await selectBackend("webgpu").then(() => tf.getBackend() === "webgpu", () => false);

Deno.test({
  name: "two-stage sum and the Tile gradient match tfjs's on WebGPU",
  ignore: !hasWebGPU,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await selectBackend("webgpu");
    try {
      const before = tf.memory().numTensors;
      const rs = await checkReduceAndTile();
      assert(rs.every((r) => r.ok), formatChecks(rs));
      assert(tf.memory().numTensors === before, "no tensor leaks");
    } finally {
      restoreStockKernels();
    }
  },
});

Deno.test({
  name: "Tile gradient (rank 2 and 4, reps on several axes) matches tfjs-core's on cpu",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await tf.setBackend("cpu");
    const cases: [number[], number[]][] = [[[3, 2], [2, 3]], [[1, 2, 1, 3], [4, 1, 5, 2]]];
    for (const [shape, reps] of cases) {
      const x = tf.randomNormal(shape, 0, 1, "float32", 3);
      const w = tf.randomNormal(shape.map((d, i) => d * reps[i]), 0, 1, "float32", 4);
      const grad = () => tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.tile(t, reps), w)))(x);
      restoreStockKernels();
      const ref = grad();
      registerKernels();
      const got = grad();
      restoreStockKernels();
      assert(relErr(await got.data(), await ref.data()) < 1e-6, `${shape} x ${reps}`);
      tf.dispose([x, w, ref, got]);
    }
  },
});
