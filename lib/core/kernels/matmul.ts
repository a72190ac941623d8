/**
 * A tiled matrix product for the tfjs WebGPU backend, registered over tfjs's `BatchMatMul` kernel (so
 * every `tf.matMul`, and every matmul in the gradients tfjs derives from it, runs here), with the stock
 * kernel as the fallback for cases it does not take (non-float32, general batch broadcasting).
 *
 * Why: on the H200, tfjs 4.22's matmul runs 5-6 TFLOP/s on the encoder's linear layers and 0.17-0.27
 * TFLOP/s on attention's batched products with head size 16-64 (lib/bench/ops.ts, phase 1 figures in
 * BENCHMARKS.md, "PyTorch reference figures"); those batched products alone cost more than a second per ViT-T step at batch 256.
 *
 * The kernel: a register-blocked GEMM (the classic CUDA SGEMM layout). A workgroup of 16 x 16 threads
 * computes a `BM x BN` tile of C, each thread a `TM x TN` block held in vec4 registers; the `BK`-deep
 * slices of A and B pass through workgroup memory (A stored k-major so both operands are read as vec4),
 * and the next slice's global loads are issued before the current slice's arithmetic (register
 * prefetch). Thread blocks are interleaved (rows `ty*4 + r*BM/RM`) so vec4 reads of workgroup memory do
 * not conflict. Two tile shapes: 128 x 128 (8 x 8 per thread) for the linear layers, 64 x 64 (4 x 4) for
 * attention's many small products. When a product has few output tiles and a long K (the weight
 * gradients, `x^T dy` with K = batch x tokens) K is split across workgroups and a second pass sums the
 * partial products. Accumulation is float32 throughout; the sum order differs from tfjs's kernel (and
 * PyTorch's), at rounding level.
 *
 * The linear layers' `x W + b` runs as one kernel ({@link matMulBias}, the tfjs kernel `CaeMatMulBias`,
 * registered with the override): the bias is added in the GEMM's store epilogue, or with a split K in the
 * split-sum pass, instead of by a broadcast Add over the whole product.
 *
 * The epilogue takes more of what follows a product in the step: an activation (off the tape), the
 * gradient of an activation (`CaeMatMulActGrad`, the MLP's backward pass), a residual connection with layer
 * scale and drop path ({@link MatMulExtras.residual}), a scale on one operand. Operands and output can be
 * views ({@link MatrixView}: attention's heads in place, lib/core/kernels/heads.ts). Workgroup tiles can be
 * double-buffered ({@link GemmChoice.buffers}), a choice a tile table makes.
 *
 * The subgroup variant ({@link GemmChoice.subgroup}, where the device has `subgroups`): A's slices skip
 * workgroup memory, held in registers spread over the lanes of each row of the thread grid and passed by
 * `subgroupShuffle`. Why it is only a candidate for the tuner, not the default: the threads of a warp share a
 * row of the grid, so the A quads they read from workgroup memory are one address (a broadcast), and a shuffle
 * goes through the same load/shuffle pipe; what it saves is A's workgroup stores and memory. The subgroup
 * feature that pays on NVIDIA, cooperative matrices, Deno's WebGPU refuses.
 *
 * Sizes: each operand and the output must fit one storage binding ({@link BindingSizeError}).
 *
 * @module
 */
import { tf, type WebGPUBackend } from "../../deps.ts";
import { type Program, runProgram, type TensorInfo } from "./program.ts";
import { type Info, type KernelArgs, type KernelConfig, kernelOverride } from "./override.ts";
import { ACTIVATION_WGSL, forwardExpr, gradExpr } from "./gelu.ts";
import { hasSubgroups, SUBGROUP_DECLARATIONS } from "../webgpu_features.ts";

/** A tile configuration. Threads: `(BN / TN) x (BM / TM)`. */
export interface Tile {
  readonly bm: number;
  readonly bn: number;
  readonly bk: number;
  readonly tm: number;
  readonly tn: number;
}

/** 128 x 128 tiles, 8 x 8 per thread: the linear layers. */
export const BIG: Tile = { bm: 128, bn: 128, bk: 16, tm: 8, tn: 8 };
/** 64 x 64 tiles, 4 x 4 per thread: attention's batched products. */
export const SMALL: Tile = { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 };

let gemmTiles: { big: Tile; small: Tile } = { big: BIG, small: SMALL };

/** Throws unless a tile is one the generator supports (multiples of 4, whole vec4 loads per thread). */
export const checkTile = (t: Tile): void => {
  const threads = (t.bn / t.tn) * (t.bm / t.tm);
  const ok = [t.bm, t.bn, t.tm, t.tn].every((v) => Number.isInteger(v) && v > 0 && v % 4 === 0) &&
    Number.isInteger(t.bn / t.tn) && Number.isInteger(t.bm / t.tm) && t.bk > 0 && threads <= 256 &&
    Number.isInteger((t.bm / 4) * t.bk / threads) && Number.isInteger((t.bn / 4) * t.bk / threads);
  if (!ok) throw new Error(`matmul tile ${JSON.stringify(t)}: unsupported (see lib/core/kernels/matmul.ts)`);
};

/** Sets the tiles used for large and small products (benchmark tuning; defaults BIG and SMALL). */
export const setGemmTiles = (t: { big?: Tile; small?: Tile }): void => {
  if (t.big) checkTile(t.big);
  if (t.small) checkTile(t.small);
  gemmTiles = { big: t.big ?? gemmTiles.big, small: t.small ?? gemmTiles.small };
};

/**
 * An activation applied in the epilogue after the bias (`x W + b` then GELU or QuickGELU, one kernel): the
 * WGSL of lib/core/kernels/gelu.ts, so the values are the fused activation kernel's.
 */
export type EpilogueActivation = "none" | "gelu" | "quickGelu";

/** `act(v)` for a vec4 expression `v`. */
const activate = (act: EpilogueActivation, v: string): string => act === "none" ? v : `act_(${v})`;

/** The WGSL helpers of `act`: `act_` over vec4 (and gelu.ts's erf_/sigmoid_). */
const activationSource = (act: EpilogueActivation): string =>
  act === "none"
    ? ""
    : `${ACTIVATION_WGSL}\nfn act_(x: vec4<f32>) -> vec4<f32> { return ${
      forwardExpr(act === "quickGelu")
    }; }\n`;

/** One product as a tile table sees it (lib/core/kernels/tile_table.ts keys its entries by these). */
export interface GemmShape {
  readonly m: number;
  readonly n: number;
  readonly k: number;
  /** Independent products (attention's batch x heads; 1 for the linear layers). */
  readonly batch: number;
  readonly transA: boolean;
  readonly transB: boolean;
  /** Operand precision in the kernel ({@link MatMulPrecision}). */
  readonly precision: MatMulPrecision;
}

/** What a measured table chooses for one product; unset fields keep this module's defaults. */
export interface GemmChoice {
  readonly tile: Tile;
  /** K split across workgroups (1: none); unset: the default rule of {@link planMatMul}. */
  readonly splits?: number;
  /** f16 operands only: accumulate each BK-deep slice in f16 and fold it into f32 ("f16"), or f32 throughout. */
  readonly accumulate?: "f32" | "f16";
  /**
   * Workgroup buffers per operand: 1 (default; registers prefetch the next BK slice while the current one
   * is multiplied, two barriers a slice) or 2 (double buffering: the next slice is stored into the other
   * buffer, one barrier a slice, twice the workgroup memory). Same arithmetic, same values.
   */
  readonly buffers?: 1 | 2;
  /**
   * The loop over a BK slice written out in the shader, one block per k step with its workgroup-memory
   * offsets constant (default: a loop of constant trip count, which the driver may unroll itself). Same
   * arithmetic, same values.
   */
  readonly unroll?: boolean;
  /**
   * The subgroup variant (where the device has `subgroups`): A's BK slice skips workgroup memory; it is
   * loaded into registers spread over row segments of this many lanes and passed between them by
   * `subgroupShuffle` (B still goes through workgroup memory). A power of two dividing the thread grid's
   * width and BK ({@link checkSubgroup}), at most the adapter's `subgroupMinSize`; unset or 0: A through
   * workgroup memory. Same arithmetic, same values. Ignored on a device without subgroups.
   */
  readonly subgroup?: number;
}

