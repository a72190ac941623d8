/**
 * A batched matrix product in WebAssembly SIMD, for the wasm backend's batched `BatchMatMul` (attention's
 * `q k^T` and `p v` and their gradients), which tfjs-backend-wasm 4.22 runs on a scalar loop.
 *
 * Why: on the 2-core CPU machine (Deno 2.9.6, 2026-11-26) tfjs-wasm's batched product ran at ~2 GFLOP/s
 * (`[8, 12, 197, 64] x [8, 12, 197, 64]^T`: 223 ms), while its rank-2 products reach ~27 GFLOP/s through
 * XNNPACK; the attention products were 8.3 s of the CPU target's 22 s step. Splitting them into rank-2
 * products does not pay: XNNPACK packs a new operator for every new right-hand operand.
 *
 * How: the module below is written as bytes by {@link bmmModuleBytes} (no toolchain needed). Its one
 * function computes `C[g] = A[g] B[g]` for row-major `A: [G, M4, K]`, `B: [G, K, N8]`, `C: [G, M4, N8]`
 * with M4 a multiple of 4 and N8 of 8: a 4 x 8 register block, 8 `f32x4` accumulators, one splat of an A
 * element per row and two vector loads of a B row per k. The caller copies (and transposes, and pads with
 * zeros) the operands into the module's own memory and copies the valid part of C back; the products are
 * the same sums in the same k order as a plain loop, so results match tfjs's to float32 rounding.
 *
 * @module
 */

// ---------------------------------------------------------------------------------------------------
// A tiny WebAssembly encoder: just what the one function needs.

const uleb = (n: number): number[] => {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
};

const sleb = (n: number): number[] => {
  const out: number[] = [];
  while (true) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
};

const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const name = (s: string): number[] => [...uleb(s.length), ...new TextEncoder().encode(s)];

const I32 = 0x7f, V128 = 0x7b;
const op = {
  get: (i: number) => [0x20, ...uleb(i)],
  set: (i: number) => [0x21, ...uleb(i)],
  i32: (v: number) => [0x41, ...sleb(v)],
  add: [0x6a],
  mul: [0x6c],
  ltU: [0x49],
  block: [0x02, 0x40],
  loop: [0x03, 0x40],
  brIf: (depth: number) => [0x0d, ...uleb(depth)],
  br: (depth: number) => [0x0c, ...uleb(depth)],
  end: [0x0b],
  f32Load: (offset: number) => [0x2a, 2, ...uleb(offset)],
  v128Load: (offset: number) => [0xfd, ...uleb(0x00), 4, ...uleb(offset)],
  v128Store: (offset: number) => [0xfd, ...uleb(0x0b), 4, ...uleb(offset)],
  v128Zero: [0xfd, ...uleb(0x0c), ...new Array(16).fill(0)],
  splat: [0xfd, ...uleb(0x13)],
  fadd: [0xfd, ...uleb(0xe4)],
  fmul: [0xfd, ...uleb(0xe6)],
};

// Locals: params 0..6 = a, b, c, G, M4, K, N8 (a, b, c byte offsets); then i32 scratch, then 8 accumulators
// and 2 B vectors and one splat.
const [A, B, C, G, M4, K, N8] = [0, 1, 2, 3, 4, 5, 6];
const [g, i, j, k, pa, pb, rowBytes, bRowBytes, pc] = [7, 8, 9, 10, 11, 12, 13, 14, 15];
const ACC = 16, B0 = 24, B1 = 25, AS = 26;

/** `for (v = 0; v < limit; v += step) body` as a block/loop pair. */
const forLoop = (v: number, limit: number[], step: number, body: number[]): number[] => [
  ...op.i32(0),
  ...op.set(v),
  ...op.block,
  ...op.loop,
  ...op.get(v),
  ...limit,
  ...op.ltU,
  ...[0x45], // i32.eqz: leave when !(v < limit)
  ...op.brIf(1),
  ...body,
  ...op.get(v),
  ...op.i32(step),
  ...op.add,
  ...op.set(v),
  ...op.br(0),
  ...op.end,
  ...op.end,
];

