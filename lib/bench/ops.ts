/**
 * Op-level microbenchmarks at the shapes of one CAE v2 training step: the encoder's matmuls, attention,
 * softmax, GELU, LayerNorm, the qkv transposes, reductions, and the backward of a reduction with the
 * stock and the device-side gradients (lib/core/gradients.ts). Each case says how much arithmetic
 * (flops) or memory traffic (bytes: inputs read once, outputs written once) it needs, so that the
 * report can give TFLOP/s or GB/s.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { foldIn, key, seedOf } from "../core/random.ts";
import { defaultNumMasked, type PresetName, studentPreset } from "../models/presets.ts";
import { gelu } from "../nn/mlp.ts";
import { layerNorm } from "../nn/norm.ts";

/** The shapes the op cases are built from. */
export interface BenchShape {
  readonly model: PresetName;
  /** Images per step B. */
  readonly batch: number;
  /** Encoder tokens per image N: visible patches + cls (ViT-B/16 at 224 masking 98: 99). */
  readonly tokens: number;
  /** Encoder width D. */
  readonly dim: number;
  readonly heads: number;
  /** MLP hidden width (4 D). */
  readonly hidden: number;
  /** Side of the square matmul (4096 in BENCHMARKS.md's reference figures). */
  readonly matmulSize: number;
  /** Elements of the full reduction (10M in BENCHMARKS.md's reference figures). */
  readonly reduceSize: number;
}

/** The encoder shapes of a preset at batch `batch` (224 px images, 16 px patches, official masking). */
export const benchShape = (
  model: PresetName,
  batch: number,
  opts: { matmulSize?: number; reduceSize?: number } = {},
): BenchShape => {
  const c = studentPreset(model);
  const numPatches = (c.imageSize / c.patchSize) ** 2;
  return {
    model,
    batch,
    tokens: numPatches - defaultNumMasked(model, numPatches) + 1,
    dim: c.dim,
    heads: c.heads,
    hidden: c.dim * c.mlpRatio,
    matmulSize: opts.matmulSize ?? 4096,
    reduceSize: opts.reduceSize ?? 10_000_000,
  };
};

/** Which gradients of `Sum` and `Mean` a case runs with. */
export type GradientSet = "device" | "stock";

/** One microbenchmark: `setup` makes the inputs, `run` the timed work returning one fresh tensor. */
export interface OpCase {
  readonly name: string;
  /** Shapes in words, for the report. */
  readonly shape: string;
  /** Floating-point operations per run, for TFLOP/s. */
  readonly flops?: number;
  /** Minimal bytes moved per run (inputs read once, outputs written once), for GB/s. */
  readonly bytes?: number;
  /** Gradients of Sum/Mean to register while timing (default: device). */
  readonly gradients?: GradientSet;
  readonly setup: () => { readonly run: () => tf.Tensor; readonly dispose: () => void };
}

const F32 = 4;
const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const fmt = (shape: readonly number[]) => `[${shape.join(",")}]`;

/** Random normal inputs from a fixed key (one per input index), so every run times the same data. */
const input = (shape: number[], i: number): tf.Tensor =>
  tf.randomNormal(shape, 0, 1, "float32", seedOf(foldIn(key(2026), i)));

const withInputs = (shapes: number[][], f: (xs: tf.Tensor[]) => tf.Tensor) => () => {
  const xs = shapes.map((s, i) => input(s, i));
  return { run: () => tf.tidy(() => f(xs)), dispose: () => tf.dispose(xs) };
};

/** Elementwise-style case: bytes = (inputs + output) * 4. */
const streaming = (name: string, shape: number[], f: (x: tf.Tensor) => tf.Tensor, extra = ""): OpCase => ({
  name,
  shape: fmt(shape) + extra,
  bytes: 2 * F32 * size(shape),
  setup: withInputs([shape], ([x]) => f(x)),
});

const gradOfSquares = (
  name: string,
  shape: number[],
  reduce: (t: tf.Tensor) => tf.Tensor,
  gradients: GradientSet,
): OpCase => ({
  name,
  shape: fmt(shape),
  bytes: 2 * F32 * size(shape),
  gradients,
  setup: withInputs([shape], ([x]) => tf.grad((t: tf.Tensor) => reduce(tf.mul(t, t)))(x)),
});

/**
 * The op cases at shape `s`. `stock` adds the cases that run with tfjs's own Sum/Mean gradients and the
 * host-filled `tf.ones` (seconds each on a GPU).
 */