/** Chooses a product's tile (a tuned table), or undefined for the defaults. */
export type GemmChooser = (s: GemmShape) => GemmChoice | undefined;

let chooser: GemmChooser | undefined;

/** Installs (or with undefined removes) the chooser {@link planMatMul} asks before its own rule. */
export const setGemmChooser = (f: GemmChooser | undefined): void => {
  chooser = f;
};

/** The chooser installed now (for code that borrows the hook and must put it back). */
export const gemmChooser = (): GemmChooser | undefined => chooser;

/**
 * Operand precision of the tiled kernel: "f32", or "f16" (`--precision f16`): each operand element is
 * rounded to f16 as it is loaded into workgroup memory, the products run on f16 operands and accumulate
 * in f32 (or per slice in f16, {@link GemmChoice.accumulate}); inputs and output stay float32 tensors.
 * Needs the device feature `shader-f16` (lib/core/precision.ts checks it before any work).
 */
export type MatMulPrecision = "f32" | "f16";

let operandPrecision: MatMulPrecision = "f32";

/** Sets the tiled kernel's operand precision (global, like the kernel registry). */
export const setMatMulPrecision = (p: MatMulPrecision): void => {
  operandPrecision = p;
};

/** The tiled kernel's operand precision now. */
export const matMulPrecision = (): MatMulPrecision => operandPrecision;

/** How operands are laid out and loaded. */
export interface GemmLayout {
  readonly transA: boolean;
  readonly transB: boolean;
  /** vec4 loads of A (its contiguous dimension is a multiple of 4). */
  readonly vecA: boolean;
  readonly vecB: boolean;
  /** vec4 stores of C (N a multiple of 4). */
  readonly vecC: boolean;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * Loads of one operand tile into workgroup memory, which holds it k-major as vec4s over the outer extent
 * (`rows`: BM for A, BN for B). `kContig`: the operand is stored with k contiguous (A untransposed, B
 * transposed); then each item is 4 scalar loads (4 rows at one k: consecutive threads take consecutive k,
 * so a warp reads contiguous runs) packed into one vec4 store. Otherwise the outer extent is contiguous:
 * one vec4 load (`vec`) or 4 scalar loads. Every workgroup store is a whole vec4 (no dynamic component
 * index: cheaper code everywhere, and much cheaper to compile on llvmpipe).
 * Emits: the prefetch register declarations, the loads (into registers), and the stores.
 */
const tileLoad = (
  name: "A" | "B",
  shared: "As" | "Bs",
  rows: number,
  bk: number,
  threads: number,
  kContig: boolean,
  vec: boolean,
  half = false,
  scaled = false,
) => {
  const outerDim = name === "A" ? "uniforms.M" : "uniforms.N";
  // The stored matrix's row stride: K or the outer extent for a whole tensor, wider for a view.
  const ld = name === "A" ? "uniforms.lda" : "uniforms.ldb";
  const outer0 = name === "A" ? "m0" : "n0";
  const off = name === "A" ? "aOff" : "bOff";
  const quads = rows / 4;
  const n = quads * bk / threads;
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`tile ${rows}x${bk} does not divide over ${threads} threads`);
  }
  const reg = (i: number) => `p${name}${i}`;
  const decl = range(n).map((i) => `var ${reg(i)}: vec4<f32>;`).join("\n");
  const loads: string[] = [], stores: string[] = [];
  for (let i = 0; i < n; i++) {
    const v = `(i32(localIndex) + ${i * threads})`;
    // kContig: consecutive threads take consecutive k; else consecutive quads along the outer extent.
    const q = kContig ? `(${v} / ${bk})` : `(${v} % ${quads})`;
    const kk = kContig ? `(${v} % ${bk})` : `(${v} / ${quads})`;
    const g = `${outer0} + ${q} * 4`, gk = `k0 + ${kk}`;
    if (!kContig && vec) {
      loads.push(
        `{ let g = ${g}; let gk = ${gk}; ${
          reg(i)
        } = select(vec4<f32>(0.0), ${name}[(${off} + gk * ${ld} + g) / 4], g < ${outerDim} && gk < kEnd); }`,
      );
    } else {
      const at = (c: number) =>
        kContig ? `${off} + (g + ${c}) * ${ld} + gk` : `${off} + gk * ${ld} + g + ${c}`;
      const parts = range(4).map((c) => `select(0.0, ${name}[${at(c)}], g + ${c} < ${outerDim} && inK)`);
      loads.push(
        `{ let g = ${g}; let gk = ${gk}; let inK = gk < kEnd; ${reg(i)} = vec4<f32>(${parts.join(", ")}); }`,
      );
    }
    // A scaled operand is multiplied by `uniforms.alpha` as it is stored (before any f16 rounding), which
    // gives exactly the product of the pre-scaled tensor.
    const value = scaled ? `(${reg(i)} * uniforms.alpha)` : reg(i);
    stores.push(`${shared}[OFF${kk} * ${quads} + ${q}] = ${half ? `toHalf(${value})` : value};`);
  }
  const all = stores.join("\n");
  // `at`: the offset of the workgroup buffer stored into (double buffering), "" for the first.
  return { decl, load: loads.join("\n"), store: (at = "") => all.replaceAll("OFF", at ? `${at} + ` : "") };
};

/**
 * The subgroup variant's A: lane `s = tx % G` of a row segment loads, for each of its thread's `rm` row
 * quads, the slice's k = `j G + s` (j < BK / G) into register `sa_r_j` (the next slice into `na_r_j`
 * while this one is multiplied); step k of the slice is then `subgroupShuffle(sa_r_j, seg + k % G)`. Same
 * zero-fill, scale and f16 rounding as {@link tileLoad}.
 */
const subgroupLoad = (t: Tile, l: GemmLayout, G: number, half: boolean, scaled: boolean) => {
  const rm = t.tm / 4, rows = t.bm / t.tm;
  const regs = range(rm).flatMap((r) => range(t.bk / G).map((j) => [r, j] as const));
  const wt = half ? "vec4<f16>" : "vec4<f32>";
  const load = (dst: "sa" | "na") =>
    regs.map(([r, j]) => {
      const quad = l.transA && l.vecA
        ? `select(vec4<f32>(0.0), A[(aOff + gk * uniforms.lda + row) / 4], row < uniforms.M && gk < kEnd)`
        : `vec4<f32>(${
          range(4).map((i) =>
            `select(0.0, A[${
              l.transA ? `aOff + gk * uniforms.lda + row + ${i}` : `aOff + (row + ${i}) * uniforms.lda + gk`
            }], row + ${i} < uniforms.M && gk < kEnd)`
          ).join(", ")
        })`;
      const value = scaled ? `(${quad} * uniforms.alpha)` : quad;
      return `{ let gk = k0 + ${j * G} + tx % ${G}; let row = m0 + ${
        r * rows * 4
      } + ty * 4; ${dst}_${r}_${j} = ${half ? `toHalf(${value})` : value}; }`;
    }).join("\n      ");
  return {
    decl: regs.map(([r, j]) => `var sa_${r}_${j}: ${wt};\n  var na_${r}_${j}: ${wt};`).join("\n  "),
    load,
    advance: regs.map(([r, j]) => `sa_${r}_${j} = na_${r}_${j};`).join("\n    "),
  };
};

/**
 * Throws unless `g` lanes can share a BK slice of the tile's A in the subgroup variant: a power of two of
 * at least 2 that divides the thread grid's width (a row segment stays within one row) and BK.
 */
