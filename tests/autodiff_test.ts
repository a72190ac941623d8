/**
 * lib/core/autodiff.ts: the freeing backward walk gives tfjs's own results bit for bit, holds less at its
 * peak, leaks nothing, nests inside a custom gradient, and refuses to serve an outer tape; lib/core/memory.ts
 * counts shared data once; the wasm Identity shares its block (lib/core/kernels/identity_wasm.ts).
 */
import { tf } from "../lib/deps.ts";
import { selectBackend } from "../lib/core/backend.ts";
import { customOp, gradients, valueAndGrad } from "../lib/core/autodiff.ts";
import { installMemoryWatermark, peakMemory, resetPeakMemory } from "../lib/core/memory.ts";
import { registerWasmIdentity, restoreWasmIdentity } from "../lib/core/kernels/identity_wasm.ts";
import { assert, assertEquals, assertThrows } from "../lib/core/std.ts";
import { TEST_BACKEND } from "./helpers.ts";

await selectBackend(TEST_BACKEND);
installMemoryWatermark();

/** A small MLP-like function of two weights with shared uses, broadcasts, a multi-output op and a reshape. */
const net = (w1: tf.Tensor, w2: tf.Tensor, x: tf.Tensor): tf.Scalar => {
  const h = tf.relu(tf.add(tf.matMul(x, w1), tf.sum(w1, 0))); // [8, 6]
  const [a, b] = tf.split(h, 2, 1); // [8, 3] each; both used
  const y = tf.matMul(tf.mul(a, b), w2); // [8, 3]
  const unusedHalf = tf.split(tf.mul(h, 2), 2, 1)[0]; // an output of SplitV that does not reach the loss
  return tf.add(tf.mean(tf.square(tf.reshape(y, [24]))), tf.mul(tf.sum(unusedHalf), 0));
};

const inputs = () => {
  const x = tf.tensor2d(Array.from({ length: 40 }, (_, i) => Math.sin(i)), [8, 5]);
  const w1 = tf.tensor2d(Array.from({ length: 30 }, (_, i) => Math.cos(i * 0.7)), [5, 6]);
  const w2 = tf.tensor2d(Array.from({ length: 9 }, (_, i) => (i - 4) / 5), [3, 3]);
  return { x, w1, w2 };
};

Deno.test("gradients: value and gradients equal tf.valueAndGrads bit for bit, no tensor left", async () => {
  const { x, w1, w2 } = inputs();
  const ref = tf.valueAndGrads((a: tf.Tensor, b: tf.Tensor) => net(a, b, x))([w1, w2]);
  const before = tf.memory().numTensors;
  const got = gradients((a, b) => net(a, b, x), [w1, w2]);
  assertEquals(tf.memory().numTensors, before + 3);
  assertEquals(await got.value.data(), await ref.value.data());
  for (let i = 0; i < 2; i++) assertEquals(await got.grads[i].data(), await ref.grads[i].data());
  tf.dispose([got.value, ...got.grads, ref.value, ...ref.grads, x, w1, w2]);
});

Deno.test("gradients: a gradient handed back as its dy (Identity) survives the walk", async () => {
  const x = tf.tensor1d([1, 2, 3]);
  const { grads } = gradients((v) => tf.sum(tf.mul(tf.clone(tf.clone(v)), 3)), [x]);
  assertEquals([...await grads[0].data()], [3, 3, 3]);
  tf.dispose([x, ...grads]);
});

Deno.test("gradients: an input the function does not use gets a zero gradient", async () => {
  const [x, unused] = [tf.tensor1d([1, 2]), tf.tensor1d([5, 6, 7])];
  const { value, grads } = gradients((v) => tf.sum(tf.square(v)), [x, unused]);
  assertEquals([...await grads[1].data()], [0, 0, 0]);
  assertEquals([...await grads[0].data()], [2, 4]);
  tf.dispose([x, unused, value, ...grads]);
});

Deno.test("gradients: the peak of a deep chain is lower than tfjs's walk, with equal results", async () => {
  // 24 layers of tanh(x W): tfjs keeps every saved input and every dy until its walk ends.
  const ws = Array.from({ length: 24 }, (_, i) => tf.mul(tf.eye(64), 1 + i / 100));
  const x = tf.randomNormal([256, 64], 0, 1, "float32", 7);
  const f = (...w: tf.Tensor[]) => {
    let h = x;
    // One scope per layer, as the model's blocks: what is left at the forward's end is what the tape keeps.
    for (const wi of w) h = tf.tidy(() => tf.tanh(tf.matMul(h, wi)));
    return tf.sum(h);
  };
  resetPeakMemory();
  const base = peakMemory().tensorBytes;
  const ref = tf.valueAndGrads(f)(ws);
  const refPeak = peakMemory().peakTensorBytes - base;
  tf.dispose([ref.value]);
  const refGrads = await Promise.all(ref.grads.map((g) => g.data()));
  tf.dispose(ref.grads);
  resetPeakMemory();
  const got = gradients(f, ws);
  const peak = peakMemory().peakTensorBytes - base;
  for (let i = 0; i < ws.length; i++) assertEquals(await got.grads[i].data(), refGrads[i]);
  // Measured 0.71 of tfjs's peak here (tfjs adds every dy and the backward ops' saved inputs on top).
  assert(peak < refPeak * 0.8, `peak ${peak} not well below tfjs's ${refPeak}`);
  tf.dispose([got.value, ...got.grads, ...ws, x]);
});