const kBody = (): number[] => {
  const out: number[] = [
    ...op.get(pb),
    ...op.v128Load(0),
    ...op.set(B0),
    ...op.get(pb),
    ...op.v128Load(16),
    ...op.set(B1),
  ];
  for (let r = 0; r < 4; r++) {
    // splat(A[i + r, k]): pa points at A[i, k]; row r is r * K floats further.
    out.push(...op.get(pa));
    if (r > 0) out.push(...op.get(rowBytes), ...op.i32(r), ...op.mul, ...op.add);
    out.push(...op.f32Load(0), ...op.splat, ...op.set(AS));
    for (const [h, bv] of [[0, B0], [1, B1]]) {
      const acc = ACC + 2 * r + h;
      out.push(...op.get(acc), ...op.get(AS), ...op.get(bv), ...op.fmul, ...op.fadd, ...op.set(acc));
    }
  }
  out.push(
    ...op.get(pa),
    ...op.i32(4),
    ...op.add,
    ...op.set(pa),
    ...op.get(pb),
    ...op.get(bRowBytes),
    ...op.add,
    ...op.set(pb),
  );
  return out;
};

const jBody = (): number[] => {
  const out: number[] = [];
  for (let a = 0; a < 8; a++) out.push(...op.v128Zero, ...op.set(ACC + a));
  // pa = A + ((g * M4 + i) * K) * 4
  out.push(
    ...op.get(A),
    ...op.get(g),
    ...op.get(M4),
    ...op.mul,
    ...op.get(i),
    ...op.add,
    ...op.get(rowBytes),
  );
  out.push(...op.mul, ...op.add, ...op.set(pa));
  // pb = B + g * K * N8 * 4 + j * 4
  out.push(...op.get(B), ...op.get(g), ...op.get(K), ...op.mul, ...op.get(bRowBytes), ...op.mul, ...op.add);
  out.push(...op.get(j), ...op.i32(4), ...op.mul, ...op.add, ...op.set(pb));
  out.push(...forLoop(k, op.get(K), 1, kBody()));
  // pc = C + ((g * M4 + i) * N8 + j) * 4; rows r at pc + r * N8 * 4
  out.push(
    ...op.get(C),
    ...op.get(g),
    ...op.get(M4),
    ...op.mul,
    ...op.get(i),
    ...op.add,
    ...op.get(bRowBytes),
  );
  out.push(...op.mul, ...op.add, ...op.get(j), ...op.i32(4), ...op.mul, ...op.add, ...op.set(pc));
  for (let r = 0; r < 4; r++) {
    for (let h = 0; h < 2; h++) {
      out.push(...op.get(pc));
      if (r > 0) out.push(...op.get(bRowBytes), ...op.i32(r), ...op.mul, ...op.add);
      out.push(...op.get(ACC + 2 * r + h), ...op.v128Store(16 * h));
    }
  }
  return out;
};

/** The module's bytes: memory "memory" (exported, growable) and `bmm(a, b, c, G, M4, K, N8)`. */
export const bmmModuleBytes = (): Uint8Array => {
  const body: number[] = [
    // rowBytes = K * 4, bRowBytes = N8 * 4
    ...op.get(K),
    ...op.i32(4),
    ...op.mul,
    ...op.set(rowBytes),
    ...op.get(N8),
    ...op.i32(4),
    ...op.mul,
    ...op.set(bRowBytes),
    ...forLoop(g, op.get(G), 1, forLoop(i, op.get(M4), 4, forLoop(j, op.get(N8), 8, jBody()))),
    ...op.end,
  ];
  const locals = vec([[9, I32], [11, V128]].map(([n, t]) => [...uleb(n), t]));
  const code = [...locals, ...body];
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vec([[0x60, ...vec(new Array(7).fill([I32])), 0]])), // (i32 x 7) -> ()
    ...section(3, vec([uleb(0)])),
    ...section(5, vec([[0x00, ...uleb(1)]])), // memory: min 1 page, no max
    ...section(7, vec([[...name("memory"), 0x02, 0], [...name("bmm"), 0x00, 0]])),
    ...section(10, vec([[...uleb(code.length), ...code]])),
  ]);
};

// ---------------------------------------------------------------------------------------------------
// Running it.