export const checkSubgroup = (t: Tile, g: number): void => {
  const ok = Number.isInteger(g) && g >= 2 && (g & (g - 1)) === 0 && (t.bn / t.tn) % g === 0 &&
    t.bk % g === 0;
  if (!ok) {
    throw new Error(
      `matmul subgroup ${g} with tile ${
        JSON.stringify(t)
      }: the lanes sharing A must be a power of two >= 2 ` +
        `dividing the thread grid's width ${t.bn / t.tn} and BK ${t.bk}`,
    );
  }
};

/**
 * The lanes of the subgroup variant for `t` on a device whose subgroups have at least `minSize` lanes: the
 * largest power of two that divides the thread grid's width and BK and is at most `minSize` (so that every
 * subgroup size the device may use is a multiple of it), or 0 where that is below 2.
 */
export const subgroupLanes = (t: Tile, minSize: number | undefined): number => {
  if (minSize === undefined) return 0;
  let g = 2 ** Math.floor(Math.log2(Math.max(1, minSize)));
  while (g >= 2 && ((t.bn / t.tn) % g !== 0 || t.bk % g !== 0)) g /= 2;
  return g >= 2 ? g : 0;
};

/**
 * WGSL of `toHalf`, the f32 -> f16 rounding of an operand quad on its way into workgroup memory. WGSL
 * leaves the conversion of a value outside f16's range indeterminate, so the range is checked on the bits
 * (|v| >= 65520, which rounds to infinity, or Inf/NaN) and such a quad raises the workgroup's `overflowed`
 * flag: every output of that workgroup is then NaN, as the products with an f16 infinity would have been
 * non-finite. That is what dynamic loss scaling (lib/optim/loss_scale.ts) needs to see.
 */
const HALF_HELPERS = `
var<workgroup> overflowed: atomic<u32>;
fn toHalf(v: vec4<f32>) -> vec4<f16> {
  if (any((bitcast<vec4<u32>>(v) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x477fefffu))) {
    atomicOr(&overflowed, 1u);
  }
  return vec4<f16>(clamp(v, vec4<f32>(-65504.0), vec4<f32>(65504.0)));
}
`;

/**
 * Which operand a product multiplies by `uniforms.alpha`: A or B as it is loaded (the product of the
 * pre-scaled tensor, exactly), or C in the store epilogue (the scaled product, exactly). Attention's
 * `1 / sqrt(dh)` (lib/core/kernels/heads.ts).
 */
export type GemmScale = "none" | "a" | "b" | "c";

/** What a GEMM kernel does besides the product (each field's default: none, f32, one buffer). */
export interface GemmVariant {
  readonly precision?: MatMulPrecision;
  /** f16 operands: where the products accumulate ({@link GemmChoice.accumulate}). */
  readonly accumulate?: "f32" | "f16";
  readonly bias?: boolean;
  readonly act?: EpilogueActivation;
  readonly scale?: GemmScale;
  /** The activation whose gradient the epilogue applies ({@link MatMulExtras.actGrad}). */
  readonly actGrad?: EpilogueActivation;
  /**
   * A residual `R: [M, N]` added last ({@link MatMulExtras.residual}); `gamma`: the branch scaled by a
   * per-column `Gamma: [N]` first (layer scale), `rows`: and by a per-sample `S` (drop path; row `r` is
   * sample `r / uniforms.rowsPer`).
   */
  readonly residual?: { readonly gamma: boolean; readonly rows: boolean };
  /** Workgroup buffers per operand ({@link GemmChoice.buffers}). */
  readonly buffers?: 1 | 2;
  /** The k loop over a slice written out step by step ({@link GemmChoice.unroll}). */
  readonly unroll?: boolean;
  /** Lanes that share A's slices by subgroup shuffles ({@link GemmChoice.subgroup}); 0 or unset: none. */
  readonly subgroup?: number;
}

/**
 * WGSL of one GEMM variant (tfjs supplies the bindings and `uniforms`). `bias`: a third input `Bias: [N]`
 * (vec4 where C is, `l.vecC`) added to every output row in the store epilogue, in f32 after accumulation
 * (and after the f16 overflow rule: an overflowed tile stays NaN). Only for an unsplit K; a split product
 * adds its bias in the split-sum pass ({@link splitSumSource}), once.
 *
 * Every operand is addressed through its view's uniforms ({@link MatrixView}): product `z` of a batch
 * reads A at `aBase + (z / heads) aOuter + (z % heads) aInner` with rows `lda` apart (and B, C alike), so a
 * product can read attention's heads straight out of the qkv projection and write them merged, with no
 * transpose between.
 */
