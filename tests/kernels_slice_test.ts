/**
 * wasm's contiguous Slice as one heap copy (lib/core/kernels/slice_wasm.ts): equal to the stock kernel and
 * to the cpu backend for contiguous and strided slices of every dtype, with the gradient, and without leaks.
 */
import { tf } from "../lib/deps.ts";
import { selectBackend } from "../lib/core/backend.ts";
import { registerWasmSlice, restoreWasmSlice } from "../lib/core/kernels/slice_wasm.ts";
import { assertEquals } from "../lib/core/std.ts";

/** [shape, begin, size]; the first four are contiguous (the copy), the last two strided (left to tfjs). */
const cases: [number[], number[], number[]][] = [
  [[3, 40], [1, 0], [1, 40]], // one of attention's q/k/v
  [[3, 4, 5], [2, 1, 0], [1, 2, 5]],
  [[6], [2], [3]],
  [[2, 3, 4], [0, 0, 0], [-1, -1, -1]], // the whole tensor; -1 = to the end
  [[3, 4, 5], [0, 1, 1], [2, 2, 3]],
  [[4, 6], [1, 2], [2, 3]],
];

const run = () =>
  cases.flatMap(([shape, begin, size], c) =>
    tf.tidy(() => {
      const n = shape.reduce((p, v) => p * v, 1);
      const x = tf.tensor(Array.from({ length: n }, (_, i) => (i * 7 + c) % 11 - 5), shape);
      const outs = [
        tf.slice(x, begin, size),
        tf.slice(x.toInt(), begin, size),
        tf.slice(x.greater(0), begin, size),
      ];
      // The gradient of a slice pads dy back to the input's shape.
      const g = tf.grad((v: tf.Tensor) => tf.sum(tf.square(tf.slice(v, begin, size))))(x);
      return [...outs, g];
    })
  );

const read = async (ts: tf.Tensor[]) => {
  const out = await Promise.all(
    ts.map(async (t) => ({ shape: t.shape, dtype: t.dtype, data: [...await t.data()] })),
  );
  tf.dispose(ts);
  return out;
};

Deno.test("wasm: contiguous slices as one copy equal the stock kernel and cpu, no leaks", async () => {
  await selectBackend("cpu");
  const cpu = await read(run());
  await selectBackend("wasm");
  const stock = await read(run());
  registerWasmSlice();
  try {
    const before = tf.memory().numTensors;
    const got = await read(run());
    assertEquals(tf.memory().numTensors, before);
    assertEquals(got, stock);
    assertEquals(got, cpu);
  } finally {
    restoreWasmSlice();
  }
});
