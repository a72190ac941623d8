/**
 * Attention with the heads read in place (lib/core/kernels/heads.ts `CaeHeadMatMul`, lib/nn/sdpa.ts
 * `headAttention`): bit for bit the composition it replaces (transposes, slices, `attentionCore`, merge) in
 * f32 and f16, within rounding of tfjs's stock kernels, and a training step of an attention layer with no
 * `Transpose`, `Slice` or `PadV2` kernel left. On the WebGPU adapter present (lavapipe on the CPU machines);
 * skipped without one.
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { gpu, hasF16, onWebGPU } from "../webgpu_env.ts";
import { registerKernels, restoreStockKernels } from "../../lib/core/kernels/dispatch.ts";
import { headProductsOn } from "../../lib/core/kernels/heads.ts";
import { setPrecision } from "../../lib/core/precision.ts";
import { checkHeadAttention, formatChecks, smallHeadAttentionCases } from "../../lib/bench/kernel_check.ts";
import { gradients } from "../../lib/core/autodiff.ts";
import { relativeError } from "../../lib/core/compare.ts";
import { key, seedOf } from "../../lib/core/random.ts";
import { attention, attentionInit, type AttentionParams } from "../../lib/nn/attention.ts";
import {
  crossAttention,
  crossAttentionInit,
  type CrossAttentionParams,
} from "../../lib/nn/cross_attention.ts";
import { headAttention } from "../../lib/nn/sdpa.ts";
import { flatten, type Params, unflatten } from "../../lib/core/tree.ts";
import { assert, assertEquals, assertThrows } from "../../lib/core/std.ts";

Deno.test({
  ...gpu,
  name: "head attention equals transposes + attentionCore + merge to the bit, value and gradients, f32",
  fn: async () => {
    await onWebGPU();
    try {
      const rs = await checkHeadAttention(smallHeadAttentionCases, 0);
      assertEquals(rs.length, 2 + 4 + 2, "value and every source's gradient of each case");
      assert(rs.every((r) => r.relErr === 0), formatChecks(rs));
    } finally {
      restoreStockKernels();
    }
  },
});

Deno.test({
  ...gpu,
  ignore: !hasF16,
  name: "head attention in f16 (packed saves, f16 operands) equals the composition to the bit",
  fn: async () => {
    await onWebGPU();
    setPrecision("f16");
    try {
      const rs = await checkHeadAttention(smallHeadAttentionCases, 0);
      assert(rs.every((r) => r.relErr === 0), formatChecks(rs));
    } finally {
      setPrecision("f32");
      restoreStockKernels();
    }
  },
});

/** The loss `sum(f(x) w)` and its gradients for every parameter and input, as flat arrays. */
const valueAndGrads = async (
  f: (...xs: tf.Tensor[]) => tf.Tensor,
  xs: tf.Tensor[],
  w: tf.Tensor,
): Promise<Float32Array[]> => {
  const { value, grads } = gradients((...ys) => tf.sum(tf.mul(f(...ys), w)), xs);
  const out = [await value.data() as Float32Array, ...await Promise.all(grads.map((g) => g.data()))];
  tf.dispose([value, ...grads]);
  return out as Float32Array[];
};

/** Names of the kernels one call of `f` runs (tf.profile). */
const kernelsOf = async (f: () => tf.TensorContainer): Promise<Set<string>> => {
  const info = await tf.profile(() => f());
  tf.dispose(info.result as tf.TensorContainer);
  return new Set(info.kernels.map((k) => k.name));
};