export const gemmSource = (t: Tile, l: GemmLayout, v: GemmVariant = {}): string => {
  const {
    precision = "f32",
    accumulate = "f32",
    bias = false,
    act = "none",
    scale = "none",
    actGrad = "none",
    buffers = 1,
    residual,
    unroll = false,
    subgroup: G = 0,
  } = v;
  if (G > 0) checkSubgroup(t, G);
  if (residual && !l.vecC) throw new Error("gemmSource: the residual epilogue needs vec4 C");
  if (actGrad !== "none" && !l.vecC) {
    throw new Error("gemmSource: the activation-gradient epilogue needs vec4 C");
  }
  const half = precision === "f16";
  // f16 accumulation: a per-slice f16 accumulator (`h_...`), folded into the f32 one after each BK slice.
  const halfAcc = half && accumulate === "f16";
  const tx = t.bn / t.tn, ty = t.bm / t.tm, threads = tx * ty;
  const rm = t.tm / 4, rn = t.tn / 4;
  // The layer scale's quads of this thread's columns, read once (N % 4 == 0 here).
  const gammaLoads = residual?.gamma
    ? range(rn).map((c) =>
      `var gamma${c} = vec4<f32>(0.0); { let col = n0 + ${
        c * tx * 4
      } + tx * 4; if (col < uniforms.N) { gamma${c} = Gamma[col / 4]; } }`
    )
    : [];
  const a = tileLoad("A", "As", t.bm, t.bk, threads, !l.transA, l.vecA, half, scale === "a");
  const sg = G > 0 ? subgroupLoad(t, l, G, half, scale === "a") : undefined;
  const b = tileLoad("B", "Bs", t.bn, t.bk, threads, l.transB, l.vecB, half, scale === "b");
  const acc = (r: number, i: number, c: number) => `acc_${r}_${i}_${c}`;
  const hacc = (r: number, i: number, c: number) => `h_${r}_${i}_${c}`;
  const cells = range(rm).flatMap((r) => range(4).flatMap((i) => range(rn).map((c) => [r, i, c] as const)));
  const accDecl = cells.map(([r, i, c]) => `var ${acc(r, i, c)} = vec4<f32>(0.0);`).join("\n");
  const slice = halfAcc ? cells.map(([r, i, c]) => `var ${hacc(r, i, c)} = vec4<f16>(0.0);`) : [];
  const fold = halfAcc
    ? cells.map(([r, i, c]) => `${acc(r, i, c)} = ${acc(r, i, c)} + vec4<f32>(${hacc(r, i, c)});`)
    : [];
  // One k step; the loop has a constant trip count, which the driver's compiler unrolls.
  const inner: string[] = [];
  // f16 operands with f32 accumulation: each quad is widened once per k step.
  const widen = (x: string) => (half && !halfAcc ? `vec4<f32>(${x})` : x);
  // Double buffering: the slice being multiplied is at aCur / bCur in the workgroup arrays.
  const db = buffers === 2;
  const curA = db ? "aCur + " : "", curB = db ? "bCur + " : "";
  // `kk`: the loop variable, or with `unroll` each step's constant (its offsets folded at compile time).
  const kkA = unroll ? "KK_A" : `kk * ${t.bm / 4}`, kkB = unroll ? "KK_B" : `kk * ${t.bn / 4}`;
  // The A quads of a k step: from workgroup memory, or (subgroup variant) shuffled out of register `@J@` of
  // the lane `@SRC@` of this row segment that loaded them (both filled in by `block` below).
  const aShared = range(rm).map((r) => `let a${r} = ${widen(`As[${curA}${kkA} + ${r * ty} + ty]`)};`);
  const aShuffled = range(rm).map((r) => `let a${r} = ${widen(`subgroupShuffle(sa_${r}_@J@, @SRC@)`)};`);
  for (let c = 0; c < rn; c++) {
    inner.push(`let b${c} = ${widen(`Bs[${curB}${kkB} + ${c * tx} + tx]`)};`);
  }
  for (const [r, i, c] of cells) {
    inner.push(
      halfAcc
        ? `${hacc(r, i, c)} = fma(vec4<f16>(a${r}[${i}]), b${c}, ${hacc(r, i, c)});`
        : `${acc(r, i, c)} = fma(vec4<f32>(a${r}[${i}]), b${c}, ${acc(r, i, c)});`,
    );
  }
  const stores: string[] = [];
  // The bias quads of this thread's columns, read once (not once per row); zero past N.
  const biasLoads = bias
    ? range(rn).map((c) => {
      const col = `n0 + ${c * tx * 4} + tx * 4`;
      const read = l.vecC
        ? `if (col < uniforms.N) { bias${c} = Bias[col / 4]; }`
        : range(4).map((j) => `if (col + ${j} < uniforms.N) { bias${c}[${j}] = Bias[col + ${j}]; }`).join(
          " ",
        );
      return `var bias${c} = vec4<f32>(0.0); { let col = ${col}; ${read} }`;
    })
    : [];
  for (let r = 0; r < rm; r++) {
    for (let i = 0; i < 4; i++) {
      const row = `m0 + ${r * ty * 4} + ty * 4 + ${i}`;
      for (let c = 0; c < rn; c++) {
        const col = `n0 + ${c * tx * 4} + tx * 4`;
        const raw = half ? `select(${acc(r, i, c)}, nan4, bad)` : acc(r, i, c);
        const scaled = scale === "c" ? `(${raw} * uniforms.alpha)` : raw;
        const v = activate(act, bias ? `(${scaled} + bias${c})` : scaled);
        if (actGrad !== "none") {
          // `dy act'(x)` with dy the product and x the activation's input U (C's shape, contiguous): the
          // fused activation gradient's WGSL (lib/core/kernels/gelu.ts), so its values.
          stores.push(
            `{ let row = ${row}; let col = ${col}; if (row < uniforms.M && col < uniforms.N) { let x = U[(row * uniforms.N + col) / 4]; let dy = ${v}; result[(cOff + row * uniforms.ldc + col) / 4] = ${
              gradExpr(actGrad === "quickGelu")
            }; } }`,
          );
        } else if (l.vecC) {
          // The residual as lib/nn/residual.ts `scaledResidual` computes it: `x + ((a * gamma) * s)`.
          const branch = residual?.gamma ? `(${v} * gamma${c})` : v;
          const dropped = residual?.rows ? `(${branch} * S[row / uniforms.rowsPer])` : branch;
          const out = residual ? `(R[(row * uniforms.N + col) / 4] + ${dropped})` : v;
          stores.push(
            `{ let row = ${row}; let col = ${col}; if (row < uniforms.M && col < uniforms.N) { result[(cOff + row * uniforms.ldc + col) / 4] = ${out}; } }`,
          );
        } else {
          stores.push(
            `{ let row = ${row}; let col = ${col}; if (row < uniforms.M) { ${
              range(4).map((j) =>
                `if (col + ${j} < uniforms.N) { result[cOff + row * uniforms.ldc + col + ${j}] = ${v}[${j}]; }`
              ).join(" ")
            } } }`,
          );
        }
      }
    }
  }
  const wt = half ? "vec4<f16>" : "vec4<f32>";
  // The k loop: each BK slice of A and B into workgroup memory (`viaSubgroup`: B only; A's slice is held in
  // registers spread over each row segment of G lanes, and shuffled out k step by k step).
  const block = (lines: string[], j: number, q: number | undefined, kk: number | undefined) =>
    lines.join("\n      ").replaceAll("@J@", String(j)).replaceAll(
      "@SRC@",
      q === undefined ? "seg + q" : `seg + ${q}u`,
    )
      .replaceAll("KK_A", String((kk ?? 0) * t.bm / 4)).replaceAll("KK_B", String((kk ?? 0) * t.bn / 4));
  const steps = (viaSubgroup: boolean): string => {
    if (!viaSubgroup) {
      return unroll
        ? range(t.bk).map((k) => `{\n      ${block([...aShared, ...inner], 0, 0, k)}\n    }`).join("\n    ")
        : `for (var kk = 0; kk < ${t.bk}; kk++) {\n      ${[...aShared, ...inner].join("\n      ")}\n    }`;
    }
    // k = j G + q: lane `seg + q` of the segment holds step k in its register j (k in increasing order,
    // as the shared path: the same sums).
    return range(t.bk / G).map((j) =>
      unroll
        ? range(G).map((q) => `{\n      ${block([...aShuffled, ...inner], j, q, j * G + q)}\n    }`).join(
          "\n    ",
        )
        : `for (var q = 0u; q < ${G}u; q++) {\n      let kk = ${j * G} + i32(q);\n      ${
          block([...aShuffled, ...inner], j, undefined, undefined)
        }\n    }`
    ).join("\n    ");
  };
  const aLoad = (viaSubgroup: boolean, dst: "sa" | "na") => viaSubgroup ? sg!.load(dst) : a.load;
  const aStore = (viaSubgroup: boolean, at = "") => viaSubgroup ? "" : a.store(at);
  const loop = (viaSubgroup: boolean): string =>
    `var k0 = kBegin;
  ${aLoad(viaSubgroup, "sa")}
  ${b.load}
  ${aStore(viaSubgroup)}
  ${b.store()}
  workgroupBarrier();
  for (var t = 0; t < tiles; t++) {
    k0 = kBegin + (t + 1) * ${t.bk};
    let more = t + 1 < tiles;
    if (more) {
      ${aLoad(viaSubgroup, "na")}
      ${b.load}
    }
    ${
      db
        ? `let aCur = (t % 2) * ${t.bk * t.bm / 4};
    let bCur = (t % 2) * ${t.bk * t.bn / 4};`
        : ""
    }
    ${slice.join("\n    ")}
    ${steps(viaSubgroup)}
    ${fold.join("\n    ")}
    ${
      db
        // The next slice goes into the other buffer, which nobody reads in this step: one barrier a step
        // (the next step reads what this one stored; its stores go where this one read, after the barrier).
        ? `if (more) {
      ${aStore(viaSubgroup, `(1 - t % 2) * ${t.bk * t.bm / 4}`)}
      ${b.store(`(1 - t % 2) * ${t.bk * t.bn / 4}`)}
    }
    workgroupBarrier();`
        : `workgroupBarrier();
    if (more) {
      ${aStore(viaSubgroup)}
      ${b.store()}
    }
    workgroupBarrier();`
    }
    ${viaSubgroup ? sg!.advance : ""}
  }`;
  // The subgroup variant checks what its shuffles assume, that the G lanes of each aligned run of a
  // subgroup are G consecutive threads of one row of the grid (so a row's threads share its A values); a
  // workgroup where the driver made subgroups otherwise (or of a size G does not divide) runs the shared
  // path instead, the same sums. The check is made uniform across the workgroup so that both paths may
  // hold barriers.
  const subgroupBody = G === 0 ? "" : `let seg = sgLane - sgLane % ${G}u;
  let partner = subgroupShuffle(localIndex, seg);
  if (sgSize % ${G}u != 0u || localIndex % ${G}u != sgLane % ${G}u || partner + sgLane % ${G}u != localIndex) {
    atomicOr(&sgCheck, 1u);
  }
  workgroupBarrier();
  if (localIndex == 0u) { sgBad = atomicLoad(&sgCheck); }
  ${sg!.decl}
  if (workgroupUniformLoad(&sgBad) == 0u) {
  ${loop(true)}
  } else {
  ${loop(false)}
  }`;
  const flag = half
    ? `// An operand outside f16's range (see toHalf): the whole tile is NaN. The NaN is built at run time
  // (naga refuses a constant one).
  let bad = atomicLoad(&overflowed) != 0u;
  let nan4 = bitcast<vec4<f32>>(vec4<u32>(0x7fc00000u | (localIndex & 0u)));`
    : "";
  const helpers = actGrad !== "none" && act === "none" ? ACTIVATION_WGSL : activationSource(act);
  return `${half ? HALF_HELPERS : ""}${helpers}${
    G > 0
      ? `${SUBGROUP_DECLARATIONS}var<workgroup> sgCheck: atomic<u32>;
var<workgroup> sgBad: u32;
`
      : ""
  }
var<workgroup> As: array<${wt}, ${buffers * t.bk * t.bm / 4}>;
var<workgroup> Bs: array<${wt}, ${buffers * t.bk * t.bn / 4}>;

fn main(index: i32) {
  ${
    G > 0
      ? `// A one-dimensional workgroup (naga takes the subgroup builtins only there), rows of ${tx} threads.
  let tx = i32(localIndex) % ${tx};
  let ty = i32(localIndex) / ${tx};`
      : `let tx = i32(localId.x);
  let ty = i32(localId.y);`
  }
  let n0 = i32(workgroupId.x) * ${t.bn};
  let m0 = i32(workgroupId.y) * ${t.bm};
  let z = i32(workgroupId.z);
  let batch = z / uniforms.splits;
  let split = z % uniforms.splits;
  let outer = batch / uniforms.heads;
  let inner = batch % uniforms.heads;
  let aOff = uniforms.aBase + outer * uniforms.aOuter + inner * uniforms.aInner;
  let bOff = uniforms.bBase + outer * uniforms.bOuter + inner * uniforms.bInner;
  let cOff = uniforms.cBase + outer * uniforms.cOuter + inner * uniforms.cInner + split * uniforms.cSplit;
  let kBegin = split * uniforms.kChunk;
  let kEnd = min(uniforms.K, kBegin + uniforms.kChunk);
  // Uniform trip count (barriers below): ragged ends are zero-filled by the bounds checks.
  let tiles = (uniforms.kChunk + ${t.bk - 1}) / ${t.bk};
  ${accDecl}
  ${a.decl}
  ${b.decl}
  ${G > 0 ? subgroupBody : loop(false)}
  ${flag}
  ${biasLoads.join("\n  ")}
  ${gammaLoads.join("\n  ")}
  ${stores.join("\n  ")}
}
`;
};

