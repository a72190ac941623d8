import { tf } from "../../lib/deps.ts";
import { type BackendName, describeBackend, selectBackend } from "../../lib/core/backend.ts";
import {
  checkDeviceErrors,
  webgpuDevice,
  WebGPUError,
  withErrorScope,
} from "../../lib/core/webgpu_errors.ts";
import { relativeError } from "../../lib/core/compare.ts";
import {
  assert,
  assertEquals,
  assertLess,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "../../lib/core/std.ts";

const adapter = await (navigator as { gpu?: GPU }).gpu?.requestAdapter().catch(() => null) ?? null;
const hasWebGPU = adapter !== null;
const softwareAdapter = adapter !== null &&
  ((adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false);

/** Runs `f` with CAEV2_BACKEND set to `value` (or unset), restoring the previous value. */
const withEnv = async <T>(value: string | undefined, f: () => Promise<T>): Promise<T> => {
  const before = Deno.env.get("CAEV2_BACKEND");
  if (value === undefined) Deno.env.delete("CAEV2_BACKEND");
  else Deno.env.set("CAEV2_BACKEND", value);
  try {
    return await f();
  } finally {
    if (before === undefined) Deno.env.delete("CAEV2_BACKEND");
    else Deno.env.set("CAEV2_BACKEND", before);
  }
};

Deno.test("selectBackend: explicit names, CAEV2_BACKEND, auto, and clear errors", async () => {
  const cpu = await selectBackend("cpu");
  assertEquals(cpu.name, "cpu");
  assertEquals(tf.getBackend(), "cpu");
  assertEquals(describeBackend(cpu), "backend: cpu (plain JavaScript)");

  const wasm = await selectBackend("wasm");
  assertEquals([wasm.name, tf.getBackend()], ["wasm", "wasm"]);
  assertStringIncludes(describeBackend(wasm), "backend: wasm (");

  await withEnv("cpu", async () => {
    assertEquals((await selectBackend()).name, "cpu", "the environment picks when no flag is given");
    assertEquals((await selectBackend("auto")).name, "cpu");
    assertEquals((await selectBackend("wasm")).name, "wasm", "a flag beats the environment");
  });
  await withEnv("tpu", async () => {
    await assertRejects(
      () => selectBackend(),
      Error,
      "CAEV2_BACKEND=tpu: unknown backend; expected one of auto",
    );
  });
  await assertRejects(
    () => selectBackend("gpu" as "webgpu"),
    Error,
    'backend "gpu": unknown backend',
  );

  const auto = await withEnv(undefined, () => selectBackend());
  if (hasWebGPU && !softwareAdapter) assertEquals(auto.name, "webgpu");
  else {
    assertEquals(auto.name, "wasm", "wasm is the measured CPU default");
    if (softwareAdapter) {
      assertStringIncludes(describeBackend(auto), "is a software fallback, slower than wasm");
    }
  }
});

Deno.test("selectBackend('webgpu') without an adapter fails naming the backend and the way out", async () => {
  const proto = Object.getPrototypeOf(navigator);
  const original = Object.getOwnPropertyDescriptor(proto, "gpu");
  Object.defineProperty(navigator, "gpu", { value: undefined, configurable: true });
  try {
    const e = await assertRejects(
      () => selectBackend("webgpu"),
      Error,
      "backend webgpu was requested but cannot start",
    );
    assertStringIncludes(e.message, "no WebGPU adapter");
    assertStringIncludes(e.message, "Use --backend wasm or cpu");
  } finally {
    delete (navigator as { gpu?: unknown }).gpu;
  }
  assertEquals(Object.getOwnPropertyDescriptor(proto, "gpu"), original);
});

/**
 * A miniature of every op the CAE v2 model uses, differentiated w.r.t. all float inputs: conv patch
 * embedding, concat, batched and plain gather, layer norm by hand (mean, sub, square, rsqrt, sqrt),
 * matMul, erf-GELU, the 5-D qkv transpose and unstack, batched matMul, softmax, slice, sum and mean.
 */
const miniModel = (
  x: tf.Tensor,
  img: tf.Tensor,
  filt: tf.Tensor,
  w1: tf.Tensor,
  w2: tf.Tensor,
  g: tf.Tensor,
) => {
  const idx = tf.tensor2d([[0, 5, 9], [11, 2, 3]], [2, 3], "int32"); // [B, visible], per image
  const patches = tf.conv2d(img as tf.Tensor4D, filt as tf.Tensor4D, 2, "valid").reshape([2, 4, 6]); // [B, L, D]
  const tokens = tf.concat([x, patches], 1); // [B, 12, D]
  const vis = tf.concat(
    [tf.gather(tokens, idx, 1, 1), tf.gather(tokens, tf.tensor1d([1, 4], "int32"), 1)],
    1,
  ); // [B, 5, D]
  const mu = tf.mean(vis, -1, true);
  const c = tf.sub(vis, mu);
  const ln = tf.mul(tf.mul(c, tf.rsqrt(tf.add(tf.mean(tf.square(c), -1, true), 1e-6))), g);
  const h = tf.matMul(ln.reshape([10, 6]), w1); // [B*N, 12]
  const gelu = tf.mul(tf.mul(h, 0.5), tf.add(1, tf.erf(tf.div(h, Math.SQRT2))));
  const qk = tf.matMul(gelu, w2).reshape([2, 5, 2, 2, 3]).transpose([2, 0, 3, 1, 4]); // [2, B, H, N, dh]
  const [q, k] = tf.unstack(qk, 0);
  const a = tf.softmax(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(3))); // [B, H, N, N]
  const o = tf.matMul(a, k).transpose([0, 2, 1, 3]).reshape([2, 5, 6]);
  const picked = tf.slice(o, [0, 1, 0], [2, 2, 6]);
  return tf.add(tf.sum(tf.mul(picked, picked)), tf.mean(tf.sqrt(tf.add(tf.square(o), 1)))) as tf.Scalar;
};

const miniInputs = () => [
  tf.randomNormal([2, 8, 6], 0, 1, "float32", 1), // x
  tf.randomNormal([2, 4, 4, 3], 0, 1, "float32", 2), // img [B, H, W, 3]
  tf.randomNormal([2, 2, 3, 6], 0, 0.5, "float32", 3), // filt
  tf.randomNormal([6, 12], 0, 0.5, "float32", 4), // w1
  tf.randomNormal([12, 12], 0, 0.5, "float32", 5), // w2
  tf.randomNormal([6], 1, 0.1, "float32", 6), // g
];

const valueAndGrads = async () => {
  const inputs = miniInputs();
  const { value, grads } = tf.valueAndGrads((...xs: tf.Tensor[]) =>
    miniModel(xs[0], xs[1], xs[2], xs[3], xs[4], xs[5])
  )(inputs);
  const host = await Promise.all(
    [value, ...grads].map(async (t) => ({ shape: t.shape, data: await t.data() })),
  );
  tf.dispose([value, ...grads, ...inputs]);
  return host;
};

Deno.test("every op the model needs runs with gradients on wasm (and webgpu) and matches cpu", async () => {
  await selectBackend("cpu");
  const ref = await valueAndGrads();
  const backends: BackendName[] = ["wasm", ...(hasWebGPU ? ["webgpu" as const] : [])];
  for (const name of backends) {
    await selectBackend(name);
    const got = await valueAndGrads();
    await selectBackend("cpu");
    assertEquals(got.map((g) => g.shape), ref.map((r) => r.shape));
    for (let i = 0; i < ref.length; i++) {
      const err = relativeError(got[i].data, ref[i].data);
      assertLess(err, 1e-4, `${name}: ${i === 0 ? "value" : `gradient ${i - 1}`} differs from cpu by ${err}`);
    }
  }
});

Deno.test("wasm: batched gather is right (tfjs-backend-wasm 4.22 bug, tensorflow/tfjs#8658)", async () => {
  await selectBackend("wasm");
  const x = tf.tensor3d([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [2, 3, 2]); // [B, N, D]
  const idx = tf.tensor2d([[2], [0]], [2, 1], "int32"); // [B, 1]
  assertEquals(Array.from(await tf.gather(x, idx, 1, 1).data()), [4, 5, 6, 7]);
  const y = tf.tensor3d([0, 1, 2, 3, 4, 5, 6, 7], [2, 2, 2]); // gather on axis 2 with an outer axis
  const idx2 = tf.tensor2d([[1], [0]], [2, 1], "int32");
  assertEquals(Array.from(await tf.gather(y, idx2, 2, 1).data()), [1, 3, 4, 6]);
  assertEquals(Array.from(await tf.gather(x, tf.tensor1d([2, 0], "int32"), 1).data()), [
    4,
    5,
    0,
    1,
    10,
    11,
    6,
    7,
  ]);
  tf.dispose([x, idx, y, idx2]);
});

Deno.test("UnsortedSegmentSum (gather's gradient) is exact and one-pass on cpu and wasm", async () => {
  for (const name of ["cpu", "wasm"] as const) {
    await selectBackend(name);
    const x = tf.tensor2d([[1, 2], [3, 4], [5, 6], [7, 8]]);
    const ids = tf.tensor1d([2, 0, 2, -1], "int32"); // -1: dropped, as in TensorFlow
    assertEquals(Array.from(await tf.unsortedSegmentSum(x, ids, 3).data()), [3, 4, 0, 0, 6, 8], name);
    const xi = tf.tensor1d([5, -2, 7], "int32");
    const si = tf.unsortedSegmentSum(xi, tf.tensor1d([1, 1, 0], "int32"), 2);
    assertEquals([si.dtype, Array.from(await si.data())], ["int32", [7, 3]], name);

    // The gather gradient at ViT-T shapes: tokens [B*L, D] = [16*196, 192], 85% of rows picked. The
    // stock cpu kernel is O(numSegments * size) and takes minutes here.
    const tokens = tf.randomNormal([3136, 192], 0, 1, "float32", 7);
    const idx = tf.tensor1d(Array.from({ length: 2666 }, (_, i) => (i * 7) % 3136), "int32");
    const t0 = performance.now();
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, idx)))(tokens);
    const gd = await g.data();
    assertLess(performance.now() - t0, 5000, `${name}: gather gradient too slow`);
    const counts = new Float32Array(3136);
    for (let i = 0; i < 2666; i++) counts[(i * 7) % 3136] += 1;
    assertEquals([gd[0], gd[192 * 7], gd[192 * 3135 + 5]], [counts[0], counts[7], counts[3135]], name);
    tf.dispose([x, ids, xi, si, tokens, idx, g]);
  }
});

