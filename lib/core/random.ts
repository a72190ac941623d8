/**
 * Explicit, JAX-style pseudo-random keys (docs/design.md, principle 2). A key is two uint32 words; `split` and
 * `foldIn` derive new keys with the Threefry-2x32 block cipher (20 rounds, Salmon et al. 2011, the
 * function JAX uses), so derivation is stateless and reproducible. Nothing reads a global RNG: the key for
 * training step t is `foldIn(runKey, t)`.
 *
 * @module
 */

/** A PRNG key: two uint32 words. */
export type Key = readonly [number, number];

const ROT = [13, 15, 26, 6, 17, 29, 16, 24];
const rotl = (x: number, r: number) => ((x << r) | (x >>> (32 - r))) >>> 0;

/** Threefry-2x32, 20 rounds: encrypts the counter pair (x0, x1) under key (k0, k1). */
export const threefry2x32 = (key: Key, x0: number, x1: number): [number, number] => {
  const k0 = key[0] >>> 0, k1 = key[1] >>> 0;
  const k2 = (k0 ^ k1 ^ 0x1bd11bda) >>> 0;
  const ks = [k0, k1, k2];
  let a = (x0 + k0) >>> 0, b = (x1 + k1) >>> 0;
  for (let i = 0; i < 5; i++) {
    const rs = i % 2 === 0 ? ROT.slice(0, 4) : ROT.slice(4);
    for (const r of rs) {
      a = (a + b) >>> 0;
      b = rotl(b, r) ^ a;
    }
    a = (a + ks[(i + 1) % 3]) >>> 0;
    b = (b + ks[(i + 2) % 3] + i + 1) >>> 0;
  }
  return [a, b];
};

/**
 * A key from an integer seed (any safe integer; negative seeds are allowed).
 *
 * @example
 * ```ts
 * import { key, split } from "./random.ts";
 * const [a, b] = split(key(0));
 * if (a[0] === b[0] && a[1] === b[1]) throw new Error("split keys must differ");
 * ```
 */
export const key = (seed: number): Key => {
  if (!Number.isSafeInteger(seed)) throw new Error(`random.key: seed must be a safe integer, got ${seed}`);
  const hi = Math.floor(seed / 2 ** 32) >>> 0;
  return [hi, seed >>> 0];
};

/** Splits a key into `n` independent keys (default 2). */
export const split = (k: Key, n = 2): Key[] =>
  Array.from({ length: n }, (_, i) => threefry2x32(k, 0, i) as Key);

/** Folds an integer (a step number, a worker index) into a key. */
export const foldIn = (k: Key, data: number): Key => {
  const d = key(data);
  return threefry2x32(k, d[0] ^ 0x9e3779b9, d[1]) as Key;
};

/** `n` uniform uint32 words from a key. */
export const bits = (k: Key, n: number): Uint32Array => {
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i += 2) {
    const [a, b] = threefry2x32(k, 0x5eed, i >>> 1);
    out[i] = a;
    if (i + 1 < n) out[i + 1] = b;
  }
  return out;
};

/** `n` uniform floats in [0, 1) with 32 random bits each. */
export const uniform = (k: Key, n: number): Float64Array => {
  const b = bits(k, n);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = b[i] / 2 ** 32;
  return out;
};

/** One uniform float in [lo, hi). */
export const uniformScalar = (k: Key, lo = 0, hi = 1): number => lo + (hi - lo) * uniform(k, 1)[0];

/** A uniform integer in [lo, hi) (hi exclusive), as Python's randint(lo, hi - 1). */
export const randint = (k: Key, lo: number, hi: number): number =>
  lo + Math.floor(uniform(k, 1)[0] * (hi - lo));

/** A random permutation of 0..n-1 (Fisher-Yates driven by the key). */
export const permutation = (k: Key, n: number): Int32Array => {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  const u = uniform(k, n);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(u[i] * (i + 1));
    const tmp = p[i];
    p[i] = p[j];
    p[j] = tmp;
  }
  return p;
};

/**
 * A stateful sampler over one key, for code (augmentation, masking) that draws an unknown number of values.
 * Still deterministic: the same key yields the same sequence. Local to the caller, never global.
 */
export const sampler = (
  k: Key,
): {
  next: () => number;
  uniform: (lo: number, hi: number) => number;
  int: (lo: number, hiIncl: number) => number;
} => {
  let counter = 0;
  let buf: [number, number] = [0, 0];
  const next = () => {
    if (counter % 2 === 0) buf = threefry2x32(k, 0xa11ce, counter >>> 1);
    const v = buf[counter % 2];
    counter++;
    return v / 2 ** 32;
  };
  return {
    next,
    uniform: (lo, hi) => lo + (hi - lo) * next(),
    int: (lo, hiIncl) => lo + Math.floor(next() * (hiIncl - lo + 1)),
  };
};

/** A 31-bit integer seed for the tfjs random ops (`tf.randomUniform(..., seed)`). */
export const seedOf = (k: Key): number => threefry2x32(k, 0x7f, 0)[0] >>> 1;
