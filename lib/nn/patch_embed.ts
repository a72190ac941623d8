/**
 * Patch embedding: a stride-p, kernel-p convolution written as patchify + matmul. The kernel is stored
 * `[p*p*C, D]` in (kh, kw, c) order, i.e. the HWIO conv filter `[p, p, C, D]` flattened; PyTorch's
 * `[D, C, p, p]` converts by permuting to `(kh, kw, c, D)`.
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { Key } from "../core/random.ts";
import { linear, type LinearParams } from "./linear.ts";
import { truncNormal } from "./init.ts";

/** `[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C]`, patches in row-major grid order. */
export const patchify = (images: tf.Tensor4D, p: number): tf.Tensor3D => {
  const [b, h, w, c] = images.shape;
  if (h % p !== 0 || w % p !== 0) {
    throw new Error(`patchify: image ${h}x${w} is not divisible by the patch size ${p}`);
  }
  const gh = h / p, gw = w / p;
  const x = tf.reshape(images, [b, gh, p, gw, p, c]);
  return tf.reshape(tf.transpose(x, [0, 1, 3, 2, 4, 5]), [b, gh * gw, p * p * c]);
};

/**
 * Official CAE init for the patch projection: truncated normal std 0.02 on the weight
 * (`trunc_normal_(self.patch_embed.proj.weight)` path in `_init_weights`), zero bias.
 */
export const patchEmbedInit = (
  k: Key,
  p: number,
  channels: number,
  dim: number,
  bias = true,
): LinearParams => {
  const kernel = truncNormal(k, [p * p * channels, dim]) as tf.Tensor2D;
  return bias ? { kernel, bias: tf.zeros([dim]) as tf.Tensor1D } : { kernel };
};

/** `[B, H, W, C] -> [B, L, D]`. */
export const patchEmbed = (params: LinearParams, images: tf.Tensor4D, p: number): tf.Tensor3D =>
  linear(params, patchify(images, p)) as tf.Tensor3D;
