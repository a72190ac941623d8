/**
 * Unit tests of the layers against values computed by hand (or by the closed forms cited inline), on the
 * cpu backend; the parity tests cover the composed model on every backend.
 */
import { tf } from "../lib/deps.ts";
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "../lib/core/std.ts";
import { key } from "../lib/core/random.ts";
import { linear } from "../lib/nn/linear.ts";
import { l2Normalize, layerNorm } from "../lib/nn/norm.ts";
import { gelu, quickGelu } from "../lib/nn/mlp.ts";
import { scaledDotProductAttention } from "../lib/nn/sdpa.ts";
import { patchify } from "../lib/nn/patch_embed.ts";
import { sinCos2dValues } from "../lib/nn/positions.ts";
import { normalQuantile, truncNormal } from "../lib/nn/init.ts";
import { dropPath, dropPathRates } from "../lib/nn/drop_path.ts";
import { residualAdd, residualLinear } from "../lib/nn/residual.ts";
import { maskIndex } from "../lib/models/mask_index.ts";

await tf.setBackend("cpu");

const close = (a: ArrayLike<number>, b: number[], tol = 1e-6) => {
  assertEquals(a.length, b.length);
  for (let i = 0; i < b.length; i++) assertAlmostEquals(a[i], b[i], tol, `index ${i}: ${a[i]} vs ${b[i]}`);
};

Deno.test("linear: x W + b with kernel [in, out]", async () => {
  const y = linear(
    { kernel: tf.tensor2d([[1, 2], [3, 4], [5, 6]]), bias: tf.tensor1d([0.5, -1]) },
    tf.tensor3d([[[1, 0, -1]]]),
  );
  assertEquals(y.shape, [1, 1, 2]);
  close(await y.data(), [1 - 5 + 0.5, 2 - 6 - 1]);
});

Deno.test("layerNorm: biased variance and eps, as torch.nn.LayerNorm", async () => {
  // x = [1, 2, 3]: mean 2, var 2/3; (x - 2) / sqrt(2/3 + 1e-6) * 2 + 1
  const y = layerNorm(
    { scale: tf.tensor1d([2, 2, 2]), bias: tf.tensor1d([1, 1, 1]) },
    tf.tensor2d([[1, 2, 3]]),
    1e-6,
  );
  const s = Math.sqrt(2 / 3 + 1e-6);
  close(await y.data(), [-2 / s + 1, 1, 2 / s + 1], 1e-5);
  close(await l2Normalize(tf.tensor2d([[3, 4]])).data(), [0.6, 0.8]);
});

Deno.test("activations: exact GELU and QuickGELU", async () => {
  // GELU(1) = Phi(1) = 0.8413447460685429; GELU(-1) = -(1 - Phi(1)).
  close(await gelu(tf.tensor1d([1, -1, 0])).data(), [0.8413447460685429, -0.15865525393145707, 0], 1e-6);
  // QuickGELU(1) = sigmoid(1.702) = 1 / (1 + e^-1.702)
  close(await quickGelu(tf.tensor1d([1])).data(), [1 / (1 + Math.exp(-1.702))], 1e-6);
});

Deno.test("attention: softmax(q k^T / sqrt(dh)) v by hand", async () => {
  // One head, dh = 4 (scale 1/2), one query, two keys.
  const q = tf.tensor4d([[[[2, 0, 0, 0]]]]);
  const k = tf.tensor4d([[[[1, 0, 0, 0], [0, 0, 0, 0]]]]);
  const v = tf.tensor4d([[[[1, 2, 3, 4], [5, 6, 7, 8]]]]);
  // scores: [2*1/2, 0] = [1, 0]; weights [e/(e+1), 1/(e+1)]
  const w0 = Math.E / (Math.E + 1), w1 = 1 - w0;
  close(
    await scaledDotProductAttention(q, k, v).data(),
    [1, 2, 3, 4].map((x, i) => w0 * x + w1 * (x + 4) + 0 * i),
    1e-5,
  );
});

Deno.test("patchify: row-major patches, (kh, kw, c) inside a patch", async () => {
  // 1 image 4x4x1 with values 0..15, patch 2 -> patch 0 = [0, 1, 4, 5], patch 1 = [2, 3, 6, 7]
  const img = tf.reshape(tf.range(0, 16), [1, 4, 4, 1]) as tf.Tensor4D;
  const p = patchify(img, 2);
  assertEquals(p.shape, [1, 4, 4]);
  close((await p.data()).slice(0, 8), [0, 1, 4, 5, 2, 3, 6, 7]);
  assertThrows(() => patchify(tf.zeros([1, 5, 4, 1]) as tf.Tensor4D, 2), Error, "not divisible");
});

