/**
 * The MLP as one op on WebGPU's fused kernels (lib/nn/mlp.ts `fusedMlp`): the activation's gradient in the
 * epilogue of the product that makes its `dy` (`CaeMatMulActGrad`), the hidden layer recomputed in the
 * backward pass instead of kept. Bit for bit the separate ops (linear, fused activation, linear) in f32,
 * within f16 rounding of them in f16, with a smaller tape and no `CaeGeluGrad` kernel. On the WebGPU adapter
 * present (lavapipe on the CPU machines); skipped without one.
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { gpu, hasF16, onWebGPU } from "../webgpu_env.ts";
import { registerKernels, restoreStockKernels } from "../../lib/core/kernels/dispatch.ts";
import { checkMatMulActGrad, formatChecks } from "../../lib/bench/kernel_check.ts";
import { gradients } from "../../lib/core/autodiff.ts";
import { relativeError } from "../../lib/core/compare.ts";
import { peakMemory, resetPeakMemory } from "../../lib/core/memory.ts";
import { setPrecision } from "../../lib/core/precision.ts";
import { key, split } from "../../lib/core/random.ts";
import { type Activation, mlp, mlpInit, type MlpParams } from "../../lib/nn/mlp.ts";
import { flatten, type Params } from "../../lib/core/tree.ts";
import { assert, assertEquals } from "../../lib/core/std.ts";

Deno.test({
  ...gpu,
  name: "matmul with the activation gradient in its epilogue equals the product then CaeGeluGrad, to the bit",
  fn: async () => {
    await onWebGPU();
    try {
      // Ragged rows (not a multiple of any tile), GELU and QuickGELU.
      const rs = await checkMatMulActGrad([{ rows: 75, dim: 24, hidden: 96 }, {
        rows: 130,
        dim: 64,
        hidden: 36,
      }], 0);
      assertEquals(rs.length, 4);
      assert(rs.every((r) => r.relErr === 0), formatChecks(rs));
    } finally {
      restoreStockKernels();
    }
  },
});

/** A stack of MLPs on the tape: value, gradients of x and every parameter, the peak of live bytes. */
const stack = async (params: MlpParams[], x: tf.Tensor, act: Activation) => {
  const leaves = params.flatMap((p) => [p.fc1.kernel, p.fc1.bias!, p.fc2.kernel, p.fc2.bias!]);
  resetPeakMemory();
  const r = gradients((x, ...ws) => {
    let h = x;
    params.forEach((_, i) => {
      const [w1, b1, w2, b2] = ws.slice(4 * i, 4 * i + 4) as [
        tf.Tensor2D,
        tf.Tensor1D,
        tf.Tensor2D,
        tf.Tensor1D,
      ];
      h = mlp({ fc1: { kernel: w1, bias: b1 }, fc2: { kernel: w2, bias: b2 } }, h, act);
    });
    return tf.sum(tf.square(h));
  }, [x, ...leaves]);
  const peak = peakMemory().peakTensorBytes;
  const data = [await r.value.data(), ...await Promise.all(r.grads.map((g) => g.data()))];
  tf.dispose([r.value, ...r.grads]);
  return { data, peak };
};

/** Runs `f` with the fused MLP off (its epilogue kernel unregistered): the separate ops run. */
const separate = async <T>(f: () => Promise<T>): Promise<T> => {
  tf.unregisterKernel("CaeMatMulActGrad", "webgpu");
  try {
    return await f();
  } finally {
    registerKernels();
  }
};

Deno.test({
  ...gpu,
  name: "fused MLP: bit for bit the separate ops in f32 (GELU, QuickGELU), a smaller tape, no CaeGeluGrad",
  fn: async () => {
    await onWebGPU();
    registerKernels();
    const keys = split(key(11), 4);
    const params = keys.slice(1).map((k) => mlpInit(k, 64, 256));
    // [B, N, D] input: the op folds the leading axes.
    const x = tf.randomNormal([4, 50, 64], 0, 1, "float32", 3);
    try {
      for (const act of ["gelu", "quickGelu"] as const) {
        const fused = await stack(params, x, act);
        const plain = await separate(() => stack(params, x, act));
        fused.data.forEach((d, i) => assertEquals(relativeError(d, plain.data[i]), 0, `${act} output ${i}`));
        // Three MLPs keep x and u (64 + 256 wide) instead of x, u and h (64 + 256 + 256) per row.
        assert(fused.peak < 0.8 * plain.peak, `${act}: peak ${fused.peak} vs ${plain.peak}`);
      }
      const info = await tf.profile(() => {
        const r = gradients((x) => tf.sum(mlp(params[0], x)), [x]);
        return [r.value, ...r.grads];
      });
      tf.dispose(info.result as tf.Tensor[]);
      const names = new Set(info.kernels.map((k) => k.name));
      assert(names.has("CaeMatMulActGrad") && !names.has("CaeGeluGrad"), [...names].join(", "));
    } finally {
      restoreStockKernels();
      tf.dispose([x, ...params.flatMap((p) => Object.values(flatten(p as unknown as Params)))]);
    }
  },
});

Deno.test({
  ...gpu,
  ignore: !hasF16,
  name: "fused MLP in f16: within f16 rounding of the separate ops",
  fn: async () => {
    await onWebGPU();
    registerKernels();
    setPrecision("f16");
    const keys = split(key(12), 3);
    const params = keys.slice(1).map((k) => mlpInit(k, 64, 256));
    const x = tf.randomNormal([200, 64], 0, 1, "float32", 4);
    try {
      const fused = await stack(params, x, "gelu");
      const plain = await separate(() => stack(params, x, "gelu"));
      fused.data.forEach((d, i) => {
        const e = relativeError(d, plain.data[i]);
        assert(e < 1e-2, `output ${i}: relative error ${e}`);
      });
    } finally {
      setPrecision("f32");
      restoreStockKernels();
      tf.dispose([x, ...params.flatMap((p) => Object.values(flatten(p as unknown as Params)))]);
    }
  },
});