/**
 * Sums `parts: [batch * S, M*N]` over S -> `[batch, M*N]` (the split-K second pass). `bias`: adds
 * `Bias: [N]` (`uniforms.n` wide) to each row after the sum; then `vec` needs N % 4 == 0, so that a quad
 * of the output never straddles two rows.
 */
const splitSumSource = (splits: number, vec: boolean, bias = false, act: EpilogueActivation = "none") => {
  const sum = `s${bias ? ` + Bias[i % (uniforms.n / ${vec ? 4 : 1})]` : ""}`;
  const out = act === "none" ? sum : vec ? activate(act, sum) : `${activate(act, `vec4<f32>(${sum})`)}.x`;
  return `${activationSource(act)}
fn main(index: i32) {
  let per = uniforms.mn / ${vec ? 4 : 1};
  let total = uniforms.batches * per;
  if (index >= total) { return; }
  let b = index / per;
  let i = index % per;
  var s = ${vec ? "vec4<f32>(0.0)" : "0.0"};
  for (var k = 0; k < ${splits}; k++) { s = s + P[(b * ${splits} + k) * per + i]; }
  result[index] = ${out};
}
`;
};

/** A planned product: shapes folded to 3-D, the variant and the K split. */
export interface MatMulPlan {
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly batch: number;
  readonly batchA: number;
  readonly batchB: number;
  readonly outShape: number[];
  readonly tile: Tile;
  readonly layout: GemmLayout;
  readonly splits: number;
  readonly kChunk: number;
  readonly precision: MatMulPrecision;
  /** f16 operands: where the products accumulate ({@link GemmChoice.accumulate}). */
  readonly accumulate: "f32" | "f16";
  /** Workgroup buffers per operand ({@link GemmChoice.buffers}). */
  readonly buffers: 1 | 2;
  /** The slice loop written out ({@link GemmChoice.unroll}). */
  readonly unroll: boolean;
  /** Lanes sharing A's slices by subgroup shuffles, 0 for none ({@link GemmChoice.subgroup}). */
  readonly subgroup: number;
}

/** What a plan chose besides its tile and split, as a {@link GemmChoice}'s fields (to plan the same again). */
export const planChoices = (
  p: MatMulPlan,
): Pick<MatMulPlan, "accumulate" | "buffers" | "unroll" | "subgroup"> => ({
  accumulate: p.accumulate,
  buffers: p.buffers,
  unroll: p.unroll,
  subgroup: p.subgroup,
});

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
/** Workgroups that fill the H200 twice over (132 SMs); fewer tiles than this get a split K. */
const TARGET_WORKGROUPS = 264;
const MAX_DISPATCH = 65535;

/**
 * Plans `matMul(a, b, transA, transB)` or returns null when this kernel does not take it (the stock
 * kernel runs). Batch dims: equal, or one side's product 1 (broadcast). The tile, split and accumulation
 * come from `choice` when given (the tuner's candidates), else from the installed chooser
 * ({@link setGemmChooser}), else from the default rule: 128 x 128 tiles for products of 256 x 256 outputs
 * or more, 64 x 64 below, and K split when there are fewer output tiles than two waves of the H200's SMs.
 */
export const planMatMul = (
  aShape: readonly number[],
  bShape: readonly number[],
  transA: boolean,
  transB: boolean,
  choice?: GemmChoice,
  precision: MatMulPrecision = operandPrecision,
): MatMulPlan | null => {
  if (aShape.length < 2 || bShape.length < 2) return null;
  const ra = aShape.length, rb = bShape.length;
  const m = transA ? aShape[ra - 1] : aShape[ra - 2];
  const k = transA ? aShape[ra - 2] : aShape[ra - 1];
  const kb = transB ? bShape[rb - 1] : bShape[rb - 2];
  const n = transB ? bShape[rb - 2] : bShape[rb - 1];
  if (k !== kb || m === 0 || n === 0 || k === 0) return null;
  const outerA = aShape.slice(0, -2), outerB = bShape.slice(0, -2);
  const batchA = prod(outerA), batchB = prod(outerB);
  let outer: number[];
  if (batchA === batchB && outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i])) {
    outer = [...outerA];
  } else if (batchA === 1) outer = [...outerB];
  else if (batchB === 1) outer = [...outerA];
  else return null;
  const batch = Math.max(batchA, batchB);
  const chosen = choice ?? chooser?.({ m, n, k, batch, transA, transB, precision });
  const tile = chosen?.tile ?? (m * n >= 256 * 256 ? gemmTiles.big : gemmTiles.small);
  const tiles = Math.ceil(m / tile.bm) * Math.ceil(n / tile.bn) * batch;
  let splits = 1;
  if (chosen?.splits !== undefined) splits = Math.max(1, Math.min(chosen.splits, Math.ceil(k / tile.bk)));
  else if (tiles < TARGET_WORKGROUPS && k >= 1024) {
    splits = Math.min(16, Math.ceil(TARGET_WORKGROUPS / tiles), Math.floor(k / 256));
  }
  const kChunk = Math.ceil(k / splits / tile.bk) * tile.bk;
  splits = Math.ceil(k / kChunk);
  if (
    Math.ceil(n / tile.bn) > MAX_DISPATCH || Math.ceil(m / tile.bm) > MAX_DISPATCH ||
    batch * splits > MAX_DISPATCH
  ) return null;
  const layout: GemmLayout = {
    transA,
    transB,
    // vec4 loads only where the tile's outer extent is contiguous (see tileLoad).
    vecA: transA && m % 4 === 0,
    vecB: !transB && n % 4 === 0,
    vecC: n % 4 === 0,
  };
  const accumulate = precision === "f16" ? chosen?.accumulate ?? "f32" : "f32";
  const subgroup = chosen?.subgroup ?? 0;
  if (subgroup > 0) checkSubgroup(tile, subgroup);
  return {
    m,
    n,
    k,
    batch,
    batchA,
    batchB,
    outShape: [...outer, m, n],
    tile,
    layout,
    splits,
    kChunk,
    precision,
    accumulate,
    buffers: chosen?.buffers ?? 1,
    unroll: chosen?.unroll ?? false,
    subgroup,
  };
};

