/**
 * The cap on WebGPU's pool of free buffers (lib/core/gpu_pool.ts): capped at 0 every released buffer is
 * destroyed and tensors keep their values; uncapped, released buffers stay pooled; the peak of held bytes is
 * kept; `CAEV2_GPU_POOL_MIB` is read at start-up and a bad value is refused with a clear message.
 */
import { tf } from "../../lib/deps.ts";
import { selectBackend } from "../../lib/core/backend.ts";
import { capGpuPool, gpuPoolBytes, resetGpuPeak } from "../../lib/core/gpu_pool.ts";
import { assert, assertEquals, assertRejects } from "../../lib/core/std.ts";

const hasWebGPU =
  (await (navigator as { gpu?: GPU }).gpu?.requestAdapter().catch(() => null) ?? null) !== null;

/** Makes and frees tensors of several sizes; returns a sum computed from values that outlived the churn. */
const churn = async (): Promise<number> => {
  const keep = tf.fill([1000], 2);
  for (let i = 1; i <= 8; i++) {
    const [a, b] = [tf.fill([i * 1000], i), tf.fill([i * 1000], 1)];
    const c = tf.add(a, b);
    await c.data();
    tf.dispose([a, b, c]);
  }
  const s = (await tf.sum(keep).data())[0];
  keep.dispose();
  return s;
};

Deno.test({
  name: "gpu pool: a cap of 0 destroys released buffers, values intact; unbounded pools them; peak kept",
  ignore: !hasWebGPU,
  fn: async () => {
    await selectBackend("webgpu");
    try {
      capGpuPool(0);
      assert(resetGpuPeak());
      assertEquals(await churn(), 2000);
      assertEquals(gpuPoolBytes()!.free, 0);
      const peak = gpuPoolBytes()!.peak!;
      assert(peak >= 8000 * 4, `peak ${peak} holds at least the largest tensor`);
      capGpuPool(Infinity);
      assertEquals(await churn(), 2000);
      assert(gpuPoolBytes()!.free >= 8000 * 4, "released buffers stay in the pool");
    } finally {
      capGpuPool(1024 * 2 ** 20);
      await selectBackend("cpu");
    }
  },
});

Deno.test({
  name: "gpu pool: CAEV2_GPU_POOL_MIB is read at start-up; a bad value is refused",
  ignore: !hasWebGPU,
  fn: async () => {
    const before = Deno.env.get("CAEV2_GPU_POOL_MIB");
    try {
      Deno.env.set("CAEV2_GPU_POOL_MIB", "lots");
      await assertRejects(() => selectBackend("webgpu"), Error, 'CAEV2_GPU_POOL_MIB="lots"');
      Deno.env.set("CAEV2_GPU_POOL_MIB", "0");
      await selectBackend("webgpu");
      assertEquals(await churn(), 2000);
      assertEquals(gpuPoolBytes()!.free, 0);
    } finally {
      if (before === undefined) Deno.env.delete("CAEV2_GPU_POOL_MIB");
      else Deno.env.set("CAEV2_GPU_POOL_MIB", before);
      await selectBackend("webgpu");
      await selectBackend("cpu");
    }
  },
});
