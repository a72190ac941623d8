/**
 * A packed, cache-blocked matrix product in WebAssembly SIMD, for the wasm backend's `BatchMatMul` (the
 * linear layers of the CLIP teacher and the student, and attention's batched products), run on every core
 * by lib/core/kernels/gemm_pool.ts.
 *
 * Why: tfjs-backend-wasm 4.22 runs rank-2 products on XNNPACK on one thread (its threaded build cannot
 * start under Deno) and batched ones on a scalar loop; those products were ~80% of the CPU target's step
 * (BENCHMARKS.md, "The CPU target"). One thread of this kernel runs about as fast as XNNPACK; the gain is
 * the second core.
 *
 * How, in the manner of GotoBLAS / BLIS (Goto and van de Geijn, "Anatomy of high-performance matrix
 * multiplication", ACM TOMS 34(3), 2008): A is packed into 4-row micro-panels `[M4 / 4, K, 4]`, B into
 * 8-column micro-panels `[N8 / 8, K, 8]`, and C is kept in 4 x 8 tiles, so the micro-kernel reads and
 * writes only contiguous memory (no row stride: the 12 KiB rows of `[1576, 3072]` map to the same L1 sets).
 * K is cut into blocks of `kc` (a kc x 8 B micro-panel stays in L1), rows into blocks of `mg` micro-panels
 * (the A block stays in L2), and C accumulates across K blocks. The register tile is 4 x 8: 8 `f32x4`
 * accumulators, 2 B vectors, and A's 4 rows loaded as one vector and broadcast by lane shuffles, k unrolled
 * 4 times. Measured on the dev machine (Deno 2.9.6, 2026-11-26, in cache, `[256, 256] x [256, 264]`): one
 * `v128.load32_splat` per A element 17.4 GFLOP/s, shuffles 28; unrolled 1 -> 4 times: 13.7 -> 17.4; 4 x 8
 * against 2 x 8, 4 x 4, 3 x 8, 6 x 8 and 8 x 4 tiles: 13.7 against 6.9 to 11.9 (the larger ones spill
 * registers: V8 has 16 xmm registers for wasm SIMD).
 *
 * `f32x4.relaxed_madd` (relaxed SIMD, on by default in V8) fuses each multiply-add where the CPU has FMA,
 * one rounding instead of two, so results differ from tfjs's by float32 rounding; where relaxed SIMD is
 * missing the module multiplies and adds.
 *
 * @module
 */
import { forLoop, I32, type MemorySpec, moduleBytes, op, V128 } from "./wasm_encoder.ts";

// Parameters: byte offsets of packed A, packed B and C; K, N8 (C's row length), the row-group range
// [g0, g1) (groups of 4 rows), the K block and the row-block size in groups.
const [AP, BP, CP, K, N8, G0, G1, KC, MG] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
// i32 locals.
const [k0, kn, gi0, gi1, p, gi, pa, pb, pc, kk, np, aGrp, bPan, t] = [
  9,
  10,
  11,
  12,
  13,
  14,
  15,
  16,
  17,
  18,
  19,
  20,
  21,
  22,
];
// v128 locals: R * V accumulators (row r, vector h at ACC + V r + h), V B vectors, one broadcast A element.
const ACC = 23;

/** The register tile: R rows x V vectors of 4 columns. */
export interface Tile {
  readonly rows: number;
  readonly vectors: number;
  /** k steps per loop iteration; K and the K block must be multiples of it. */
  readonly unroll: number;
  /** Broadcast A by loading 4 rows at once and shuffling (rows = 4), not by one load-splat per row. */
  readonly shuffle?: boolean;
}

/** `acc += a * b` for v128 locals, fused or not. */
const fma = (fused: boolean, acc: number, a: number, b: number): number[] =>
  fused
    ? [...op.get(a), ...op.get(b), ...op.get(acc), ...op.madd, ...op.set(acc)]
    : [...op.get(acc), ...op.get(a), ...op.get(b), ...op.fmul, ...op.fadd, ...op.set(acc)];

/** Loads (or stores) the 4 x 8 C tile at `pc` into (from) the accumulators. */
const cTile = ({ rows, vectors }: Tile, store: boolean): number[] => {
  const out: number[] = [...op.get(pc), ...op.set(t)];
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < vectors; h++) {
      const acc = ACC + vectors * r + h;
      if (store) out.push(...op.get(t), ...op.get(acc), ...op.v128Store(16 * h));
      else out.push(...op.get(t), ...op.v128Load(16 * h), ...op.set(acc));
    }
    if (r < rows - 1) out.push(...op.get(t), ...op.i32(16 * vectors), ...op.add, ...op.set(t));
  }
  return out;
};

