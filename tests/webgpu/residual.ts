/**
 * Residual branches fused into their last product on WebGPU (lib/nn/residual.ts `residualLinear`, the MLP's
 * residual in lib/nn/mlp.ts): the layer scale, drop path and add in the epilogue, the branch's output not
 * kept. The value is the separate ops' to the bit; the gradients (from the weight gradient's product instead
 * of the kept output) within f32 rounding of them; the tape smaller; off the tape one kernel. On the WebGPU
 * adapter present (lavapipe on the CPU machines); skipped without one.
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { gpu, onWebGPU } from "../webgpu_env.ts";
import { registerKernels, restoreStockKernels } from "../../lib/core/kernels/dispatch.ts";
import { gradients } from "../../lib/core/autodiff.ts";
import { relativeError } from "../../lib/core/compare.ts";
import { peakMemory, resetPeakMemory } from "../../lib/core/memory.ts";
import { key, seedOf, split } from "../../lib/core/random.ts";
import { linear, type LinearParams } from "../../lib/nn/linear.ts";
import { mlp, mlpInit } from "../../lib/nn/mlp.ts";
import { type Residual, residualLinear, scaledResidual } from "../../lib/nn/residual.ts";
import { assert, assertEquals } from "../../lib/core/std.ts";

const [B, N, K, D] = [3, 21, 40, 36];
const rnd = (shape: number[], seed: number, std = 1) => tf.randomNormal(shape, 0, std, "float32", seed);
const setup = () => {
  const [k1, k2] = split(key(53));
  const p: LinearParams = {
    kernel: rnd([K, D], seedOf(k1), 0.2) as tf.Tensor2D,
    bias: rnd([D], seedOf(k2)) as tf.Tensor1D,
  };
  const a = rnd([B, N, K], 5), x = rnd([B, N, D], 6), w = rnd([B, N, D], 7);
  const gamma = rnd([D], 8, 0.5) as tf.Tensor1D;
  return { p, a, x, w, gamma, dispose: () => tf.dispose([p.kernel, p.bias!, a, x, w, gamma]) };
};

/** Value and gradients (a, W, b, gamma, x) of `sum(f(...) w)`, with the tape's peak of live bytes. */
const run = async (f: (...t: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], w: tf.Tensor) => {
  resetPeakMemory();
  const { value, grads } = gradients((...t) => tf.sum(tf.mul(f(...t), w)), inputs);
  const peak = peakMemory().peakTensorBytes;
  const data = [await value.data(), ...await Promise.all(grads.map((g) => g.data()))];
  tf.dispose([value, ...grads]);
  return { data, peak };
};

Deno.test({
  ...gpu,
  name:
    "residualLinear: the separate ops' value to the bit, their gradients within 1e-5, with and without drop path",
  fn: async () => {
    await onWebGPU();
    registerKernels();
    const c = setup();
    try {
      for (const rowScale of [undefined, Float32Array.of(0, 2, 1.25)]) {
        const fused = (a: tf.Tensor, k: tf.Tensor, b: tf.Tensor, g: tf.Tensor, x: tf.Tensor) =>
          residualLinear({ kernel: k as tf.Tensor2D, bias: b as tf.Tensor1D }, a, {
            x,
            gamma: g as tf.Tensor1D,
            rowScale,
          });
        const plain = (a: tf.Tensor, k: tf.Tensor, b: tf.Tensor, g: tf.Tensor, x: tf.Tensor) =>
          scaledResidual(x, linear({ kernel: k as tf.Tensor2D, bias: b as tf.Tensor1D }, a), g, rowScale);
        const inputs = [c.a, c.p.kernel, c.p.bias!, c.gamma, c.x];
        const got = await run(fused, inputs, c.w), want = await run(plain, inputs, c.w);
        const what = rowScale ? "with drop path" : "without drop path";
        // The loss is a sum of the outputs, so equal outputs give it equal only up to the sum's order: the
        // forward value itself is compared exactly off the tape below.
        got.data.forEach((g, i) => {
          const e = relativeError(g, want.data[i]);
          assert(e < 1e-5, `${what}: output ${i} (value, da, dW, db, dgamma, dx): relative error ${e}`);
        });
        const off = residualLinear(c.p, c.a, { x: c.x, gamma: c.gamma, rowScale });
        const ref = scaledResidual(c.x, linear(c.p, c.a), c.gamma, rowScale);
        assertEquals(relativeError(await off.data(), await ref.data()), 0, `${what}: the value`);
        tf.dispose([off, ref]);
        // The branch's output [B N, D] is not kept: the fused tape's peak is lower.
        assert(got.peak < want.peak, `${what}: peak ${got.peak} vs ${want.peak}`);
      }
      // Off the tape: one kernel, no elementwise ops.
      const info = await tf.profile(() => residualLinear(c.p, c.a, { x: c.x, gamma: c.gamma }));
      tf.dispose(info.result as tf.Tensor);
      const names = info.kernels.map((k) => k.name);
      assert(
        names.includes("CaeMatMulBias") && !names.some((n) => ["Add", "Multiply"].includes(n)),
        `${names}`,
      );
    } finally {
      restoreStockKernels();
      c.dispose();
    }
  },
});

Deno.test({
  ...gpu,
  name: "the MLP's residual branch on the fused MLP: the separate ops' value and gradients within 1e-5",
  fn: async () => {
    await onWebGPU();
    registerKernels();
    const p = mlpInit(key(54), D, 4 * D);
    const x = rnd([B, N, D], 9), w = rnd([B, N, D], 10), gamma = rnd([D], 11, 0.5) as tf.Tensor1D;
    const leaves = [p.fc1.kernel, p.fc1.bias!, p.fc2.kernel, p.fc2.bias!];
    const params = (ws: tf.Tensor[]) => ({
      fc1: { kernel: ws[0] as tf.Tensor2D, bias: ws[1] as tf.Tensor1D },
      fc2: { kernel: ws[2] as tf.Tensor2D, bias: ws[3] as tf.Tensor1D },
    });
    try {
      for (const rowScale of [undefined, Float32Array.of(2, 0, 1.25)]) {
        for (const withGamma of [true, false]) {
          if (!withGamma && rowScale) continue; // drop path comes with a layer scale
          const r = (xx: tf.Tensor, g: tf.Tensor): Residual =>
            withGamma ? { x: xx, gamma: g as tf.Tensor1D, rowScale } : { x: xx };
          const fused = (xx: tf.Tensor, g: tf.Tensor, ...ws: tf.Tensor[]) =>
            mlp(params(ws), xx, "gelu", r(xx, g));
          const plain = (xx: tf.Tensor, g: tf.Tensor, ...ws: tf.Tensor[]) =>
            withGamma
              ? scaledResidual(xx, mlp(params(ws), xx), g, rowScale)
              : tf.add(xx, mlp(params(ws), xx));
          const got = await run(fused, [x, gamma, ...leaves], w);
          const want = await run(plain, [x, gamma, ...leaves], w);
          got.data.forEach((g, i) => {
            const e = relativeError(g, want.data[i]);
            assert(e < 1e-5, `gamma ${withGamma}, drop path ${!!rowScale}: output ${i}: relative error ${e}`);
          });
        }
      }
    } finally {
      restoreStockKernels();
      tf.dispose([x, w, gamma, ...leaves]);
    }
  },
});
