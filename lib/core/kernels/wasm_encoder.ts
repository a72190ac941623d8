/**
 * A tiny WebAssembly encoder: just what the hand-written SIMD matrix product (lib/core/kernels/gemm_simd.ts)
 * needs, so it ships as TypeScript that writes its own module bytes, with no toolchain.
 * Opcodes are from the WebAssembly core spec (https://webassembly.github.io/spec/core/binary/) and the
 * relaxed-SIMD proposal (https://github.com/WebAssembly/relaxed-simd, `f32x4.relaxed_madd` = 0xfd 0x105).
 *
 * @module
 */

/** Unsigned LEB128. */
export const uleb = (n: number): number[] => {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
};

/** Signed LEB128. */
export const sleb = (n: number): number[] => {
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

/** A section: id, byte length, body. */
export const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
/** A vector: count, then the items. */
export const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
/** A name: length, UTF-8 bytes. */
export const name = (s: string): number[] => [...uleb(s.length), ...new TextEncoder().encode(s)];

/** Value types. */
export const I32 = 0x7f, V128 = 0x7b;

const simd = (code: number) => [0xfd, ...uleb(code)];

/** The instructions the kernels use (memarg alignment given as log2 bytes). */
export const op = {
  get: (i: number) => [0x20, ...uleb(i)],
  set: (i: number) => [0x21, ...uleb(i)],
  tee: (i: number) => [0x22, ...uleb(i)],
  i32: (v: number) => [0x41, ...sleb(v)],
  add: [0x6a],
  sub: [0x6b],
  mul: [0x6c],
  ltU: [0x49],
  eqz: [0x45],
  select: [0x1b],
  block: [0x02, 0x40],
  loop: [0x03, 0x40],
  brIf: (depth: number) => [0x0d, ...uleb(depth)],
  br: (depth: number) => [0x0c, ...uleb(depth)],
  end: [0x0b],
  v128Load: (offset: number) => [...simd(0x00), 4, ...uleb(offset)],
  v128Store: (offset: number) => [...simd(0x0b), 4, ...uleb(offset)],
  /** `v128.load32_splat`: one f32 from memory into all four lanes. */
  load32Splat: (offset: number) => [...simd(0x09), 2, ...uleb(offset)],
  /** `i8x16.shuffle` of the two operands by 16 lane indices. */
  shuffle: (lanes: number[]) => [...simd(0x0d), ...lanes],
  fadd: simd(0xe4),
  fmul: simd(0xe6),
  /** `f32x4.relaxed_madd(a, b, c)` = a * b + c, fused where the CPU has FMA. */
  madd: simd(0x105),
};

/** `for (v = from; v < limit; v += step) body` as a block/loop pair (`limit`, `step`: instructions or a constant). */
export const forLoop = (
  v: number,
  limit: number[],
  step: number | number[],
  body: number[],
  from: number[] = op.i32(0),
): number[] => [
  ...from,
  ...op.set(v),
  ...op.block,
  ...op.loop,
  ...op.get(v),
  ...limit,
  ...op.ltU,
  ...op.eqz, // leave when !(v < limit)
  ...op.brIf(1),
  ...body,
  ...op.get(v),
  ...(typeof step === "number" ? op.i32(step) : step),
  ...op.add,
  ...op.set(v),
  ...op.br(0),
  ...op.end,
  ...op.end,
];

/** One function's code entry: locals as `[count, type]` runs, then the body (ending in `end`). */
export const funcCode = (locals: [number, number][], body: number[]): number[] => {
  const code = [...vec(locals.map(([n, t]) => [...uleb(n), t])), ...body];
  return [...uleb(code.length), ...code];
};

/** How a module gets its memory. */
export type MemorySpec =
  | { readonly kind: "export"; readonly minPages: number }
  | { readonly kind: "import-shared"; readonly minPages: number; readonly maxPages: number };

/**
 * A module of one function `fn` of `params` i32 parameters and no result, with its memory exported as
 * "memory" or imported (shared) as `env.memory`.
 */
export const moduleBytes = (
  fn: string,
  params: number,
  locals: [number, number][],
  body: number[],
  memory: MemorySpec,
): Uint8Array => {
  const type = section(1, vec([[0x60, ...vec(new Array(params).fill([I32])), 0]]));
  const imports = memory.kind === "import-shared"
    ? section(
      2,
      vec([[
        ...name("env"),
        ...name("memory"),
        0x02,
        0x03,
        ...uleb(memory.minPages),
        ...uleb(memory.maxPages),
      ]]),
    )
    : [];
  const funcs = section(3, vec([uleb(0)]));
  const mem = memory.kind === "export" ? section(5, vec([[0x00, ...uleb(memory.minPages)]])) : [];
  const exports = section(
    7,
    vec([
      ...(memory.kind === "export" ? [[...name("memory"), 0x02, 0]] : []),
      [...name(fn), 0x00, 0],
    ]),
  );
  const code = section(10, vec([funcCode(locals, body)]));
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...type,
    ...imports,
    ...funcs,
    ...mem,
    ...exports,
    ...code,
  ]);
};
