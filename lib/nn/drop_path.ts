/**
 * Stochastic depth (drop path, timm `DropPath`): each sample's residual branch is zeroed with probability
 * `rate` and scaled by `1 / (1 - rate)` otherwise. Needs a key whenever it is active: a layer that needs
 * randomness refuses to run without one (docs/design.md, principle 2).
 *
 * @module
 */
import { tf } from "../deps.ts";
import { type Key, uniform } from "../core/random.ts";

/**
 * Which rows of a larger batch `x` holds: rows `offset .. offset + B` of `total` (data-parallel training,
 * where each process holds one slice of the global batch and must draw what one process would draw for
 * those rows).
 */
export interface BatchRows {
  /** The first row of the global batch this batch holds. */
  readonly offset: number;
  /** Rows of the global batch. */
  readonly total: number;
}

/**
 * The per-row factors of {@link dropPath} for a batch of `b` rows: 0 (dropped) or `1 / (1 - rate)`; undefined
 * when it is the identity (`rate == 0` or not training).
 */
export const dropPathScale = (
  b: number,
  rate: number,
  training: boolean,
  k?: Key,
  rows?: BatchRows,
): Float32Array | undefined => {
  if (!training || rate === 0) return undefined;
  if (!k) throw new Error("dropPath: a key is required when training with a drop-path rate > 0");
  const keep = 1 - rate;
  // One draw per row of the whole batch; this slice's rows read theirs.
  const u = rows ? uniform(k, rows.total).subarray(rows.offset, rows.offset + b) : uniform(k, b);
  const scale = new Float32Array(b);
  for (let i = 0; i < b; i++) scale[i] = Math.floor(keep + u[i]) / keep;
  return scale;
};

/** `x: [B, ...]`. Identity when `rate == 0` or not training. */
export const dropPath = (
  x: tf.Tensor,
  rate: number,
  training: boolean,
  k?: Key,
  rows?: BatchRows,
): tf.Tensor => {
  const b = x.shape[0];
  const scale = dropPathScale(b, rate, training, k, rows);
  return scale === undefined ? x : tf.mul(x, tf.tensor(scale, [b, ...x.shape.slice(1).map(() => 1)]));
};

/** Linearly increasing rates `0 .. rate` over `depth` blocks (official `torch.linspace(0, rate, depth)`). */
export const dropPathRates = (rate: number, depth: number): number[] =>
  Array.from({ length: depth }, (_, i) => (depth === 1 ? 0 : (rate * i) / (depth - 1)));
