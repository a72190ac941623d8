/**
 * The reduction gradient of Tile (lib/core/kernels/tile_grad.ts) against tfjs-core's on cpu. (The two-stage
 * full sum and the Tile gradient on the WebGPU adapter are checked in kernels_fused.ts.)
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { registerKernels, restoreStockKernels } from "../../lib/core/kernels/dispatch.ts";
import { relativeError } from "../../lib/core/compare.ts";
import { assert } from "../../lib/core/std.ts";

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
      assert(relativeError(await got.data(), await ref.data()) < 1e-6, `${shape} x ${reps}`);
      tf.dispose([x, w, ref, got]);
    }
  },
});