/** The micro-kernel: C[4 x 8] += A-panel[kn x 4]^T B-panel[kn x 8], pa / pb advancing along k. */
const micro = (fused: boolean, tile: Tile): number[] => {
  const { rows, vectors, unroll } = tile;
  const BV = ACC + rows * vectors, AS = BV + vectors;
  const step: number[] = [];
  const AV = AS + 1;
  for (let u = 0; u < unroll; u++) {
    for (let h = 0; h < vectors; h++) {
      step.push(...op.get(pb), ...op.v128Load(16 * (u * vectors + h)), ...op.set(BV + h));
    }
    if (tile.shuffle) step.push(...op.get(pa), ...op.v128Load(4 * u * rows), ...op.set(AV));
    for (let r = 0; r < rows; r++) {
      if (tile.shuffle) {
        // Lane r of the loaded A vector into all four lanes (a 32x4 splat shuffle: one pshufd).
        const lanes = [0, 1, 2, 3].flatMap(() => [4 * r, 4 * r + 1, 4 * r + 2, 4 * r + 3]);
        step.push(...op.get(AV), ...op.get(AV), ...op.shuffle(lanes), ...op.set(AS));
      } else step.push(...op.get(pa), ...op.load32Splat(4 * (u * rows + r)), ...op.set(AS));
      for (let h = 0; h < vectors; h++) step.push(...fma(fused, ACC + vectors * r + h, AS, BV + h));
    }
  }
  step.push(
    ...op.get(pa),
    ...op.i32(4 * rows * unroll),
    ...op.add,
    ...op.set(pa),
    ...op.get(pb),
    ...op.i32(16 * vectors * unroll),
    ...op.add,
    ...op.set(pb),
  );
  return [
    ...cTile(tile, false),
    ...op.get(kn),
    ...op.set(kk),
    // do { step } while (--kk != 0): kn >= 1 always.
    ...op.loop,
    ...step,
    ...op.get(kk),
    ...op.i32(unroll),
    ...op.sub,
    ...op.tee(kk),
    ...op.brIf(0),
    ...op.end,
    ...cTile(tile, true),
  ];
};

/** `base + index * stride + k0 * perK`: where a micro-panel's K block starts (i32 locals; perK a constant). */
const panelAt = (base: number, index: number, stride: number, perK: number): number[] => [
  ...op.get(base),
  ...op.get(index),
  ...op.get(stride),
  ...op.mul,
  ...op.add,
  ...op.get(k0),
  ...op.i32(perK),
  ...op.mul,
  ...op.add,
];

/** `a < b ? a : b` for i32 instruction sequences (unsigned). */
const minU = (a: number[], b: number[]): number[] => [...a, ...b, ...a, ...b, ...op.ltU, ...op.select];

/**
 * The module's bytes: `gemm(ap, bp, c, K, N8, g0, g1, kc, mg)` over an imported shared memory `env.memory`
 * (`fused`: with `f32x4.relaxed_madd`).
 */
export const gemmModuleBytes = (
  fused: boolean,
  maxPages: number,
  shape: Tile = { rows: 4, vectors: 2, unroll: 4 },
): Uint8Array => {
  const { rows, vectors } = shape;
  const tile = [
    // pa = AP + gi * aGrp + k0 * 4R; pb = BP + p * bPan + k0 * 16V
    ...panelAt(AP, gi, aGrp, 4 * rows),
    ...op.set(pa),
    ...panelAt(BP, p, bPan, 16 * vectors),
    ...op.set(pb),
    // C in tiles: [groups, panels, R, 4V], each tile contiguous (no row stride: see the module doc).
    ...op.get(CP),
    ...op.get(gi),
    ...op.get(np),
    ...op.mul,
    ...op.get(p),
    ...op.add,
    ...op.i32(16 * vectors * rows),
    ...op.mul,
    ...op.add,
    ...op.set(pc),
    ...micro(fused, shape),
  ];
  const rowBlock = [
    // gi1 = min(gi0 + MG, G1)
    ...minU([...op.get(gi0), ...op.get(MG), ...op.add], op.get(G1)),
    ...op.set(gi1),
    ...forLoop(p, op.get(np), 1, forLoop(gi, op.get(gi1), 1, tile, op.get(gi0))),
  ];
  const kBlock = [
    // kn = min(KC, K - k0)
    ...minU(op.get(KC), [...op.get(K), ...op.get(k0), ...op.sub]),
    ...op.set(kn),
    ...forLoop(gi0, op.get(G1), op.get(MG), rowBlock, op.get(G0)),
  ];
  const body = [
    ...op.get(N8),
    ...op.i32(4 * vectors),
    ...[0x6e], // i32.div_u
    ...op.set(np),
    ...op.get(K),
    ...op.i32(4 * rows),
    ...op.mul,
    ...op.set(aGrp),
    ...op.get(K),
    ...op.i32(16 * vectors),
    ...op.mul,
    ...op.set(bPan),
    ...forLoop(k0, op.get(K), op.get(KC), kBlock),
    ...op.end,
  ];
  const memory: MemorySpec = { kind: "import-shared", minPages: 1, maxPages };
  return moduleBytes("gemm", 9, [[14, I32], [rows * vectors + vectors + 2, V128]], body, memory);
};

/** True where this runtime compiles relaxed SIMD (`f32x4.relaxed_madd`). */
export const relaxedSimdAvailable = (): boolean => {
  try {
    return WebAssembly.validate(gemmModuleBytes(true, 1) as BufferSource);
  } catch {
    return false;
  }
};