/**
 * Where one operand's matrices lie in its tensor's flat data: matrix `z` of a batch starts at
 * `base + floor(z / heads) outer + (z % heads) inner` ({@link ProductViews.heads}), and its rows are `ld`
 * elements apart. A whole tensor `[batch, rows, cols]` is `{ base: 0, outer: rows cols, inner: 0, ld: cols }`
 * with one head; head `h` of attention's q in a qkv projection `[B, N, 3 H dh]` is
 * `{ base: 0, outer: N 3 H dh, inner: dh, ld: 3 H dh }` with H heads.
 */
export interface MatrixView {
  readonly base: number;
  readonly outer: number;
  readonly inner: number;
  readonly ld: number;
}

/** The views of one product ({@link runMatMul}): its operands and output addressed in place. */
export interface ProductViews {
  /** How the batch index splits into (outer, inner): `z = outer heads + inner`. */
  readonly heads: number;
  readonly a: MatrixView;
  readonly b: MatrixView;
  /** Where the product is written in the output tensor. */
  readonly c: MatrixView;
  /** The output tensor's shape (C is a view into it). */
  readonly outShape: number[];
  /** An existing output tensor to write into (the other parts of it are left as they are). */
  readonly into?: TensorInfo;
  /** Which operand `alpha` multiplies ({@link GemmScale}). */
  readonly scale?: GemmScale;
  readonly alpha?: number;
}

/** What {@link runMatMul} does besides the product. */
export interface MatMulExtras {
  /** float32 `[N]`, added in the epilogue (or with a split K in the split-sum pass). */
  readonly bias?: TensorInfo;
  /** Applied after the bias. */
  readonly act?: EpilogueActivation;
  /** The operands and output addressed in place. */
  readonly views?: ProductViews;
  /**
   * The product is `dy`, and the output `dy act'(u)` for `u` (float32, C's shape `[M, N]`): the gradient of
   * an activation whose input was `u`, in the epilogue of the product that makes its `dy`.
   */
  readonly actGrad?: { readonly u: TensorInfo; readonly act: "gelu" | "quickGelu" };
  /**
   * A residual connection in the epilogue of the product that makes its branch (unsplit, one product,
   * N % 4 == 0): the output is `r + ((act(a b + bias) * gamma) * s[row / rowsPer])`, `r: [M, N]`, the layer
   * scale `gamma: [N]` and the drop-path factors `s: [M / rowsPer]` each optional (float32).
   */
  readonly residual?: {
    readonly r: TensorInfo;
    readonly gamma?: TensorInfo;
    readonly rowScale?: TensorInfo;
    readonly rowsPer?: number;
  };
}

/** The views of a plain product: whole operands, C the (split-K partial) output. */
const wholeViews = (p: MatMulPlan): ProductViews => ({
  heads: 1,
  a: { base: 0, outer: p.batchA === 1 ? 0 : p.m * p.k, inner: 0, ld: p.layout.transA ? p.m : p.k },
  b: { base: 0, outer: p.batchB === 1 ? 0 : p.k * p.n, inner: 0, ld: p.layout.transB ? p.k : p.n },
  c: { base: 0, outer: p.splits * p.m * p.n, inner: 0, ld: p.n },
  outShape: p.outShape,
});

const quadAligned = (w: MatrixView): boolean => [w.base, w.outer, w.inner, w.ld].every((x) => x % 4 === 0);

const key = (
  t: Tile,
  l: GemmLayout,
  precision: MatMulPrecision,
  accumulate: string,
  bias: boolean,
  act: EpilogueActivation,
) =>
  `caeGemm_${t.bm}x${t.bn}x${t.bk}_${t.tm}x${t.tn}_${+l.transA}${+l.transB}${+l.vecA}${+l.vecB}${+l.vecC}` +
  (precision === "f16" ? `_h${accumulate}` : "") + (bias ? "_bias" : "") + (act === "none" ? "" : `_${act}`);

/**
 * Runs a planned product on WebGPU. `a`, `b` float32 TensorInfos; returns the output TensorInfo. `bias`
 * (float32 `[N]`): the output is `a b + bias`, the bias added in the GEMM's epilogue, or with a split K
 * in the split-sum pass.
 */
