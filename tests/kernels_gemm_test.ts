/**
 * wasm's `BatchMatMul` on the packed multi-threaded SIMD kernel (lib/core/kernels/gemm_pool.ts, routed by
 * lib/core/kernels/matmul_wasm.ts): equal to a float64 loop and to the cpu backend's products in every
 * layout, at sizes that are not multiples of the 4 x 8 tile, the K block or the row block, the same on one
 * thread as on several, with the gradients the model needs, without leaks, and a program that used it exits.
 */
import { tf } from "../lib/deps.ts";
import { selectBackend } from "../lib/core/backend.ts";
import { registerWasmMatMul, restoreWasmMatMul } from "../lib/core/kernels/matmul_wasm.ts";
import {
  gemm,
  gemmAvailable,
  gemmReady,
  gemmThreads,
  setGemmThreads,
} from "../lib/core/kernels/gemm_pool.ts";
import { gemmModuleBytes, relaxedSimdAvailable } from "../lib/core/kernels/gemm_simd.ts";
import { relativeError } from "../lib/core/compare.ts";
import { assert, assertEquals, assertLess, assertThrows } from "../lib/core/std.ts";

/** Deterministic values in [-0.5, 0.5). */
const values = (n: number, seed: number): Float32Array =>
  Float32Array.from({ length: n }, (_, i) => (((i * 2654435761 + seed * 40503) >>> 0) % 1000) / 1000 - 0.5);

/** `op(a[g]) op(b[g])` in float64. */
const reference = (
  G: number,
  M: number,
  K: number,
  N: number,
  a: Float32Array,
  b: Float32Array,
  tA: boolean,
  tB: boolean,
): Float64Array => {
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
  return want;
};

Deno.test("the packed SIMD module validates and multiplies as a float64 loop does, on 1 and 2 threads", async () => {
  assert(WebAssembly.validate(gemmModuleBytes(false, 16) as BufferSource), "module bytes do not validate");
  assert(relaxedSimdAvailable(), "this runtime (Deno 2.9.6, V8) compiles relaxed SIMD");
  assert(gemmAvailable());
  const threads = gemmThreads();
  try {
    // Odd sizes; K = 300 spans two K blocks of 256, M = 133 three row blocks of 16 groups; the last two are
    // large enough (2^24 multiply-adds) to be split between the threads, by rows and by products.
    const sizes = [[1, 1, 1, 1], [3, 5, 7, 9], [2, 4, 16, 8], [5, 13, 3, 17], [1, 133, 300, 450], [
      3,
      70,
      300,
      270,
    ]];
    const layouts = [[false, false], [true, false], [false, true], [true, true]];
    const cases = sizes.flatMap(([G, M, K, N]) => {
      const a = values(G * M * K, 1), b = values(G * K * N, 2);
      return layouts.map(([tA, tB]) => ({ G, M, K, N, a, b, tA, tB }));
    });
    // All cases on one thread, then all on two (each switch restarts the workers).
    const runs: Float32Array[][] = [];
    for (const n of [1, 2]) {
      setGemmThreads(n);
      assertEquals(await gemmReady(), n);
      runs.push(cases.map(({ G, M, K, N, a, b, tA, tB }) => {
        const out = new Float32Array(G * M * N).fill(NaN);
        assert(gemm(G, M, K, N, { data: a, transposed: tA }, { data: b, transposed: tB }, out));
        return out;
      }));
    }
    cases.forEach(({ G, M, K, N, a, b, tA, tB }, c) => {
      const what = `G=${G} M=${M} K=${K} N=${N} tA=${tA} tB=${tB}`;
      assertLess(relativeError(runs[0][c], reference(G, M, K, N, a, b, tA, tB)), 1e-6, what);
      // Each element is one thread's sum in the same order, so the split changes nothing.
      assertEquals(runs[1][c], runs[0][c], what);
    });
  } finally {
    setGemmThreads(threads);
  }
});

Deno.test("setGemmThreads: 0 turns the kernel off, bad counts are refused", () => {
  const threads = gemmThreads();
  try {
    setGemmThreads(0);
    assert(!gemmAvailable());
    assertThrows(() => setGemmThreads(-1));
    assertThrows(() => setGemmThreads(1.5));
  } finally {
    setGemmThreads(threads);
  }
  assert(gemmAvailable());
});

Deno.test("a program whose products ran on worker threads exits by itself", async () => {
  const url = new URL("../lib/core/kernels/gemm_pool.ts", import.meta.url).href;
  const code = `import { gemm, setGemmThreads } from ${JSON.stringify(url)};
setGemmThreads(2);
const a = new Float32Array(64 * 64).fill(1), out = new Float32Array(64 * 64);
for (let i = 0; i < 20; i++) gemm(1, 64, 64, 64, { data: a, transposed: false }, { data: a, transposed: false }, out);
await new Promise((r) => setTimeout(r, 200)); // the worker is up and waiting
console.log(out[0]);`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  });
  const { code: status, stdout, stderr } = await child.output();
  assertEquals(status, 0, new TextDecoder().decode(stderr));
  assertEquals(new TextDecoder().decode(stdout).trim(), "64");
});

Deno.test("wasm: products and their gradients on the packed kernel equal cpu, no leaks", async () => {
  const cases: [number[], number[], boolean, boolean][] = [
    [[2, 3, 13, 16], [2, 3, 16, 11], false, false], // p v
    [[2, 3, 13, 16], [2, 3, 13, 16], false, true], // q k^T
    [[6, 16, 13], [6, 16, 11], true, false], // rank 3, transposeA (a gradient)
    [[2, 3, 13, 16], [2, 3, 11, 13], true, true],
    [[1, 6, 13, 16], [6, 16, 11], false, false], // leading 1: same batch
    [[6, 1, 5, 4], [1, 6, 4, 3], false, false], // broadcast: left to tfjs
    [[70, 96], [96, 50], false, false], // rank 2, above the size that leaves XNNPACK
    [[96, 70], [96, 50], true, false], // dW = x^T dy
    [[70, 96], [50, 96], false, true], // dx = dy W^T
    [[20, 8], [8, 12], false, false], // rank 2, small: XNNPACK
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

Deno.test("CAEV2_THREADS sets the matmul threads when wasm starts, and a bad value is refused", async () => {
  const url = new URL("../lib/core/backend.ts", import.meta.url).href;
  const code = `import { selectBackend } from ${JSON.stringify(url)};
try { console.log((await selectBackend("wasm")).detail); } catch (e) { console.log("error: " + e.message); }`;
  const run = async (threads: string) => {
    const { stdout } = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", code],
      env: { CAEV2_THREADS: threads },
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(stdout).trim().split("\n").at(-1);
  };
  assertEquals(await run("0"), "SIMD, 1 thread");
  assertEquals(await run("3"), "SIMD, 1 thread, matmul on 3 threads");
  const bad = await run("two");
  assert(bad?.startsWith("error: ") && bad.includes(`CAEV2_THREADS="two"`), bad);
});
