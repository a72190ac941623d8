/**
 * Batches: what the loader hands to the training and evaluation code. Host batches are plain typed
 * arrays, built in workers and transferred without copies; {@link toBatch} uploads the images as
 * tensors. Images are NHWC `[B, H, W, 3]` float32, row-major, like every image tensor in this project.
 *
 * @module
 */
import { tf } from "../lib/deps.ts";

/** Where a sample stream stands: `index` samples of epoch `epoch` consumed (skipped files included). */
export interface DataPosition {
  readonly epoch: number;
  readonly index: number;
}

/** A pretraining batch on the host. */
export interface HostBatch {
  readonly size: number;
  readonly height: number;
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
  readonly studentImages: tf.Tensor4D;
  readonly teacherImages: tf.Tensor4D;
  readonly mask: Uint8Array;
  readonly labels: Int32Array;
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
): { readonly images: tf.Tensor4D; readonly labels: Int32Array } => ({
  images: tf.tensor4d(h.images, [h.size, h.height, h.width, 3]),
  labels: h.labels,
});
