/**
 * Multi-head self-attention. Two flavours share one function:
 * - the CAE/BEiT student: `qkv` without bias plus separate `qBias` and `vBias` (no k bias: a bias on the
 *   keys shifts every score of a query alike, which softmax ignores);
 * - OpenAI CLIP (`nn.MultiheadAttention`): `qkv` with a full `[3D]` bias (`in_proj_bias`).
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Tensor1D, Tensor3D, Tensor4D } from "../core/tree.ts";
import { type Key, split } from "../core/random.ts";
import { linear, linearInit, type LinearParams } from "./linear.ts";
import { attentionCore, headAttention, mergeHeads } from "./sdpa.ts";
import { headProductsOn } from "../core/kernels/heads.ts";
import { reshape, slice } from "./views.ts";
import { type Residual, residualLinear } from "./residual.ts";

/** The output projection, or with `residual` the residual connection around the branch it ends. */
export const project = (p: LinearParams, context: Tensor3D, residual?: Residual): Tensor3D =>
  (residual === undefined ? linear(p, context) : residualLinear(p, context, residual)) as Tensor3D;

/** Parameters of self-attention. `qkv.kernel: [D, 3D]` with columns q | k | v. */
export type AttentionParams = {
  readonly qkv: LinearParams;
  readonly qBias?: Tensor1D;
  readonly vBias?: Tensor1D;
  readonly proj: LinearParams;
};

/** Student attention init: xavier kernels, zero q/v biases, no qkv bias (official `qkv_bias=True`). */
export const attentionInit = (k: Key, dim: number): AttentionParams => {
  const [k1, k2] = split(k);
  return {
    qkv: linearInit(k1, dim, 3 * dim, false),
    qBias: tf.zeros([dim]) as Tensor1D,
    vBias: tf.zeros([dim]) as Tensor1D,
    proj: linearInit(k2, dim, dim),
  };
};

/**
 * `x: [B, N, D] -> [B, N, D]`. `residual`: returns the residual connection around it instead,
 * `x_r + dropPath(gamma attention(x))`, fused into the output projection on WebGPU (lib/nn/residual.ts).
 */
export const attention = (p: AttentionParams, x: Tensor3D, heads: number, residual?: Residual): Tensor3D => {
  const bias = p.qBias && p.vBias
    ? tf.concat([p.qBias, tf.zerosLike(p.qBias), p.vBias]) as Tensor1D
    : undefined;
  const [b, n, d] = x.shape;
  const qkv = linear(p.qkv, x, bias) as Tensor3D; // [B, N, 3D]
  bias?.dispose();
  if (headProductsOn(b * heads)) {
    // WebGPU: q, k and v read in place from the projection, the context written merged (no transposes).
    const context = headAttention([qkv], { q: [0, 0], k: [0, d], v: [0, 2 * d] }, heads);
    qkv.dispose();
    const out = project(p.proj, context, residual);
    context.dispose();
    return out;
  }
  // One transpose to [3, B, H, N, dh], then slices along the leading axis of a 2-D view: contiguous, so
  // cheap on every backend (a split along the last axis costs a strided copy per part; it dominated the
  // cpu profile). 2-D, because tfjs-webgpu 4.22 computes the gradient of a rank-5 slice (a rank-5 pad) wrong.
  const dh = d / heads;
  // Every intermediate handle is released as soon as its consumer has run (what the backward pass needs,
  // the consumer kept a handle on, or in f16 a packed copy of): in f16 the f32 q, k and v go at once.
  const qkv5 = reshape(qkv, [b, n, 3, heads, dh]);
  qkv.dispose();
  const moved = tf.transpose(qkv5, [2, 0, 3, 1, 4]);
  qkv5.dispose();
  const qkvHeads = reshape(moved, [3, -1]);
  moved.dispose();
  const part = (i: number) => {
    const flat = slice(qkvHeads, [i, 0], [1, -1]);
    const r = reshape<Tensor4D>(flat, [b, heads, n, dh]);
    flat.dispose();
    return r;
  };
  const qkvParts = [part(0), part(1), part(2)];
  qkvHeads.dispose();
  const o = attentionCore(qkvParts[0], qkvParts[1], qkvParts[2]);
  tf.dispose(qkvParts);
  const merged = mergeHeads(o);
  o.dispose();
  const y = project(p.proj, merged, residual);
  merged.dispose();
  return y;
};