Deno.test("gradients: nests inside a custom gradient's backward (recomputation), refuses an outer tape", async () => {
  const inner = (v: tf.Tensor) => tf.sin(tf.mul(v, v));
  // A recomputing op: its forward keeps only the input; its backward runs `gradients` on a replay.
  const recomputed = customOp(
    (v: tf.Tensor) => ({ value: inner(v), save: [v] }),
    (dy, [v]) => {
      const r = gradients(inner, [v], dy);
      r.value.dispose();
      return r.grads;
    },
  );
  const x = tf.tensor1d([0.1, 0.5, -0.3]);
  const before = tf.memory().numTensors;
  const got = gradients((v) => tf.sum(tf.mul(recomputed(v), v)), [x]);
  const ref = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(inner(v), v)))(x);
  const [a, b] = [await got.grads[0].data(), await ref.data()];
  for (let i = 0; i < 3; i++) assert(Math.abs(a[i] - b[i]) < 1e-6, `${a[i]} vs ${b[i]}`);
  tf.dispose([got.value, ...got.grads, ref]);
  assertEquals(tf.memory().numTensors, before);
  assertThrows(
    () => tf.grad((v: tf.Tensor) => gradients((u) => tf.sum(u), [v]).value)(x),
    Error,
    "another tape",
  );
  x.dispose();
});

Deno.test("valueAndGrad: records in, records out, auxiliaries kept", async () => {
  const p = { a: tf.tensor1d([1, 2]), inner: { b: tf.scalar(3) } };
  const r = valueAndGrad((q: typeof p) => {
    const s = tf.sum(tf.mul(q.a, q.inner.b));
    return { loss: s as tf.Scalar, aux: { twice: tf.mul(s, 2) } };
  })(p);
  assertEquals(await r.loss.data(), new Float32Array([9]));
  assertEquals(await r.aux.twice.data(), new Float32Array([18]));
  assertEquals([...await r.grads.a.data()], [3, 3]);
  assertEquals([...await (r.grads.inner.b as tf.Tensor).data()], [3]);
  tf.dispose([r.loss, r.aux.twice, r.grads.a, r.grads.inner.b as tf.Tensor, p.a, p.inner.b]);
});

Deno.test("memory watermark: shared data is counted once in buffer bytes, per handle in tensor bytes", () => {
  resetPeakMemory();
  const m0 = peakMemory();
  const x = tf.zeros([1024]); // 4 KiB
  const views = [tf.reshape(x, [32, 32]), tf.reshape(x, [4, 256])];
  const m1 = peakMemory();
  assertEquals(m1.tensorBytes - m0.tensorBytes, 3 * 4096);
  assertEquals(m1.bufferBytes - m0.bufferBytes, 4096);
  tf.dispose([x, ...views]);
  const m2 = peakMemory();
  assertEquals(m2.bufferBytes, m0.bufferBytes);
  assertEquals(m2.peakBufferBytes - m0.bufferBytes, 4096);
  assertEquals(m2.peakTensorBytes - m0.tensorBytes, 3 * 4096);
});

Deno.test("wasm Identity: a clone shares its block and outlives the original with the same values", async () => {
  await selectBackend("wasm");
  registerWasmIdentity();
  try {
    resetPeakMemory();
    const m0 = peakMemory();
    const x = tf.tensor1d([1, 2, 3, 4]);
    const c = tf.clone(x);
    assertEquals(peakMemory().bufferBytes - m0.bufferBytes, 16);
    x.dispose();
    assertEquals([...await c.data()], [1, 2, 3, 4]);
    const y = tf.add(c, 1); // a kernel reading the shared block after the original is gone
    assertEquals([...await y.data()], [2, 3, 4, 5]);
    tf.dispose([c, y]);
    assertEquals(peakMemory().bufferBytes, m0.bufferBytes);
  } finally {
    restoreWasmIdentity();
    await selectBackend(TEST_BACKEND);
  }
});