/** One operand as the kernel sees it: `G` matrices of `rows x cols`, stored transposed or not. */
export interface Operand {
  readonly data: Float32Array;
  /** True when each matrix is stored `[cols, rows]` (tfjs's transposeA / transposeB). */
  readonly transposed: boolean;
}

interface Instance {
  readonly memory: WebAssembly.Memory;
  readonly bmm: (a: number, b: number, c: number, g: number, m4: number, k: number, n8: number) => void;
}

let instance: Instance | undefined;

const getInstance = (): Instance => {
  if (instance === undefined) {
    const module = new WebAssembly.Module(bmmModuleBytes() as BufferSource);
    const exports = new WebAssembly.Instance(module).exports as unknown as Instance;
    instance = { memory: exports.memory, bmm: exports.bmm };
  }
  return instance;
};

/** True where this runtime runs WebAssembly SIMD (validated once). */
export const simdAvailable = (): boolean => {
  try {
    getInstance();
    return true;
  } catch {
    return false;
  }
};

const round = (n: number, to: number) => Math.ceil(n / to) * to;

/**
 * `out[g] = a[g] b[g]` for `G` products of `[M, K] x [K, N]` (row-major; `transposed` operands stored
 * `[K, M]` / `[N, K]`). Writes `G * M * N` floats into `out`.
 *
 * @example
 * ```ts
 * import { batchedMatMul } from "./bmm_simd.ts";
 * const out = new Float32Array(4);
 * // [1 2] x [[3], [4]] = [11] and [5 6] x [[7], [8]] = [83], M = 1, K = 2, N = 1, G = 2.
 * batchedMatMul(2, 1, 2, 1, { data: new Float32Array([1, 2, 5, 6]), transposed: false },
 *   { data: new Float32Array([3, 4, 7, 8]), transposed: false }, out);
 * if (out[0] !== 11 || out[1] !== 83) throw new Error(`got ${out}`);
 * ```
 */
export const batchedMatMul = (
  G: number,
  M: number,
  K: number,
  N: number,
  a: Operand,
  b: Operand,
  out: Float32Array,
): void => {
  const { memory, bmm } = getInstance();
  const m4 = round(M, 4), n8 = round(N, 8);
  const aFloats = G * m4 * K, bFloats = G * K * n8, cFloats = G * m4 * n8;
  const bytes = 4 * (aFloats + bFloats + cFloats);
  if (memory.buffer.byteLength < bytes) memory.grow(Math.ceil((bytes - memory.buffer.byteLength) / 65536));
  const heap = new Float32Array(memory.buffer);
  const aOff = 0, bOff = aFloats, cOff = aFloats + bFloats;
  // A as [G, m4, K]: rows beyond M stay zero.
  heap.fill(0, aOff, bOff);
  for (let gg = 0; gg < G; gg++) {
    const src = a.data, base = gg * M * K, dst = aOff + gg * m4 * K;
    if (!a.transposed) heap.set(src.subarray(base, base + M * K), dst);
    else {
      for (let kk = 0; kk < K; kk++) {
        for (let r = 0; r < M; r++) heap[dst + r * K + kk] = src[base + kk * M + r];
      }
    }
  }
  // B as [G, K, n8]: columns beyond N zero.
  if (n8 !== N || b.transposed) heap.fill(0, bOff, cOff);
  for (let gg = 0; gg < G; gg++) {
    const src = b.data, base = gg * K * N, dst = bOff + gg * K * n8;
    if (!b.transposed) {
      if (n8 === N) heap.set(src.subarray(base, base + K * N), dst);
      else {for (let kk = 0; kk < K; kk++) {
          heap.set(src.subarray(base + kk * N, base + kk * N + N), dst + kk * n8);
        }}
    } else {
      for (let c = 0; c < N; c++) {
        for (let kk = 0; kk < K; kk++) heap[dst + kk * n8 + c] = src[base + c * K + kk];
      }
    }
  }
  bmm(4 * aOff, 4 * bOff, 4 * cOff, G, m4, K, n8);
  for (let gg = 0; gg < G; gg++) {
    for (let r = 0; r < M; r++) {
      const from = cOff + (gg * m4 + r) * n8;
      out.set(heap.subarray(from, from + N), (gg * M + r) * N);
    }
  }
};
