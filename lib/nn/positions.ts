/**
 * Fixed 2-D sin-cos position embeddings, exactly as the official CAE
 * `build_2d_sincos_position_embedding` (MoCo v3 lineage): for a `h x w` grid and width D (D % 4 == 0),
 * `omega_d = 1 / 10000^(d / (D/4))`, and for flat patch index m the four quarters are
 * `sin(gw_m omega), cos(gw_m omega), sin(gh_m omega), cos(gh_m omega)` where `torch.meshgrid(grid_w, grid_h)`
 * (ij indexing) makes `gw_m = floor(m / h)` and `gh_m = m mod h`. The cls position is all zeros.
 *
 * @module
 */
import { tf } from "../deps.ts";

/** Host values `[(1 + h*w) * D]` (cls row first when `withCls`), float64 math then float32. */
export const sinCos2dValues = (h: number, w: number, dim: number, withCls = true): Float32Array => {
  if (dim % 4 !== 0) throw new Error(`sin-cos position embedding needs a width divisible by 4, got ${dim}`);
  const q = dim / 4, off = withCls ? 1 : 0;
  const out = new Float32Array((h * w + off) * dim);
  for (let m = 0; m < h * w; m++) {
    const gw = Math.floor(m / h), gh = m % h;
    const row = (m + off) * dim;
    for (let d = 0; d < q; d++) {
      // torch computes omega in float32; the difference is below float32 resolution of the embedding.
      const omega = 1 / Math.pow(10000, d / q);
      out[row + d] = Math.sin(gw * omega);
      out[row + q + d] = Math.cos(gw * omega);
      out[row + 2 * q + d] = Math.sin(gh * omega);
      out[row + 3 * q + d] = Math.cos(gh * omega);
    }
  }
  return out;
};

/** `[1, 1 + h*w, D]` (or `[1, h*w, D]` without cls): the fixed embedding as a tensor. */
export const sinCos2d = (h: number, w: number, dim: number, withCls = true): tf.Tensor3D =>
  tf.tensor3d(sinCos2dValues(h, w, dim, withCls), [1, h * w + (withCls ? 1 : 0), dim]);