Deno.test("wasm: gather and conv2d-filter gradients (kernels wasm lacks) run via cpu", async () => {
  await selectBackend("wasm");
  const x = tf.tensor2d([[1, 2], [3, 4], [5, 6]]);
  const g = tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, tf.tensor1d([2, 0, 2], "int32"))))(x);
  assertEquals(Array.from(await g.data()), [1, 1, 0, 0, 2, 2]);
  const img = tf.ones([1, 2, 2, 1]);
  const gf = tf.grad((f: tf.Tensor) => tf.sum(tf.conv2d(img as tf.Tensor4D, f as tf.Tensor4D, 1, "valid")))(
    tf.ones([2, 2, 1, 1]),
  );
  assertEquals(Array.from(await gf.data()), [1, 1, 1, 1]);
  assertEquals(tf.getBackend(), "wasm");
  tf.dispose([x, g, img, gf]);
});

const pollDeviceError = async (timeoutMs = 5000): Promise<Error | undefined> => {
  const until = performance.now() + timeoutMs;
  while (performance.now() < until) {
    try {
      checkDeviceErrors();
    } catch (e) {
      return e as Error;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return undefined;
};

Deno.test({
  name: "WebGPU: a real validation error becomes an exception (checkDeviceErrors, withErrorScope)",
  ignore: !hasWebGPU,
  fn: async () => {
    const info = await selectBackend("webgpu");
    assertEquals(info.name, "webgpu");
    assert(info.limits !== undefined && info.limits.maxStorageBufferBindingSize > 0);
    const device = webgpuDevice();
    assert(device !== undefined);
    checkDeviceErrors(); // nothing pending

    // Uncaptured: MAP_READ cannot be combined with STORAGE.
    device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE });
    const e = await pollDeviceError();
    assert(e instanceof WebGPUError, `expected a WebGPUError, got ${e}`);
    assertEquals(e.kind, "validation");
    assertStringIncludes(e.message, "WebGPU validation error: ");
    assertStringIncludes(e.message, "maxStorageBufferBindingSize");
    checkDeviceErrors(); // reported once, then cleared

    // Scoped: a buffer larger than maxBufferSize.
    const tooBig = device.limits.maxBufferSize + 4;
    const scoped = await assertRejects(
      () =>
        withErrorScope(() =>
          Promise.resolve(device.createBuffer({ size: tooBig, usage: GPUBufferUsage.STORAGE }))
        ),
      WebGPUError,
    );
    assertEquals((scoped as WebGPUError).kind, "validation");

    // A tfjs op on a tensor larger than one storage binding: without the scope it silently computes
    // garbage; with it, it throws.
    const n = Math.ceil(device.limits.maxStorageBufferBindingSize / 4) + 1024;
    if (n * 4 <= 2 ** 28) { // keep the test light (llvmpipe: 128 MiB binding -> ~130 MiB tensors)
      await assertRejects(
        () =>
          withErrorScope(async () => {
            const y = tf.tidy(() => tf.add(tf.fill([n], 1), 1));
            const s = tf.sum(y);
            await s.data();
            tf.dispose([y, s]);
          }),
        WebGPUError,
        "exceeds",
      );
    }

    // Errors inside scopes do not leak to checkDeviceErrors; a clean scope returns f's value; an error of
    // f itself passes through.
    assertEquals(await pollDeviceError(100), undefined);
    assertEquals(await withErrorScope(async () => (await tf.add(tf.scalar(1), 2).data())[0]), 3);
    await assertRejects(
      () => withErrorScope(() => Promise.reject(new RangeError("mine"))),
      RangeError,
      "mine",
    );
    await selectBackend("cpu");
  },
});

Deno.test("withErrorScope and checkDeviceErrors are no-ops off WebGPU", async () => {
  await selectBackend("cpu");
  assertEquals(await withErrorScope(() => Promise.resolve(7)), 7);
  checkDeviceErrors();
  assertThrows(
    () => {
      throw new WebGPUError("out-of-memory", "x", "do y");
    },
    WebGPUError,
    "WebGPU out-of-memory error: x. do y",
  );
});
