import { tf } from "../../lib/deps.ts";
import {
  deviceGradientsActive,
  meanGradConfig,
  registerDeviceGradients,
  restoreStockGradients,
  sumGradConfig,
} from "../../lib/core/gradients.ts";
import { assert, assertEquals, assertLess } from "../../lib/core/std.ts";

// WebGPU runs on llvmpipe here; a machine without an adapter still runs the cpu half.
const adapter = await (navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu?.requestAdapter();
const backends = adapter != null ? ["cpu", "webgpu"] : ["cpu"];

/**
 * Sizes of tensors made from host data during `f`: through the engine (`tf.ones`, `tf.tensor`, the
 * engine's zeros) and, on WebGPU, through the backend (a kernel that computed on the CPU and uploads,
 * such as Tile's rank >= 5 fallback). The cpu backend writes every kernel output from the host, so
 * only the engine is watched there.
 */
const hostMadeSizes = (f: () => void): number[] => {
  type Fn = (...a: unknown[]) => unknown;
  const engine = tf.engine() as unknown as { makeTensor: Fn };
  const backend = tf.backend() as unknown as { write: Fn };
  const [makeTensor, write] = [engine.makeTensor, backend.write];
  const sizes: number[] = [];
  engine.makeTensor = function (this: unknown, ...a: unknown[]) {
    sizes.push(tf.util.sizeFromShape(a[1] as number[]));
    return makeTensor.apply(this, a);
  };
  if (tf.getBackend() === "webgpu") {
    backend.write = function (this: unknown, ...a: unknown[]) {
      if (a[0] != null) sizes.push(tf.util.sizeFromShape(a[1] as number[]));
      return write.apply(this, a);
    };
  }
  try {
    f();
  } finally {
    engine.makeTensor = makeTensor;
    backend.write = write;
  }
  return sizes;
};

const maxAbsDiff = async (a: tf.Tensor, b: tf.Tensor): Promise<number> => {
  assertEquals(a.shape, b.shape);
  const [x, y] = [Array.from(await a.data()), Array.from(await b.data())];
  return x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i])), 0);
};

type Reduce = "sum" | "mean";
interface Case {
  readonly shape: number[];
  readonly axis?: number | number[];
  readonly keepDims?: boolean;
}
const cases: readonly Case[] = [
  { shape: [3, 4, 5] },
  { shape: [3, 4, 5], axis: 0 },
  { shape: [3, 4, 5], axis: 1, keepDims: true },
  { shape: [3, 4, 5], axis: -1 },
  { shape: [3, 4, 5], axis: [0, 2] },
  { shape: [2, 3, 4, 5, 6], axis: [1, 3] }, // rank 5: WebGPU's Tile would fall back to the CPU
  { shape: [40, 50], axis: 0 }, // 50 outputs: under the WebGPU CPU hand-off size
  { shape: [2, 1200], axis: 0 }, // 1200 outputs: over it, so the Tile path
  { shape: [] },
];

/**
 * Loss `sum(w * reduce(x))` with a random `w` so that `dy` is not all ones, and its exact gradient:
 * `w` broadcast over the reduced axes, divided by the reduce size for `mean`.
 */
const lossAndExpected = (reduce: Reduce, c: Case, seed: number) => {
  const x = tf.randomNormal(c.shape, 0, 1, "float32", seed);
  const r = (
    t: tf.Tensor,
  ) => (reduce === "sum" ? tf.sum(t, c.axis, c.keepDims) : tf.mean(t, c.axis, c.keepDims));
  const outShape = tf.tidy(() => r(x).shape);
  const w = tf.randomNormal(outShape, 0, 1, "float32", seed + 1);
  const axes = tf.util.parseAxisParam(c.axis ?? null as unknown as number, c.shape);
  const n = axes.reduce((p, a) => p * c.shape[a], 1);
  const keep = c.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const expected = tf.tidy(() =>
    tf.div(tf.broadcastTo(tf.reshape(w, keep), c.shape), reduce === "sum" ? 1 : n)
  );
  const loss = (t: tf.Tensor) => tf.sum(tf.mul(w, r(t)));
  return { x, w, expected, loss };
};

