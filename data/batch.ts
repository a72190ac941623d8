/**
 * Batches: what the loader hands to the training and evaluation code. Host batches are plain typed
 * arrays, built in workers and transferred without copies; {@link toBatch} uploads the images as
 * tensors. Images are NHWC `[B, H, W, 3]` float32, row-major, like every image tensor in this project.
 *
 * @module
 */
import { tf } from "../lib/deps.ts";
import type { Tensor4D } from "../lib/core/tree.ts";

/** Where a sample stream stands: `index` samples of epoch `epoch` consumed (skipped files included). */
export interface DataPosition {
  /** Epoch number, from 0. */
  readonly epoch: number;
  /** Samples of this epoch consumed so far. */
  readonly index: number;
}

/** A pretraining batch on the host. */
export interface HostBatch {
  /** Images in the batch, B. */
  readonly size: number;
  /** Image height H in pixels. */
  readonly height: number;
  /** Image width W in pixels. */
  readonly width: number;
  /** `[B, H, W, 3]`, ImageNet mean/std normalised. */
  readonly studentImages: Float32Array;
  /** `[B, H, W, 3]`, CLIP mean/std normalised: the same crop, flip and jitter as the student view. */
  readonly teacherImages: Float32Array;
  /** `[B, L]`, 1 = masked, L = (H / patch) * (W / patch); exactly numMasked ones per row. */
  readonly mask: Uint8Array;
  /** `[B]`, -1 where the source has no label. */
  readonly labels: Int32Array;
  /** Where the stream stands after this batch: resume from here to continue with the next batch. */
  readonly position: DataPosition;
}

/** A pretraining batch with its images on the tfjs backend. */
export interface Batch {
  /** `[B, H, W, 3]`, ImageNet mean/std normalised. */
  readonly studentImages: Tensor4D;
  /** `[B, H, W, 3]`, CLIP mean/std normalised (same crop, flip and jitter). */
  readonly teacherImages: Tensor4D;
  /** `[B, L]` on the host, 1 = masked. */
  readonly mask: Uint8Array;
  /** `[B]`, -1 where the source has no label. */
  readonly labels: Int32Array;
  /** Where the stream stands after this batch. */
  readonly position: DataPosition;
}

/**
 * Uploads a host batch's images (`tf.tensor4d`, `[B, H, W, 3]`). The caller owns the tensors and
 * disposes them.
 */
export const toBatch = (h: HostBatch): Batch => ({
  studentImages: tf.tensor4d(h.studentImages, [h.size, h.height, h.width, 3]),
  teacherImages: tf.tensor4d(h.teacherImages, [h.size, h.height, h.width, 3]),
  mask: h.mask,
  labels: h.labels,
  position: h.position,
});

/** An evaluation batch on the host: evaluation-transformed images and their labels. */
export interface HostEvalBatch {
  readonly size: number;
  readonly height: number;
  readonly width: number;
  /** `[B, H, W, 3]`, resize + centre crop, ImageNet mean/std normalised. */
  readonly images: Float32Array;
  /** `[B]`, -1 where the source has no label. */
  readonly labels: Int32Array;
}

/** Uploads an evaluation batch's images; the caller disposes the tensor. */
export const toEvalBatch = (
  h: HostEvalBatch,
): { readonly images: Tensor4D; readonly labels: Int32Array } => ({
  images: tf.tensor4d(h.images, [h.size, h.height, h.width, 3]),
  labels: h.labels,
});