export const opCases = (s: BenchShape, opts: { stock: boolean }): OpCase[] => {
  const { batch: b, tokens: n, dim: d, heads: h, hidden } = s;
  const m = b * n;
  const dh = d / h;
  const sq = s.matmulSize;
  const cases: OpCase[] = [
    {
      name: "matmul-square",
      shape: `${fmt([sq, sq])} x ${fmt([sq, sq])}`,
      flops: 2 * sq ** 3,
      setup: withInputs([[sq, sq], [sq, sq]], ([x, y]) => tf.matMul(x, y)),
    },
    {
      name: "matmul-qkv",
      shape: `${fmt([m, d])} x ${fmt([d, 3 * d])}`,
      flops: 2 * m * d * 3 * d,
      setup: withInputs([[m, d], [d, 3 * d]], ([x, w]) => tf.matMul(x, w)),
    },
    {
      name: "matmul-fc1",
      shape: `${fmt([m, d])} x ${fmt([d, hidden])}`,
      flops: 2 * m * d * hidden,
      setup: withInputs([[m, d], [d, hidden]], ([x, w]) => tf.matMul(x, w)),
    },
    {
      name: "attn-qk",
      shape: `${fmt([b, h, n, dh])} x k^T`,
      flops: 2 * b * h * n * n * dh,
      setup: withInputs([[b, h, n, dh], [b, h, n, dh]], ([q, k]) => tf.matMul(q, k, false, true)),
    },
    {
      name: "attn-av",
      shape: `${fmt([b, h, n, n])} x ${fmt([b, h, n, dh])}`,
      flops: 2 * b * h * n * n * dh,
      setup: withInputs([[b, h, n, n], [b, h, n, dh]], ([p, v]) => tf.matMul(p, v)),
    },
    streaming("softmax", [b, h, n, n], (x) => tf.softmax(x)),
    streaming("gelu-erf", [m, hidden], gelu, " (lib/nn/mlp gelu, 5 ops)"),
    {
      name: "layernorm",
      shape: `${fmt([b, n, d])} (lib/nn/norm)`,
      bytes: 2 * F32 * m * d,
      setup: () => {
        const x = input([b, n, d], 0);
        const p = { scale: input([d], 1) as tf.Tensor1D, bias: input([d], 2) as tf.Tensor1D };
        return {
          run: () => tf.tidy(() => layerNorm(p, x, 1e-6)),
          dispose: () => tf.dispose([x, p.scale, p.bias]),
        };
      },
    },
    streaming(
      "transpose-qkv5d",
      [b, n, 3, h, dh],
      (x) => tf.transpose(x, [2, 0, 3, 1, 4]),
      " perm [2,0,3,1,4]",
    ),
    {
      name: "split-heads",
      shape: `${fmt([b, n, 3 * d])} -> 3 x ${fmt([b, h, n, dh])} (lib/nn/attention path)`,
      bytes: 2 * F32 * m * 3 * d,
      setup: withInputs([[b, n, 3 * d]], ([x]) => {
        const heads = tf.split(x, 3, 2).map((t) => tf.transpose(tf.reshape(t, [b, n, h, dh]), [0, 2, 1, 3]));
        return tf.stack(heads.map((t) => tf.slice(tf.reshape(t, [-1]), [0], [1])));
      }),
    },
    {
      name: "sum-all",
      shape: fmt([s.reduceSize]),
      bytes: F32 * s.reduceSize,
      setup: withInputs([[s.reduceSize]], ([x]) => tf.sum(x)),
    },
    streaming("sum-last-axis", [m, hidden], (x) => tf.sum(x, -1)),
    gradOfSquares("grad-sum-sq", [m, hidden], (t) => tf.sum(t), "device"),
    gradOfSquares("grad-mean-sq", [m, hidden], (t) => tf.mean(t), "device"),
    gradOfSquares("grad-mean-last-axis", [m, d], (t) => tf.sum(tf.mean(t, -1)), "device"),
    {
      name: "fill-device",
      shape: fmt([m, hidden]),
      bytes: F32 * m * hidden,
      setup: () => ({ run: () => tf.fill([m, hidden], 1), dispose: () => {} }),
    },
  ];
  if (!opts.stock) return cases;
  return [
    ...cases,
    gradOfSquares("grad-sum-sq[stock]", [m, hidden], (t) => tf.sum(t), "stock"),
    gradOfSquares("grad-mean-sq[stock]", [m, hidden], (t) => tf.mean(t), "stock"),
    gradOfSquares("grad-mean-last-axis[stock]", [m, d], (t) => tf.sum(tf.mean(t, -1)), "stock"),
    {
      name: "ones-host",
      shape: fmt([m, hidden]),
      bytes: F32 * m * hidden,
      setup: () => ({ run: () => tf.tidy(() => tf.add(tf.ones([m, hidden]), 0)), dispose: () => {} }),
    },
  ];
};