Deno.test({
  ...gpu,
  name: "attention layers on the head products: within rounding of stock tfjs, no transposes, slices or pads",
  fn: async () => {
    await onWebGPU();
    const [b, n, nq, d, heads] = [2, 21, 9, 32, 4];
    const self = attentionInit(key(1), d);
    const cross = crossAttentionInit(key(2), d);
    // Non-zero q/v biases, so that the bias paths are exercised too.
    const selfP: AttentionParams = {
      ...self,
      qBias: tf.randomNormal([d], 0, 0.5, "float32", 3) as tf.Tensor1D,
    };
    const crossP: CrossAttentionParams = {
      ...cross,
      vBias: tf.randomNormal([d], 0, 0.5, "float32", 4) as tf.Tensor1D,
    };
    const x = tf.randomNormal([b, n, d], 0, 1, "float32", seedOf(key(5))) as tf.Tensor3D;
    const qx = tf.randomNormal([b, nq, d], 0, 1, "float32", seedOf(key(6))) as tf.Tensor3D;
    const w = tf.randomNormal([b, n, d], 0, 1, "float32", 7),
      wq = tf.randomNormal([b, nq, d], 0, 1, "float32", 8);
    const selfLeaves = Object.values(flatten(selfP as unknown as Params));
    const crossLeaves = Object.values(flatten(crossP as unknown as Params));
    const runSelf = (...ys: tf.Tensor[]) => {
      const [xx, ...leaves] = ys;
      const p = unflat<AttentionParams>(Object.keys(flatten(selfP as unknown as Params)), leaves);
      return attention(p, xx as tf.Tensor3D, heads);
    };
    const runCross = (...ys: tf.Tensor[]) => {
      const [q, kv, ...leaves] = ys;
      const p = unflat<CrossAttentionParams>(Object.keys(flatten(crossP as unknown as Params)), leaves);
      return crossAttention(p, q as tf.Tensor3D, kv as tf.Tensor3D, kv as tf.Tensor3D, heads);
    };
    try {
      restoreStockKernels();
      assert(!headProductsOn());
      const stockSelf = await valueAndGrads(runSelf, [x, ...selfLeaves], w);
      const stockCross = await valueAndGrads(runCross, [qx, x, ...crossLeaves], wq);
      registerKernels();
      assert(headProductsOn());
      const fastSelf = await valueAndGrads(runSelf, [x, ...selfLeaves], w);
      const fastCross = await valueAndGrads(runCross, [qx, x, ...crossLeaves], wq);
      fastSelf.forEach((g, i) => {
        const e = relativeError(g, stockSelf[i]);
        assert(e < 1e-5, `self-attention output ${i}: relative error ${e}`);
      });
      fastCross.forEach((g, i) => {
        const e = relativeError(g, stockCross[i]);
        assert(e < 1e-5, `cross-attention output ${i}: relative error ${e}`);
      });
      // The kernels of a training step (forward and backward) of each layer.
      for (
        const step of [
          () => gradients((...ys) => tf.sum(tf.mul(runSelf(...ys), w)), [x, ...selfLeaves]),
          () => gradients((...ys) => tf.sum(tf.mul(runCross(...ys), wq)), [qx, x, ...crossLeaves]),
        ]
      ) {
        const names = await kernelsOf(() => {
          const r = step();
          return [r.value, ...r.grads];
        });
        assert(names.has("CaeHeadMatMul"), [...names].join(", "));
        for (const stray of ["Transpose", "Slice", "PadV2"]) {
          assert(!names.has(stray), `${stray} in the step: ${[...names].join(", ")}`);
        }
      }
    } finally {
      restoreStockKernels();
      tf.dispose([x, qx, w, wq, selfP.qBias!, crossP.vBias, ...selfLeaves, ...crossLeaves]);
    }
  },
});

/** A params record from flat names and leaves (the order of `flatten`). */
const unflat = <P>(names: string[], leaves: tf.Tensor[]): P =>
  unflatten(Object.fromEntries(names.map((n, i) => [n, leaves[i]]))) as unknown as P;

Deno.test({
  ...gpu,
  name:
    "headAttention refuses sources its heads do not exactly cover, and mismatched q, k, v; dispatch limit",
  fn: async () => {
    await onWebGPU();
    registerKernels();
    const x = tf.zeros([2, 5, 24]) as tf.Tensor3D, y = tf.zeros([2, 6, 8]) as tf.Tensor3D;
    try {
      assertThrows(() => headAttention([x], { q: [0, 0], k: [0, 8], v: [0, 8] }, 2), Error, "not covered");
      // More (batch, head) pairs than one dispatch dimension holds: the transposes path runs instead.
      assert(headProductsOn(65535) && !headProductsOn(65536));
      assertThrows(
        () => headAttention([x, y], { q: [0, 0], k: [0, 8], v: [0, 16] }, 2),
        Error,
        "not covered",
      );
      assertThrows(() => headAttention([x], { q: [0, 0], k: [0, 8], v: [0, 16] }, 3), Error, "heads");
      const q = tf.zeros([2, 5, 8]) as tf.Tensor3D, k = tf.zeros([2, 6, 8]) as tf.Tensor3D;
      assertThrows(
        () => headAttention([q, k, q], { q: [0, 0], k: [1, 0], v: [2, 0] }, 2),
        Error,
        "do not agree",
      );
      tf.dispose([q, k]);
    } finally {
      restoreStockKernels();
      tf.dispose([x, y]);
    }
  },
});
