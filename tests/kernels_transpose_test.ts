/**
 * wasm's rank-5+ Transpose as rank-4 moves (lib/core/kernels/transpose_wasm.ts): the plan realises every
 * permutation, and the kernel's bytes equal the stock kernel's and the cpu backend's.
 */
import { tf } from "../lib/deps.ts";
import { selectBackend } from "../lib/core/backend.ts";
import {
  planTransposeMoves,
  registerWasmTranspose,
  restoreWasmTranspose,
} from "../lib/core/kernels/transpose_wasm.ts";
import { assert, assertEquals } from "../lib/core/std.ts";

/** Every permutation of 0..n-1. */
const permutations = (n: number): number[][] =>
  n === 0
    ? [[]]
    : permutations(n - 1).flatMap((p) =>
      [...Array(n).keys()].map((i) => [...p.slice(0, i), n - 1, ...p.slice(i)])
    );

/** Applies the moves to a row-major index array of `shape`, on the host. */
const applyMoves = (shape: number[], perm: number[]): number[] => {
  let data = [...Array(shape.reduce((a, b) => a * b, 1)).keys()];
  for (const [a, m, x, c] of planTransposeMoves(shape, perm)) {
    const out: number[] = [];
    for (let i = 0; i < a; i++) {
      for (let k = 0; k < x; k++) {
        for (let j = 0; j < m; j++) {
          for (let l = 0; l < c; l++) out.push(data[((i * m + j) * x + k) * c + l]);
        }
      }
    }
    data = out;
  }
  return data;
};

Deno.test("planTransposeMoves realises all 720 permutations of rank 6 in at most 5 rank-4 moves", async () => {
  await selectBackend("cpu");
  const shape = [2, 3, 1, 4, 2, 3];
  const x = tf.range(0, 2 * 3 * 4 * 2 * 3);
  for (const perm of permutations(6)) {
    const moves = planTransposeMoves(shape, perm);
    assert(moves.length <= 5, `${perm}: ${moves.length} moves`);
    const want = Array.from(await tf.transpose(tf.reshape(x, shape), perm).data());
    assertEquals(applyMoves(shape, perm), want, `perm ${perm}`);
  }
  assertEquals(planTransposeMoves([4, 5, 6, 7, 8], [0, 1, 2, 3, 4]), []);
  x.dispose();
});

Deno.test("wasm: rank-5 and rank-6 transposes as rank-4 moves equal the stock kernel and cpu, no leaks", async () => {
  const cases: [number[], number[]][] = [
    [[2, 7, 3, 4, 5], [2, 0, 3, 1, 4]], // attention's q/k/v split
    [[3, 2, 4, 7, 5], [1, 3, 0, 2, 4]], // its gradient
    [[2, 3, 4, 5, 6], [4, 3, 2, 1, 0]],
    [[2, 3, 2, 3, 2, 3], [0, 1, 3, 2, 5, 4]], // patchify-like
    [[2, 3, 4, 5, 6], [0, 1, 2, 3, 4]], // identity
  ];
  await selectBackend("cpu");
  const expected = await Promise.all(cases.map(([shape, perm]) => {
    const x = tf.reshape(tf.range(0, shape.reduce((a, b) => a * b, 1)), shape);
    return tf.transpose(x, perm).data();
  }));
  await selectBackend("wasm");
  for (const routed of [false, true]) {
    if (routed) registerWasmTranspose();
    else restoreWasmTranspose();
    try {
      for (const [c, [shape, perm]] of cases.entries()) {
        const before = tf.memory().numTensors;
        const dataIds = (tf.backend() as unknown as { numDataIds(): number }).numDataIds();
        const y = tf.tidy(() =>
          tf.transpose(tf.reshape(tf.range(0, shape.reduce((a, b) => a * b, 1)), shape), perm)
        );
        assertEquals(y.shape, perm.map((a) => shape[a]));
        assertEquals(
          Array.from(await y.data()),
          Array.from(expected[c]),
          `${routed ? "routed" : "stock"} ${perm}`,
        );
        // Gradient of a transpose is a transpose: the routed kernel serves the backward pass too.
        const z = tf.zeros(shape);
        const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.transpose(t, perm), y)))(z);
        assertEquals(Array.from(await g.data()), [...Array(g.size).keys()]);
        tf.dispose([y, g, z]);
        assertEquals(tf.memory().numTensors, before);
        assertEquals((tf.backend() as unknown as { numDataIds(): number }).numDataIds(), dataIds);
      }
    } finally {
      restoreWasmTranspose();
    }
  }
});