Deno.test("sin-cos positions: the official formula at hand-picked entries", () => {
  const h = 2, dim = 8, q = 2;
  const pe = sinCos2dValues(h, h, dim);
  close(pe.slice(0, dim), new Array(dim).fill(0)); // cls row is zero
  // patch m = 1 -> gw = floor(1 / 2) = 0, gh = 1; omega = [1, 1/100]
  const row = pe.slice(2 * dim, 3 * dim);
  close(row, [0, 0, 1, 1, Math.sin(1), Math.sin(0.01), Math.cos(1), Math.cos(0.01)], 1e-6);
  assertThrows(() => sinCos2dValues(2, 2, 6), Error, "divisible by 4");
  assertEquals(q, 2);
});

Deno.test("truncated normal: inside +-std with the truncated variance", async () => {
  assertAlmostEquals(normalQuantile(0.975), 1.959963984540054, 1e-8);
  const x = await truncNormal(key(0), [20000], 0.02).data();
  let m = 0, s = 0;
  for (const v of x) (m += v), (s += v * v), assert(Math.abs(v) <= 0.02 + 1e-9);
  m /= x.length;
  // Var of N(0,1) cut at +-1: 1 - 2 phi(1) / (2 Phi(1) - 1) = 0.29112
  assertAlmostEquals(Math.sqrt(s / x.length - m * m), 0.02 * Math.sqrt(0.29112), 2e-4);
});

Deno.test("drop path: needs a key when active, keeps expectation, rates rise linearly", async () => {
  const x = tf.ones([4000, 1]);
  assertThrows(() => dropPath(x, 0.25, true), Error, "key is required");
  assertEquals(dropPath(x, 0.25, false), x);
  const y = await dropPath(x, 0.25, true, key(1)).data();
  const kept = y.filter((v) => v !== 0);
  assertAlmostEquals(kept[0], 1 / 0.75, 1e-6);
  assertAlmostEquals(kept.length / y.length, 0.75, 0.03);
  close(dropPathRates(0.1, 3), [0, 0.05, 0.1]);
});

Deno.test("mask index: [cls, visible, masked] order, equal counts enforced", () => {
  const idx = maskIndex(Uint8Array.from([0, 1, 0, 1, 1, 0, 0, 1]), 2, 4);
  assertEquals([...idx.visible], [0, 2, 5, 6]);
  assertEquals([...idx.masked], [1, 3, 4, 7]);
  assertEquals([...idx.clsVisibleMasked], [0, 1, 3, 2, 4, 5, 7, 8, 6, 9]);
  assertThrows(() => maskIndex(Uint8Array.from([0, 1, 1, 1, 1, 0, 0, 0]), 2, 4), Error, "row 1 masks 1");
});

Deno.test("residual connections: drop-path factors without a layer scale are refused; the separate ops elsewhere", async () => {
  const x = tf.tensor3d([[[1, 2]], [[3, 4]]]), branch = tf.tensor3d([[[10, 20]], [[30, 40]]]);
  const gamma = tf.tensor1d([0.5, 2]);
  try {
    assertThrows(
      () => residualAdd({ x, rowScale: Float32Array.of(1, 0) }, branch),
      Error,
      "layer scale gamma",
    );
    const p = { kernel: tf.eye(2) as tf.Tensor2D, bias: tf.zeros([2]) as tf.Tensor1D };
    assertThrows(
      () => residualLinear(p, branch, { x, rowScale: Float32Array.of(1, 0) }),
      Error,
      "layer scale gamma",
    );
    // On cpu, residualLinear is linear then the separate ops: x + s (gamma (branch I + 0)).
    const y = residualLinear(p, branch, { x, gamma, rowScale: Float32Array.of(1, 0) });
    assertEquals(Array.from(await y.data()), [1 + 5, 2 + 40, 3, 4]);
    assertEquals(Array.from(await residualAdd({ x }, branch).data()), [11, 22, 33, 44]);
    tf.dispose([p.kernel, p.bias, y]);
  } finally {
    tf.dispose([x, branch, gamma]);
  }
});