export const runMatMul = (
  backend: WebGPUBackend,
  a: TensorInfo,
  b: TensorInfo,
  p: MatMulPlan,
  { bias, act = "none", views, actGrad, residual }: MatMulExtras = {},
): TensorInfo => {
  if (residual !== undefined && (p.splits !== 1 || p.batch !== 1 || !p.layout.vecC || views || actGrad)) {
    throw new Error("runMatMul: the residual epilogue takes one unsplit product with N % 4 == 0");
  }
  const { m, n, k, tile: t } = p;
  if (actGrad !== undefined && (p.splits !== 1 || p.batch !== 1 || !p.layout.vecC || bias || views)) {
    throw new Error("runMatMul: the activation-gradient epilogue takes one unsplit product with N % 4 == 0");
  }
  if (bias !== undefined && (bias.shape.length !== 1 || bias.shape[0] !== n)) {
    throw new Error(`runMatMul: bias of shape [${bias.shape}] for a product with N = ${n}`);
  }
  if (views !== undefined && p.splits !== 1) throw new Error("runMatMul: a product on views is never split");
  const v = views ?? wholeViews(p);
  // vec4 access through a view needs every offset and stride of it on a quad boundary.
  const l: GemmLayout = views === undefined ? p.layout : {
    ...p.layout,
    vecA: p.layout.vecA && quadAligned(v.a),
    vecB: p.layout.vecB && quadAligned(v.b),
    vecC: p.layout.vecC && quadAligned(v.c),
  };
  const flat = (x: TensorInfo): TensorInfo => ({ ...x, shape: [tf.util.sizeFromShape(x.shape)] });
  const a3: TensorInfo = views ? flat(a) : { ...a, shape: [p.batchA, l.transA ? k : m, l.transA ? m : k] };
  const b3: TensorInfo = views ? flat(b) : { ...b, shape: [p.batchB, l.transB ? n : k, l.transB ? k : n] };
  const inEpilogue = bias !== undefined && p.splits === 1;
  // The activation goes where the final values are: the GEMM's epilogue, or the split-sum pass.
  const actHere: EpilogueActivation = p.splits === 1 ? act : "none";
  const scale = v.scale ?? "none";
  const gradKind: EpilogueActivation = actGrad?.act ?? "none";
  // The subgroup variant where the device has subgroups; elsewhere (a table measured on another device)
  // the same product through workgroup memory.
  const G = hasSubgroups(backend.device) ? p.subgroup : 0;
  const program: Program = {
    variableNames: [
      "A",
      "B",
      ...(inEpilogue ? ["Bias"] : []),
      ...(actGrad ? ["U"] : []),
      ...(residual ? ["R"] : []),
      ...(residual?.gamma ? ["Gamma"] : []),
      ...(residual?.rowScale ? ["S"] : []),
    ],
    variableComponents: [
      l.vecA ? 4 : 1,
      l.vecB ? 4 : 1,
      ...(inEpilogue ? [l.vecC ? 4 : 1] : []),
      ...(actGrad ? [4] : []),
      ...(residual ? [4] : []),
      ...(residual?.gamma ? [4] : []),
      ...(residual?.rowScale ? [1] : []),
    ],
    outputShape: views ? [tf.util.sizeFromShape(views.outShape)] : [p.batch * p.splits, m, n],
    outputComponent: l.vecC ? 4 : 1,
    shaderKey: key(t, l, p.precision, p.accumulate, inEpilogue, actHere) +
      (scale === "none" ? "" : `_s${scale}`) + (gradKind === "none" ? "" : `_d${gradKind}`) +
      (p.buffers === 2 ? "_db" : "") + (p.unroll ? "_un" : "") + (G > 0 ? `_sg${G}` : "") +
      (residual ? `_res${residual.gamma ? "g" : ""}${residual.rowScale ? "s" : ""}` : ""),
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(n / t.bn), Math.ceil(m / t.bm), p.batch * p.splits],
    workgroupSize: G > 0 ? [(t.bn / t.tn) * (t.bm / t.tm), 1, 1] : [t.bn / t.tn, t.bm / t.tm, 1],
    uniforms: "M : i32, N : i32, K : i32, heads : i32, aBase : i32, aOuter : i32, aInner : i32, lda : i32, " +
      "bBase : i32, bOuter : i32, bInner : i32, ldb : i32, cBase : i32, cOuter : i32, cInner : i32, ldc : i32, " +
      "cSplit : i32, kChunk : i32, splits : i32, alpha : f32, rowsPer : i32,",
    getUserCode: () =>
      gemmSource(t, l, {
        precision: p.precision,
        accumulate: p.accumulate,
        bias: inEpilogue,
        act: actHere,
        scale,
        actGrad: gradKind,
        buffers: p.buffers,
        unroll: p.unroll,
        subgroup: G,
        residual: residual && { gamma: residual.gamma !== undefined, rows: residual.rowScale !== undefined },
      }),
  };
  const int = (x: number) => ({ type: "int32" as const, data: [x] });
  const ints = (w: MatrixView) => [int(w.base), int(w.outer), int(w.inner), int(w.ld)];
  const out = runProgram(
    backend,
    program,
    [
      a3,
      b3,
      ...(inEpilogue ? [bias] : []),
      ...(actGrad ? [actGrad.u] : []),
      ...(residual ? [residual.r] : []),
      ...(residual?.gamma ? [residual.gamma] : []),
      ...(residual?.rowScale ? [residual.rowScale] : []),
    ],
    [
      int(m),
      int(n),
      int(k),
      int(v.heads),
      ...ints(v.a),
      ...ints(v.b),
      ...ints(v.c),
      int(m * n),
      int(p.kChunk),
      int(p.splits),
      { type: "float32", data: [v.alpha ?? 1] },
      int(residual?.rowsPer ?? 1),
    ],
    views?.into,
  );
  if (views) return { ...out, shape: views.outShape };
  if (p.splits === 1) return { ...out, shape: p.outShape };
  const withBias = bias !== undefined;
  const vec = withBias ? n % 4 === 0 : (m * n) % 4 === 0;
  const total = p.batch * m * n / (vec ? 4 : 1);
  const sum: Program = {
    variableNames: withBias ? ["P", "Bias"] : ["P"],
    variableComponents: withBias ? [vec ? 4 : 1, vec ? 4 : 1] : [vec ? 4 : 1],
    outputShape: [p.batch, m * n],
    outputComponent: vec ? 4 : 1,
    shaderKey: `caeSplitSum_${p.splits}_${+vec}${withBias ? "_bias" : ""}${act === "none" ? "" : `_${act}`}`,
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(total / 256), 1, 1],
    workgroupSize: [256, 1, 1],
    uniforms: withBias ? "mn : i32, batches : i32, n : i32," : "mn : i32, batches : i32,",
    getUserCode: () => splitSumSource(p.splits, vec, withBias, act),
  };
  // A flat dispatch over 65535 workgroups is folded into 2-D/3-D by tfjs; getGlobalIndex follows.
  const partial: TensorInfo = { ...out, shape: [p.batch * p.splits, m * n] };
  const summed = runProgram(
    backend,
    sum,
    withBias ? [partial, bias] : [partial],
    withBias ? [int(m * n), int(p.batch), int(n)] : [int(m * n), int(p.batch)],
  );
  backend.disposeData(out.dataId);
  return { ...summed, shape: p.outShape };
};

// ---------------------------------------------------------------------------------------------------
// Registration over tfjs's BatchMatMul, and the fused `x W + b` kernel that comes with it

/** BatchMatMul on WebGPU: the tiled kernel where {@link planMatMul} takes the case, else the stock one. */
const batchMatMul = (args: KernelArgs, stock: (args: KernelArgs) => Info): Info => {
  const { a, b } = args.inputs as unknown as { a: TensorInfo; b: TensorInfo };
  const attrs = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
  const plan = a.dtype === "float32" && b.dtype === "float32"
    ? planMatMul(a.shape, b.shape, attrs.transposeA, attrs.transposeB)
    : null;
  if (plan === null) return stock(args);
  return runMatMul(args.backend as WebGPUBackend, a, b, plan) as unknown as Info;
};

const override = kernelOverride("BatchMatMul", "webgpu", batchMatMul);

/**
 * The fused `x W + b` as the tfjs kernel `CaeMatMulBias` (a kernel, not a bare program, so that
 * `tf.profile` and the step profile list it and its time). Its attrs carry the plan {@link matMulBias}
 * made, so the chooser is asked once per product (the tuner counts its calls) and the kernel is a pure
 * function of inputs and attrs. No gradient is registered: it runs inside custom ops' forward passes
 * (lib/nn/linear.ts), which bring their own.
 */
const MATMUL_BIAS = "CaeMatMulBias";

/** {@link MatMulPlan}'s choices as kernel attrs (plain numbers and strings). */
interface BiasAttrs {
  readonly bm: number;
  readonly bn: number;
  readonly bk: number;
  readonly tm: number;
  readonly tn: number;
  readonly splits: number;
  readonly kChunk: number;
  readonly precision: MatMulPrecision;
  readonly accumulate: "f32" | "f16";
  readonly act: EpilogueActivation;
  readonly buffers: 1 | 2;
  readonly unroll: boolean;
  readonly subgroup: number;
  /** Rows per drop-path factor of a residual epilogue (tokens per sample). */
  readonly rowsPer?: number;
}

const matMulBiasKernel = (args: KernelArgs): Info => {
  const { x, w, bias, residual, gamma, rowScale } = args.inputs as unknown as {
    x: TensorInfo;
    w: TensorInfo;
    bias: TensorInfo;
    residual?: TensorInfo;
    gamma?: TensorInfo;
    rowScale?: TensorInfo;
  };
  const at = args.attrs as unknown as BiasAttrs;
  const tile: Tile = { bm: at.bm, bn: at.bn, bk: at.bk, tm: at.tm, tn: at.tn };
  const plan = planMatMul(x.shape, w.shape, false, false, {
    tile,
    splits: at.splits,
    accumulate: at.accumulate,
    buffers: at.buffers,
    unroll: at.unroll,
    subgroup: at.subgroup,
  }, at.precision);
  if (plan === null) throw new Error(`${MATMUL_BIAS}: [${x.shape}] x [${w.shape}] is not planned`);
  // The attrs' split, exactly as planned (re-planning a split count may round it differently).
  const exact: MatMulPlan = { ...plan, splits: at.splits, kChunk: at.kChunk };
  return runMatMul(args.backend as WebGPUBackend, x, w, exact, {
    bias,
    act: at.act ?? "none",
    residual: residual && { r: residual, gamma, rowScale, rowsPer: at.rowsPer },
  }) as unknown as Info;
};

/**
 * `dy W^T` with the activation's gradient in the epilogue, `(dy W^T) act'(u)`, as the tfjs kernel
 * `CaeMatMulActGrad` (inputs `dy: [M, K]`, `w: [N, K]`, `u: [M, N]`; attrs as {@link BiasAttrs}, never split).
 */
const MATMUL_ACT_GRAD = "CaeMatMulActGrad";

