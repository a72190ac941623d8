/**
 * The gradient of tfjs's `Tile` (which `tf.broadcastTo` runs) as one reduction: `dy` reshaped to
 * `[r0, x0, r1, x1, ...]` (reps and input dims interleaved; axes of size 1 dropped) and summed over the rep
 * axes. tfjs-core 4.22's own gradient slices `dy` once per tile and adds the slices one by one: for the
 * CAE v2 mask token (`broadcastTo([1, 1, D] -> [B, masked, D])`) that is B x masked slices and adds, 7680
 * of each per ViT-T step at batch 256 and 25088 per ViT-B step, ~50 us of host dispatch apiece on the H200
 * (measured: 13% of the GPU time of a ViT-T step, 2026-11-26). Same sums, in a different order.
 *
 * @module
 */
import { tf } from "../../deps.ts";

/** The replacement gradient config. */
export const tileGradConfig: tf.GradConfig = {
  kernelName: "Tile",
  inputsToSave: ["x"],
  gradFunc: (dy, saved, attrs) => {
    const [x] = saved;
    const reps = (attrs as unknown as { reps: number[] }).reps;
    const g = dy as tf.Tensor;
    return {
      x: () => {
        const shape: number[] = [], axes: number[] = [];
        x.shape.forEach((d, i) => {
          if (reps[i] > 1) {
            axes.push(shape.length);
            shape.push(reps[i]);
          }
          if (d > 1) shape.push(d);
        });
        if (axes.length === 0) return tf.reshape(g, x.shape);
        return tf.reshape(tf.sum(tf.reshape(g, shape), axes), x.shape);
      },
    };
  },
};

let stock: tf.GradConfig | undefined;

/** Registers the reduction gradient of Tile (idempotent). */
export const registerTileGrad = (): void => {
  if (stock !== undefined) return;
  stock = tf.getGradient("Tile");
  tf.registerGradient(tileGradConfig);
};

/** Puts tfjs-core's own Tile gradient back (idempotent). */
export const restoreTileGrad = (): void => {
  if (stock === undefined) return;
  tf.registerGradient(stock);
  stock = undefined;
};
