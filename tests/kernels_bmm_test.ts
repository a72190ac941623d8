/**
 * wasm's batched `BatchMatMul` on the WebAssembly SIMD kernel (lib/core/kernels/bmm_simd.ts, routed by
 * lib/core/kernels/matmul_wasm.ts): equal to the cpu backend's products in every layout, at sizes that are
 * not multiples of the 4 x 8 block, with the gradients attention needs, and without leaks.
 */
import { tf } from "../lib/deps.ts";
import { selectBackend } from "../lib/core/backend.ts";
import { registerWasmMatMul, restoreWasmMatMul } from "../lib/core/kernels/matmul_wasm.ts";
import { batchedMatMul, bmmModuleBytes, simdAvailable } from "../lib/core/kernels/bmm_simd.ts";
import { relativeError } from "../lib/parity/check.ts";
import { assert, assertEquals, assertLess } from "../lib/core/std.ts";

/** Deterministic values in [-0.5, 0.5). */
const values = (n: number, seed: number): Float32Array =>
  Float32Array.from({ length: n }, (_, i) => (((i * 2654435761 + seed * 40503) >>> 0) % 1000) / 1000 - 0.5);

Deno.test("the SIMD module validates and multiplies as a plain loop does", () => {
  assert(WebAssembly.validate(bmmModuleBytes() as BufferSource), "module bytes do not validate");
  assert(simdAvailable());
  for (const [G, M, K, N] of [[1, 1, 1, 1], [3, 5, 7, 9], [2, 4, 16, 8], [2, 13, 3, 17]]) {
    const a = values(G * M * K, 1), b = values(G * K * N, 2), out = new Float32Array(G * M * N);
    for (const [tA, tB] of [[false, false], [true, false], [false, true], [true, true]]) {
      batchedMatMul(G, M, K, N, { data: a, transposed: tA }, { data: b, transposed: tB }, out);
      const want = new Float64Array(G * M * N);
      for (let g = 0; g < G; g++) {
        for (let i = 0; i < M; i++) {
          for (let j = 0; j < N; j++) {
            let s = 0;
            for (let k = 0; k < K; k++) {
              const av = tA ? a[(g * K + k) * M + i] : a[(g * M + i) * K + k];
              const bv = tB ? b[(g * N + j) * K + k] : b[(g * K + k) * N + j];
              s += av * bv;
            }
            want[(g * M + i) * N + j] = s;
          }
        }
      }
      assertLess(relativeError(out, want), 1e-6, `G=${G} M=${M} K=${K} N=${N} tA=${tA} tB=${tB}`);
    }
  }
});

Deno.test("wasm: batched products and their gradients on the SIMD kernel equal cpu, no leaks", async () => {
  const cases: [number[], number[], boolean, boolean][] = [
    [[2, 3, 13, 16], [2, 3, 16, 11], false, false], // p v
    [[2, 3, 13, 16], [2, 3, 13, 16], false, true], // q k^T
    [[6, 16, 13], [6, 16, 11], true, false], // rank 3, transposeA (a gradient)
    [[2, 3, 13, 16], [2, 3, 11, 13], true, true],
    [[1, 6, 13, 16], [6, 16, 11], false, false], // leading 1: same batch
    [[6, 1, 5, 4], [1, 6, 4, 3], false, false], // broadcast: left to tfjs
  ];
  const run = () =>
    cases.map(([sa, sb, tA, tB], c) =>
      tf.tidy(() => {
        const a = tf.tensor(values(sa.reduce((p, v) => p * v, 1), c + 3), sa);
        const b = tf.tensor(values(sb.reduce((p, v) => p * v, 1), c + 7), sb);
        const y = tf.matMul(a, b, tA, tB);
        // tfjs-core's BatchMatMul gradient cannot reduce broadcast batch dims (on any backend).
        if (sa.slice(0, -2).join() !== sb.slice(0, -2).join()) return [y];
        const f = (x: tf.Tensor, z: tf.Tensor) => tf.sum(tf.square(tf.matMul(x, z, tA, tB)));
        return [y, ...tf.grads(f)([a, b])];
      })
    );
  await selectBackend("cpu");
  const expected = await Promise.all(
    run().flat().map(async (t) => ({ shape: t.shape, data: await t.data() })),
  );
  await selectBackend("wasm");
  registerWasmMatMul();
  try {
    const before = tf.memory().numTensors;
    const got = run().flat();
    for (const [n, t] of got.entries()) {
      assertEquals(t.shape, expected[n].shape, `output ${n}`);
      assertLess(relativeError(await t.data(), expected[n].data), 1e-5, `output ${n}`);
    }
    tf.dispose(got);
    assertEquals(tf.memory().numTensors, before);
  } finally {
    restoreWasmMatMul();
  }
});