const matMulActGradKernel = (args: KernelArgs): Info => {
  const { dy, w, u } = args.inputs as unknown as { dy: TensorInfo; w: TensorInfo; u: TensorInfo };
  const at = args.attrs as unknown as BiasAttrs;
  const tile: Tile = { bm: at.bm, bn: at.bn, bk: at.bk, tm: at.tm, tn: at.tn };
  const plan = planMatMul(
    dy.shape,
    w.shape,
    false,
    true,
    {
      tile,
      splits: 1,
      accumulate: at.accumulate,
      buffers: at.buffers,
      unroll: at.unroll,
      subgroup: at.subgroup,
    },
    at.precision,
  );
  if (plan === null || at.act === "none") {
    throw new Error(`${MATMUL_ACT_GRAD}: [${dy.shape}] x [${w.shape}]^T is not planned`);
  }
  return runMatMul(args.backend as WebGPUBackend, dy, w, plan, {
    actGrad: { u, act: at.act },
  }) as unknown as Info;
};

const KERNELS: readonly [string, (args: KernelArgs) => Info][] = [
  [MATMUL_BIAS, matMulBiasKernel],
  [MATMUL_ACT_GRAD, matMulActGradKernel],
];

const registerBiasKernel = () => {
  for (const [kernelName, f] of KERNELS) {
    if (tf.getKernel(kernelName, "webgpu") !== undefined) continue;
    tf.registerKernel({
      kernelName,
      backendName: "webgpu",
      kernelFunc: f as unknown as KernelConfig["kernelFunc"],
    });
  }
};

const unregisterBiasKernel = () => {
  for (const [kernelName] of KERNELS) {
    if (tf.getKernel(kernelName, "webgpu") !== undefined) tf.unregisterKernel(kernelName, "webgpu");
  }
};

/** Whether the tiled matmul is registered. */
export const fastMatMulRegistered = override.registered;

/**
 * Registers the tiled kernel as webgpu's BatchMatMul, and `CaeMatMulBias` beside it (idempotent; a
 * no-op while WebGPU is not loaded).
 */
export const registerFastMatMul = (): void => {
  override.register();
  if (override.registered()) registerBiasKernel();
};

/** Puts tfjs's own BatchMatMul back and removes `CaeMatMulBias` (idempotent). */
export const restoreStockMatMul = (): void => {
  override.restore();
  unregisterBiasKernel();
};

/**
 * `x W + b` (`x: [M, K]`, `W: [K, N]`, `b: [N]`, float32) as one kernel: the tiled GEMM with the bias
 * added in its store epilogue (split K: in the split-sum pass), at the operand precision set now
 * ({@link setMatMulPrecision}; the bias is added in f32). Undefined where the caller must run
 * `tf.add(tf.matMul(x, W), b)` itself: the tiled kernel not registered, another backend than WebGPU,
 * another dtype or shape, or a product {@link planMatMul} does not take.
 *
 * Why: on the stock path every linear layer's forward is a matmul and then a broadcast Add that reads and
 * writes the whole `[M, N]` product again (one more kernel, and one more pass over the largest tensor of
 * the layer). Not differentiable by itself: call it in a forward pass that has its own gradient.
 *
 * `act`: GELU or QuickGELU applied after the bias, in the same kernel (the MLP's first layer where
 * nothing is kept for a backward pass: the frozen teacher, inference; lib/nn/mlp.ts), with the fused
 * activation kernel's WGSL, so the values are those of `matMulBias` followed by that kernel.
 *
 * `residual`: `r + ((x W + b) * gamma) * s` in the same kernel ({@link MatMulResidual}), in the order
 * lib/nn/residual.ts `scaledResidual` computes it (without gamma and s: `tf.add(r, y)`), so its values.
 * Undefined where the product would split K or N is not a multiple of 4.
 */
export const matMulBias = (
  x: tf.Tensor2D,
  w: tf.Tensor2D,
  b: tf.Tensor1D,
  act: EpilogueActivation = "none",
  residual?: MatMulResidual,
): tf.Tensor2D | undefined => {
  if (!override.registered() || tf.getBackend() !== "webgpu") return undefined;
  if (tf.getKernel(MATMUL_BIAS, "webgpu") === undefined) return undefined;
  if (x.dtype !== "float32" || w.dtype !== "float32" || b.dtype !== "float32") return undefined;
  if (x.rank !== 2 || w.rank !== 2 || b.rank !== 1 || b.shape[0] !== w.shape[1]) return undefined;
  const plan = planMatMul(x.shape, w.shape, false, false);
  if (plan === null) return undefined;
  if (residual !== undefined) {
    const { x: r, gamma, rowScale, rowsPer = 1 } = residual;
    const ok = [r, gamma, rowScale].every((t) => t === undefined || t.dtype === "float32") && r.rank === 2 &&
      r.shape[0] === plan.m && r.shape[1] === plan.n && plan.splits === 1 && plan.layout.vecC &&
      (gamma === undefined || (gamma.rank === 1 && gamma.shape[0] === plan.n)) &&
      (rowScale === undefined || (rowScale.rank === 1 && rowScale.shape[0] * rowsPer === plan.m));
    if (!ok) return undefined;
  }
  const attrs: BiasAttrs = {
    ...plan.tile,
    splits: plan.splits,
    kChunk: plan.kChunk,
    precision: plan.precision,
    act,
    ...planChoices(plan),
    rowsPer: residual?.rowsPer ?? 1,
  };
  const inputs: tf.NamedTensorMap = { x, w, bias: b };
  if (residual) inputs.residual = residual.x;
  if (residual?.gamma) inputs.gamma = residual.gamma;
  if (residual?.rowScale) inputs.rowScale = residual.rowScale;
  return tf.engine().runKernel(
    MATMUL_BIAS,
    inputs,
    attrs as unknown as tf.NamedAttrMap,
  ) as tf.Tensor2D;
};

/**
 * A residual connection for {@link matMulBias}'s epilogue: `x: [M, N]` the residual stream, `gamma: [N]` the
 * branch's layer scale, `rowScale: [M / rowsPer]` its drop-path factors per sample (rows `rowsPer` at a time).
 */
export interface MatMulResidual {
  readonly x: tf.Tensor2D;
  readonly gamma?: tf.Tensor1D;
  readonly rowScale?: tf.Tensor1D;
  readonly rowsPer?: number;
}

/**
 * The gradient of `act(u)` where its `dy` is made by a product: `(g W^T) act'(u)` (`g: [M, K]`,
 * `W: [N, K]`, `u: [M, N]`, float32, N a multiple of 4) as one kernel, the activation's gradient in the
 * product's epilogue with the fused activation gradient's WGSL (lib/core/kernels/gelu.ts), so the values
 * of `dy = matMul(g, W, false, true)` then that kernel. Undefined where the caller must run the two
 * itself (as {@link matMulBias}).
 *
 * Why: in the MLP's backward pass the gradient of the hidden layer `[B N, 4D]` is written by the product
 * and read back by the activation's gradient; here it never exists (lib/nn/mlp.ts).
 */
export const matMulActGrad = (
  g: tf.Tensor2D,
  w: tf.Tensor2D,
  u: tf.Tensor2D,
  act: "gelu" | "quickGelu",
): tf.Tensor2D | undefined => {
  if (!override.registered() || tf.getBackend() !== "webgpu") return undefined;
  if (tf.getKernel(MATMUL_ACT_GRAD, "webgpu") === undefined) return undefined;
  if ([g, w, u].some((t) => t.dtype !== "float32" || t.rank !== 2)) return undefined;
  const plan = planMatMul(g.shape, w.shape, false, true);
  if (plan === null || plan.n % 4 !== 0 || u.shape[0] !== plan.m || u.shape[1] !== plan.n) return undefined;
  const attrs: BiasAttrs = {
    ...plan.tile,
    splits: 1,
    kChunk: plan.k,
    precision: plan.precision,
    act,
    ...planChoices(plan),
  };
  return tf.engine().runKernel(
    MATMUL_ACT_GRAD,
    { dy: g, w, u },
    attrs as unknown as tf.NamedAttrMap,
  ) as tf.Tensor2D;
};
