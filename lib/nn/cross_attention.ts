/**
 * Cross-attention of the latent contextual regressor (official CAE `CrossAttention`): separate q, k, v
 * projections without bias, learned `qBias` and `vBias`, no k bias.
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Tensor1D, Tensor3D } from "../core/tree.ts";
import { type Key, split } from "../core/random.ts";
import { linear, linearInit, type LinearParams } from "./linear.ts";
import { attentionCore, headAttention, mergeHeads, splitHeads } from "./sdpa.ts";
import { headProductsOn } from "../core/kernels/heads.ts";
import { project } from "./attention.ts";
import type { Residual } from "./residual.ts";

/** Parameters of cross-attention. */
export type CrossAttentionParams = {
  readonly q: LinearParams;
  readonly k: LinearParams;
  readonly v: LinearParams;
  readonly qBias: Tensor1D;
  readonly vBias: Tensor1D;
  readonly proj: LinearParams;
};

/** Xavier kernels, zero biases. */
export const crossAttentionInit = (key: Key, dim: number): CrossAttentionParams => {
  const [kq, kk, kv, kp] = split(key, 4);
  return {
    q: linearInit(kq, dim, dim, false),
    k: linearInit(kk, dim, dim, false),
    v: linearInit(kv, dim, dim, false),
    qBias: tf.zeros([dim]) as Tensor1D,
    vBias: tf.zeros([dim]) as Tensor1D,
    proj: linearInit(kp, dim, dim),
  };
};

/**
 * queries `[B, Nq, D]`, keys and values `[B, Nk, D]` -> `[B, Nq, D]`. `residual`: returns the residual
 * connection around it instead (lib/nn/attention.ts `project`).
 */
export const crossAttention = (
  p: CrossAttentionParams,
  queries: Tensor3D,
  keys: Tensor3D,
  values: Tensor3D,
  heads: number,
  residual?: Residual,
): Tensor3D => {
  if (headProductsOn(queries.shape[0] * heads)) {
    // WebGPU: the heads read in place from the three projections, the context written merged.
    const qkv = [
      linear(p.q, queries, p.qBias),
      linear(p.k, keys),
      linear(p.v, values, p.vBias),
    ] as Tensor3D[];
    const context = headAttention(qkv, { q: [0, 0], k: [1, 0], v: [2, 0] }, heads);
    tf.dispose(qkv);
    const out = project(p.proj, context, residual);
    context.dispose();
    return out;
  }
  const q = splitHeads(linear(p.q, queries, p.qBias), heads);
  const k = splitHeads(linear(p.k, keys), heads);
  const v = splitHeads(linear(p.v, values, p.vBias), heads);
  return project(p.proj, mergeHeads(attentionCore(q, k, v)), residual);
};
