/**
 * Turns a boolean patch mask into gather indices. Polarity as MAE/BEiT: 1 = masked (removed from the
 * encoder's input), 0 = visible. Every row must mask the same number of patches (the official generator
 * guarantees exactly N), so visible and masked tokens form dense `[B, Nv]` and `[B, Nm]` blocks.
 *
 * @module
 */
import { tf } from "../deps.ts";

/** Flat gather indices into a `[B * L, ...]` view, in patch order within each image. */
export interface MaskIndex {
  /** B: images in the batch. */
  readonly batch: number;
  /** L: patches per image. */
  readonly numPatches: number;
  /** Nv: visible patches per image (the same in every image). */
  readonly numVisible: number;
  /** Nm = L - Nv: masked patches per image. */
  readonly numMasked: number;
  /** `[B * Nv]`: `b * L + patch` for each visible patch. */
  readonly visible: Int32Array;
  /** `[B * Nm]`: `b * L + patch` for each masked patch. */
  readonly masked: Int32Array;
  /**
   * `[B * (1 + L)]` into a `[B * (1 + L), ...]` view whose token 0 is cls: the order
   * `[cls, visible (patch order), masked (patch order)]` used for predictions and targets.
   */
  readonly clsVisibleMasked: Int32Array;
}

/** `mask: [B * L]`, 1 = masked. Throws naming the row whose count differs. */
export const maskIndex = (mask: Uint8Array, batch: number, numPatches: number): MaskIndex => {
  if (mask.length !== batch * numPatches) {
    throw new Error(`mask has ${mask.length} entries, expected batch ${batch} x ${numPatches} patches`);
  }
  let numMasked = -1;
  for (let b = 0; b < batch; b++) {
    let n = 0;
    for (let i = 0; i < numPatches; i++) n += mask[b * numPatches + i] ? 1 : 0;
    if (numMasked < 0) numMasked = n;
    else if (n !== numMasked) {
      throw new Error(
        `mask row ${b} masks ${n} patches but row 0 masks ${numMasked}: every row must mask the same count`,
      );
    }
  }
  const numVisible = numPatches - numMasked;
  const visible = new Int32Array(batch * numVisible), masked = new Int32Array(batch * numMasked);
  const order = new Int32Array(batch * (1 + numPatches));
  let v = 0, m = 0;
  for (let b = 0; b < batch; b++) {
    const base = b * (1 + numPatches);
    order[base] = base;
    let ov = base + 1, om = base + 1 + numVisible;
    for (let i = 0; i < numPatches; i++) {
      if (mask[b * numPatches + i]) {
        masked[m++] = b * numPatches + i;
        order[om++] = base + 1 + i;
      } else {
        visible[v++] = b * numPatches + i;
        order[ov++] = base + 1 + i;
      }
    }
  }
  return { batch, numPatches, numVisible, numMasked, visible, masked, clsVisibleMasked: order };
};

/**
 * Row gather `x: [R, D]` -> `[N, D]` for indices that are all distinct (a selection, as every mask index
 * is). Its gradient is again a gather, through the inverse selection (rows never selected read a zero
 * row), instead of tfjs's `UnsortedSegmentSum`: wasm has no such kernel and the cpu one took 5.8 s of a
 * 6 s micro-preset step (tf.profile, 2-core dev machine).
 */
export const gatherDistinctRows = (x: tf.Tensor2D, idx: Int32Array): tf.Tensor2D => {
  const [rows, d] = x.shape;
  const inverse = new Int32Array(rows).fill(idx.length);
  for (let i = 0; i < idx.length; i++) {
    if (inverse[idx[i]] !== idx.length) throw new Error(`gatherDistinctRows: index ${idx[i]} appears twice`);
    inverse[idx[i]] = i;
  }
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const xs = args[0] as tf.Tensor;
    const value = tf.tidy(() => tf.gather(xs, tf.tensor1d(idx, "int32")));
    const gradFunc = (dy: tf.Tensor) =>
      tf.tidy(() => tf.gather(tf.concat([dy, tf.zeros([1, d])], 0), tf.tensor1d(inverse, "int32")));
    return { value, gradFunc };
  });
  return f(x) as tf.Tensor2D;
};

/** Gathers tokens of `x: [B, L, D]` by flat indices `[B * N]` (distinct) -> `[B, N, D]`. */
export const gatherTokens = (x: tf.Tensor3D, flatIdx: Int32Array, batch: number): tf.Tensor3D => {
  const [b, l, d] = x.shape;
  const rows = gatherDistinctRows(tf.reshape(x, [b * l, d]) as tf.Tensor2D, flatIdx);
  return tf.reshape(rows, [batch, flatIdx.length / batch, d]) as tf.Tensor3D;
};
