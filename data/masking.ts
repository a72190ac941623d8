/**
 * Which patches the student does not see. Polarity as in the official code and MAE: 1 = masked
 * (hidden from the encoder, regressed), 0 = visible. Layout `[H * W]`, row-major over the patch grid,
 * the order of the patch embedding's `flatten(2)`.
 *
 * @module
 */
import type { Key } from "../lib/core/random.ts";
import { permutation, sampler } from "../lib/core/random.ts";
import { roundHalfEven } from "./image.ts";

/** Options of {@link blockMasking}; the defaults are the CAE v2 pretraining flags. */
export interface BlockMaskingOptions {
  /** Patch grid height (224 / 16 = 14). */
  readonly height: number;
  /** Patch grid width. */
  readonly width: number;
  /** Exactly this many patches are masked (`--num_mask_patches`: 30 / 49 / 98 for T / S / B). */
  readonly numMasked: number;
  /** Smallest block area drawn (`--min_mask_patches_per_block`, default 16). */
  readonly minPatches?: number;
  /** Largest block area drawn (`--max_mask_patches_per_block`, default: numMasked). */
  readonly maxPatches?: number;
  /** Smallest block aspect ratio; the largest is its inverse (BEiT's 0.3 .. 1/0.3). */
  readonly minAspect?: number;
}

// A bound on the official generator's retry loop: with a feasible request it ends after a handful of
// rounds; the bound turns an impossible one (a grid too small for any block) into an error, not a hang.
const MAX_ROUNDS = 100_000;

const checkGrid = (fn: string, height: number, width: number, numMasked: number) => {
  if (!Number.isInteger(height) || !Number.isInteger(width) || height < 1 || width < 1) {
    throw new Error(`${fn}: the patch grid must be positive integers, got ${height}x${width}`);
  }
  if (!Number.isInteger(numMasked) || numMasked < 0 || numMasked > height * width) {
    throw new Error(
      `${fn}: numMasked must be an integer in 0..${
        height * width
      } for a ${height}x${width} grid, got ${numMasked}`,
    );
  }
};

/**
 * BEiT block-wise masking exactly as the official generator (github.com/Atten4Vis/CAE,
 * furnace/masking_generator.py `MaskingGenerator`, itself BEiT's): repeatedly draw a rectangle of area
 * uniform in [minPatches, remaining] (capped by maxPatches) and log-uniform aspect ratio, sides
 * `int(round(sqrt(area * aspect)))` and `int(round(sqrt(area / aspect)))`, strictly smaller than the
 * grid, at a uniform position; keep it only if it adds between 1 and `remaining` new patches (10
 * attempts per round), and loop until exactly `numMasked` patches are masked. The count is exact because
 * a block is accepted only when its new patches fit in what remains. Python's global `random` is replaced
 * by a sampler over the key `k`, so a key always gives the same mask.
 *
 * @example
 * ```ts
 * import { blockMasking } from "./masking.ts";
 * import { key } from "../lib/core/random.ts";
 * const m = blockMasking(key(1), { height: 14, width: 14, numMasked: 98 });
 * if (m.reduce((a, b) => a + b, 0) !== 98) throw new Error("exactly 98 masked");
 * ```
 */
export const blockMasking = (k: Key, opts: BlockMaskingOptions): Uint8Array =>
  blockMaskingFrom(sampler(k), opts);

/**
 * {@link blockMasking} drawing from a given sampler: `uniform(a, b)` stands for Python's
 * `random.uniform(a, b)` and `int(a, b)` for `random.randint(a, b)` (both ends included). The tests drive
 * the official generator and this one with the same scripted draws and compare the masks.
 */
export const blockMaskingFrom = (s: ReturnType<typeof sampler>, opts: BlockMaskingOptions): Uint8Array => {
  const { height, width, numMasked } = opts;
  checkGrid("blockMasking", height, width, numMasked);
  const minPatches = opts.minPatches ?? 16;
  const maxPatches = opts.maxPatches ?? numMasked;
  const minAspect = opts.minAspect ?? 0.3;
  const logA0 = Math.log(minAspect), logA1 = Math.log(1 / minAspect);
  const mask = new Uint8Array(height * width);
  if (numMasked === 0) return mask;
  if (height < 2 || width < 2) {
    throw new Error(
      `blockMasking: blocks must be strictly smaller than the grid (official generator), so a ${height}x${width} grid cannot hold any; use randomMasking`,
    );
  }
  // MaskingGenerator._mask: one round of up to 10 attempts; returns the number of newly masked patches.
  const round = (maxMask: number): number => {
    let delta = 0;
    for (let attempt = 0; attempt < 10; attempt++) {
      const targetArea = s.uniform(minPatches, maxMask);
      const aspect = Math.exp(s.uniform(logA0, logA1));
      const h = roundHalfEven(Math.sqrt(targetArea * aspect));
      const w = roundHalfEven(Math.sqrt(targetArea / aspect));
      if (w < width && h < height) {
        const top = s.int(0, height - h);
        const left = s.int(0, width - w);
        let already = 0;
        for (let i = top; i < top + h; i++) {
          for (let j = left; j < left + w; j++) already += mask[i * width + j];
        }
        const fresh = h * w - already;
        if (fresh > 0 && fresh <= maxMask) {
          for (let i = top; i < top + h; i++) {
            for (let j = left; j < left + w; j++) {
              if (mask[i * width + j] === 0) {
                mask[i * width + j] = 1;
                delta++;
              }
            }
          }
        }
        if (delta > 0) break;
      }
    }
    return delta;
  };
  let count = 0;
  for (let r = 0; count !== numMasked; r++) {
    if (r >= MAX_ROUNDS) {
      throw new Error(
        `blockMasking: could not place ${numMasked} patches in blocks of >= ${minPatches} on a ${height}x${width} grid after ${MAX_ROUNDS} rounds; lower numMasked or minPatches`,
      );
    }
    count += round(Math.min(numMasked - count, maxPatches));
  }
  return mask;
};

/**
 * Random masking: exactly `numMasked` patches chosen uniformly (official `RandomMaskingGenerator`, which
 * shuffles `numMasked` ones among zeros with `np.random.shuffle`).
 *
 * @example
 * ```ts
 * import { randomMasking } from "./masking.ts";
 * import { key } from "../lib/core/random.ts";
 * const m = randomMasking(key(1), { height: 4, width: 4, numMasked: 5 });
 * if (m.reduce((a, b) => a + b, 0) !== 5) throw new Error("exactly 5 masked");
 * ```
 */
export const randomMasking = (
  k: Key,
  opts: { readonly height: number; readonly width: number; readonly numMasked: number },
): Uint8Array => {
  const { height, width, numMasked } = opts;
  checkGrid("randomMasking", height, width, numMasked);
  const p = permutation(k, height * width);
  const mask = new Uint8Array(height * width);
  for (let i = 0; i < numMasked; i++) mask[p[i]] = 1;
  return mask;
};