for (const backend of backends) {
  Deno.test({
    name: `[${backend}] device gradients of sum and mean equal the stock ones and the exact gradient`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      await tf.setBackend(backend);
      for (const reduce of ["sum", "mean"] as const) {
        for (const [i, c] of cases.entries()) {
          const { x, w, expected, loss } = lossAndExpected(reduce, c, 10 * i);
          restoreStockGradients();
          const stock = tf.grad(loss)(x);
          registerDeviceGradients();
          const device = tf.grad(loss)(x);
          const what = `${reduce} ${JSON.stringify(c)} on ${backend}`;
          assertLess(await maxAbsDiff(device, stock), 1e-6, `device vs stock: ${what}`);
          assertLess(await maxAbsDiff(device, expected), 1e-5, `device vs exact: ${what}`);
          tf.dispose([x, w, expected, stock, device]);
        }
      }
    },
  });

  Deno.test({
    name: `[${backend}] backward through sum and mean uploads no tensor-sized host array`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      await tf.setBackend(backend);
      const x = tf.randomNormal([64, 48], 0, 1, "float32", 3);
      const losses = [
        (t: tf.Tensor) => tf.sum(tf.mul(t, t)),
        (t: tf.Tensor) => tf.mean(tf.mul(t, t)),
        (t: tf.Tensor) => tf.sum(tf.mean(tf.square(t), -1)), // 64 outputs: under WebGPU's CPU hand-off size
        (t: tf.Tensor) => tf.sum(tf.sum(tf.reshape(t, [2, 4, 8, 6, 8]), [1, 3])), // rank 5
      ];
      for (const loss of losses) {
        restoreStockGradients();
        const stockSizes = hostMadeSizes(() => tf.dispose(tf.grad(loss)(x)));
        assert(stockSizes.includes(x.size), `the spy sees the stock ones(x.shape): ${stockSizes}`);
        registerDeviceGradients();
        const sizes = hostMadeSizes(() => tf.dispose(tf.grad(loss)(x)));
        assertLess(Math.max(...sizes), 2, `host-made tensors in the backward: ${sizes}`);
      }
      x.dispose();
    },
  });

  Deno.test({
    name: `[${backend}] unused outputs of split get device zeros, same gradient as stock`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      await tf.setBackend(backend);
      // Outputs of 4000 elements: over WebGPU's CPU hand-off size (1000), so the kernels run on the device.
      const x = tf.randomNormal([4, 3000], 0, 1, "float32", 5);
      // Only the first of three outputs reaches the loss: the engine must seed the other two with zeros.
      const loss = (t: tf.Tensor) => tf.sum(tf.mul(tf.split(t, 3, 1)[0], 2));
      restoreStockGradients();
      let stock: tf.Tensor = tf.scalar(0);
      const stockSizes = hostMadeSizes(() => (stock = tf.grad(loss)(x)));
      assert(stockSizes.includes(4000), `the spy sees the engine's host zeros: ${stockSizes}`);
      registerDeviceGradients();
      let device: tf.Tensor = tf.scalar(0);
      const sizes = hostMadeSizes(() => (device = tf.grad(loss)(x)));
      assertLess(Math.max(...sizes), 2, `host-made tensors in the backward: ${sizes}`);
      assertEquals(await maxAbsDiff(device, stock), 0);
      const g = await device.data();
      assertEquals([g[0], g[999], g[1000], g[2999], g[3000]], [2, 2, 0, 0, 2]);
      tf.dispose([x, stock, device]);
    },
  });
}

Deno.test("registerDeviceGradients is idempotent and restoreStockGradients undoes it", () => {
  registerDeviceGradients();
  registerDeviceGradients();
  assert(deviceGradientsActive());
  assertEquals(tf.getGradient(tf.Sum), sumGradConfig);
  assertEquals(tf.getGradient(tf.Mean), meanGradConfig);
  restoreStockGradients();
  restoreStockGradients();
  assert(!deviceGradientsActive());
  assert(tf.getGradient(tf.Sum) !== sumGradConfig, "stock Sum gradient back");
  registerDeviceGradients();
  assertEquals(tf.getGradient(tf.Sum), sumGradConfig);
});
