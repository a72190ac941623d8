/**
 * Correctness checks of the WebGPU kernels (lib/core/kernels) against references on random inputs, shared
 * by the tests (small shapes, llvmpipe) and `deno task bench --check` (model shapes, the H200). Each check
 * returns the relative error `||x - ref|| / ||ref||` (lib/core/compare.ts, the parity checks' measure) of
 * every output it compares.
 *
 * @module
 */
import { tf, type WebGPUBackend } from "../deps.ts";
import { webgpuDevice, withErrorScope } from "../core/webgpu_errors.ts";
import { type Key, key, seedOf, split } from "../core/random.ts";
import {
  BIG,
  gemmChooser,
  type GemmShape,
  matMulActGrad,
  matMulBias,
  type MatMulPrecision,
  matMulPrecision,
  planMatMul,
  registerFastMatMul,
  restoreStockMatMul,
  runMatMul,
  setGemmChooser,
  setMatMulPrecision,
  SMALL,
  subgroupLanes,
} from "../core/kernels/matmul.ts";
import { subgroupMinSize } from "../core/webgpu_features.ts";
import { packHalf, unpackHalf } from "../core/kernels/half.ts";
import { toTensor } from "../core/kernels/program.ts";
import { registerKernels, restoreStockKernels } from "../core/kernels/dispatch.ts";
import { fusedAdamw } from "../optim/fused_adamw.ts";
import { flatten, type Params, tensorsIn } from "../core/tree.ts";
import { relativeError } from "../core/compare.ts";
import { layerNorm } from "../nn/norm.ts";
import { gelu, quickGelu } from "../nn/mlp.ts";
import { fusedActivation, fusedActivationGrad } from "../core/kernels/dispatch.ts";
import { gradients } from "../core/autodiff.ts";
import { precision } from "../core/precision.ts";
import {
  attentionCore,
  type HeadAt,
  headAttention,
  type HeadLayout,
  mergeHeads,
  splitHeads,
} from "../nn/sdpa.ts";
import { slice } from "../nn/views.ts";
import { scaledResidual } from "../nn/residual.ts";

/** One compared output. */
export interface CheckResult {
  readonly name: string;
  readonly detail: string;
  readonly relErr: number;
  readonly tolerance: number;
  readonly ok: boolean;
}

const result = (name: string, detail: string, e: number, tolerance: number): CheckResult => ({
  name,
  detail,
  relErr: e,
  tolerance,
  ok: e <= tolerance,
});

/** A matmul case: `matMul(a, b, ta, tb)` with a and b of these shapes. */
export interface MatMulCase {
  readonly a: number[];
  readonly b: number[];
  readonly ta: boolean;
  readonly tb: boolean;
  readonly what: string;
}

/** Small cases covering every load/store layout on 64 x 64 tiles, broadcasting and split K. */
export const smallMatMulCases: readonly MatMulCase[] = [
  { a: [3, 37, 16], b: [3, 37, 16], ta: false, tb: true, what: "q k^T (k-contiguous A and B, ragged N)" },
  { a: [3, 37, 37], b: [3, 37, 16], ta: false, tb: false, what: "p v (scalar A, vec4 B and C)" },
  { a: [3, 37, 37], b: [1, 37, 16], ta: true, tb: false, what: "p^T dO (transposed scalar A), broadcast B" },
  { a: [1, 2048, 64], b: [1, 2048, 48], ta: true, tb: false, what: "x^T dy, split K" },
];

/** Cases at the model's shapes (ViT-B/16 batch 32 and ViT-T attention), 128 x 128 tiles included. */
export const modelMatMulCases: readonly MatMulCase[] = [
  { a: [3168, 768], b: [768, 2304], ta: false, tb: false, what: "qkv linear (128x128 tiles)" },
  { a: [3168, 3072], b: [768, 3072], ta: false, tb: true, what: "dx = dy W^T" },
  { a: [3168, 768], b: [3168, 3072], ta: true, tb: false, what: "dW = x^T dy (split K)" },
  { a: [384, 99, 64], b: [384, 99, 64], ta: false, tb: true, what: "ViT-B q k^T" },
  { a: [384, 99, 99], b: [384, 99, 64], ta: false, tb: false, what: "ViT-B p v" },
  { a: [384, 167, 16], b: [384, 167, 16], ta: false, tb: true, what: "ViT-T q k^T" },
  { a: [384, 167, 167], b: [384, 167, 16], ta: true, tb: false, what: "ViT-T p^T dO" },
];

const randomPair = (k: Key, a: number[], b: number[]) => {
  const [k1, k2] = split(k);
  return [
    tf.randomNormal(a, 0, 1, "float32", seedOf(k1)),
    tf.randomNormal(b, 0, 1, "float32", seedOf(k2)),
  ];
};

/**
 * What {@link checkMatMul} runs besides the default plan, as a tile table may choose: "doubled" (the default
 * rule's tile and split, double-buffered, with its slice loop written out) or "subgroup" (the default
 * rule's tile and split with A shared by subgroup shuffles, at the lanes the tuner would give it on this
 * device; no products where the device has no subgroups).
 */
export type MatMulVariant = "default" | "doubled" | "subgroup";

/** The tiled matmul against tfjs's own kernel on the same inputs (WebGPU), as `variant` plans it. */
export const checkMatMul = async (
  cases: readonly MatMulCase[],
  tolerance = 1e-5,
  variant: MatMulVariant = "default",
): Promise<CheckResult[]> => {
  const saved = gemmChooser();
  const tileOf = (s: GemmShape) => s.m * s.n >= 256 * 256 ? BIG : SMALL;
  const minSize = subgroupMinSize(webgpuDevice());
  if (variant === "subgroup" && minSize === undefined) return [];
  if (variant === "doubled") setGemmChooser((s) => ({ tile: tileOf(s), buffers: 2, unroll: true }));
  if (variant === "subgroup") {
    setGemmChooser((s) => ({ tile: tileOf(s), subgroup: subgroupLanes(tileOf(s), minSize) }));
  }
  try {
    return await checkMatMulOnce(cases, tolerance, variant);
  } finally {
    setGemmChooser(saved);
  }
};

const checkMatMulOnce = async (
  cases: readonly MatMulCase[],
  tolerance: number,
  variant: MatMulVariant,
): Promise<CheckResult[]> => {
  const out: CheckResult[] = [];
  let k = key(7);
  for (const c of cases) {
    const [kc, next] = split(k);
    k = next;
    const [a, b] = randomPair(kc, c.a, c.b);
    restoreStockMatMul();
    const ref = tf.matMul(a, b, c.ta, c.tb);
    const refData = await ref.data();
    registerFastMatMul();
    const plan = planMatMul(c.a, c.b, c.ta, c.tb);
    const y = await withErrorScope(async () => {
      const y = tf.matMul(a, b, c.ta, c.tb);
      await y.data();
      return y;
    });
    const detail = plan
      ? `tile ${plan.tile.bm}, splits ${plan.splits}${plan.buffers === 2 ? ", double-buffered" : ""}${
        plan.unroll ? ", unrolled" : ""
      }${plan.subgroup ? `, subgroup ${plan.subgroup}` : ""}`
      : "stock (not planned)";
    const named = { default: "", doubled: "double-buffered unrolled ", subgroup: "subgroup " }[variant];
    out.push(
      result(
        `matmul ${named}${c.what}`,
        `${JSON.stringify(c.a)} x ${JSON.stringify(c.b)}, ${detail}`,
        relativeError(await y.data(), refData),
        tolerance,
      ),
    );
    tf.dispose([a, b, y, ref]);
  }
  return out;
};

/** `x` rounded to f16 on the host (what the f16 kernels see), as a new tensor. */
const roundedToHalf = async (x: tf.Tensor): Promise<tf.Tensor> =>
  tf.tensor(Float32Array.from(await x.data() as Float32Array, Math.f16round), x.shape);

/**
 * The tiled matmul with f16 operands (`--precision f16`) against tfjs's own kernel on the same operands
 * rounded to f16 on the host: f32 accumulation must match that reference to f32 rounding (`tolerance`),
 * per-slice f16 accumulation to `halfTolerance` (its partial sums carry 11 bits).
 */
export const checkMatMulF16 = async (
  cases: readonly MatMulCase[],
  tolerance = 1e-5,
  halfTolerance = 3e-3,
): Promise<CheckResult[]> => {
  const out: CheckResult[] = [];
  let k = key(17);
  const backend = tf.backend() as WebGPUBackend;
  for (const c of cases) {
    const [kc, next] = split(k);
    k = next;
    const [a, b] = randomPair(kc, c.a, c.b);
    const [ah, bh] = [await roundedToHalf(a), await roundedToHalf(b)];
    restoreStockMatMul();
    const ref = tf.matMul(ah, bh, c.ta, c.tb);
    const refData = await ref.data();
    registerFastMatMul();
    const base = planMatMul(c.a, c.b, c.ta, c.tb, undefined, "f16");
    if (base === null) throw new Error(`checkMatMulF16: ${c.what} is not planned by the tiled kernel`);
    for (const accumulate of ["f32", "f16"] as const) {
      const plan = planMatMul(
        c.a,
        c.b,
        c.ta,
        c.tb,
        { tile: base.tile, splits: base.splits, accumulate },
        "f16",
      )!;
      const y = await withErrorScope(async () => {
        const y = toTensor(runMatMul(backend, a, b, plan));
        await y.data();
        return y;
      });
      out.push(
        result(
          `matmul f16 (${accumulate} accumulation) ${c.what}`,
          `${JSON.stringify(c.a)} x ${JSON.stringify(c.b)}, tile ${plan.tile.bm}, splits ${plan.splits}`,
          relativeError(await y.data(), refData),
          accumulate === "f32" ? tolerance : halfTolerance,
        ),
      );
      y.dispose();
    }
    tf.dispose([a, b, ah, bh, ref]);
  }
  return out;
};

/** A linear layer's product `x W + b`: `x: [M, K]`, `W: [K, N]`, `b: [N]`. */
export interface MatMulBiasCase {
  readonly x: readonly [number, number];
  readonly w: readonly [number, number];
  readonly what: string;
}

/**
 * Small cases on 64 x 64 tiles: the bias in the epilogue with vec4 and with scalar stores (N % 4 != 0,
 * ragged M and N), and in the split-sum pass with vec4 and scalar sums (N % 4 != 0 with M N % 4 == 0,
 * where the unbiased sum would have gone vec4).
 */
export const smallMatMulBiasCases: readonly MatMulBiasCase[] = [
  { x: [37, 16], w: [16, 48], what: "epilogue, vec4 stores, ragged M" },
  { x: [37, 24], w: [24, 37], what: "epilogue, scalar stores (N % 4 != 0)" },
  { x: [40, 2048], w: [2048, 48], what: "split K, vec4 sum" },
  { x: [40, 1024], w: [1024, 30], what: "split K, scalar sum (N % 4 != 0)" },
];

/** Linear layers at the model's shapes (ViT-B/16 batch 32, 99 tokens; ViT-T batch 32, 167 tokens). */
export const modelMatMulBiasCases: readonly MatMulBiasCase[] = [
  { x: [3168, 768], w: [768, 2304], what: "ViT-B qkv (128x128 tiles)" },
  { x: [3168, 3072], w: [3072, 768], what: "ViT-B fc2 (split K)" },
  { x: [3168, 768], w: [768, 512], what: "ViT-B head into the CLIP width" },
  { x: [5344, 192], w: [192, 768], what: "ViT-T fc1" },
];

/**
 * The fused `x W + b` ({@link matMulBias}) against `tf.add(tf.matMul(x, W), b)` on tfjs's own kernels
 * (WebGPU), per precision: f32 on the same operands; f16 against the reference on `x` and `W` rounded to
 * f16 on the host (the bias stays f32 in both), which f32 accumulation must match to f32 rounding. A
 * case the fused kernel does not take fails (relative error Infinity). `precisions` defaults to f32, and
 * f16 where the device has `shader-f16`. Leaves the tiled matmul registered and the precision as found.
 */
export const checkMatMulBias = async (
  cases: readonly MatMulBiasCase[],
  precisions?: readonly MatMulPrecision[],
  tolerance = 1e-5,
): Promise<CheckResult[]> => {
  const backend = tf.backend() as WebGPUBackend;
  const run = precisions ?? (backend.device.features.has("shader-f16") ? ["f32", "f16"] : ["f32"]);
  const before = matMulPrecision();
  const out: CheckResult[] = [];
  let k = key(61);
  try {
    for (const c of cases) {
      const [kc, kb, next] = split(k, 3);
      k = next;
      const [x, w] = randomPair(kc, [...c.x], [...c.w]);
      const bias = tf.randomNormal([c.w[1]], 0, 1, "float32", seedOf(kb));
      for (const precision of run) {
        const [xr, wr] = precision === "f16" ? [await roundedToHalf(x), await roundedToHalf(w)] : [x, w];
        restoreStockMatMul();
        const ref = tf.tidy(() => tf.add(tf.matMul(xr, wr), bias));
        const refData = await ref.data();
        registerFastMatMul();
        setMatMulPrecision(precision);
        const plan = planMatMul(c.x, c.w, false, false);
        const y = await withErrorScope(async () => {
          const y = matMulBias(x as tf.Tensor2D, w as tf.Tensor2D, bias as tf.Tensor1D);
          await y?.data();
          return y;
        });
        const detail = `${JSON.stringify(c.x)} x ${JSON.stringify(c.w)} + b, ` +
          (y && plan ? `tile ${plan.tile.bm}, splits ${plan.splits}` : "not taken by the fused kernel");
        out.push(
          result(
            `matmul+bias ${precision} ${c.what}`,
            detail,
            y ? relativeError(await y.data(), refData) : Infinity,
            tolerance,
          ),
        );
        tf.dispose([ref, ...(y ? [y] : []), ...(precision === "f16" ? [xr, wr] : [])]);
      }
      tf.dispose([x, w, bias]);
    }
  } finally {
    setMatMulPrecision(before);
  }
  return out;
};

/**
 * `packHalf` then `unpackHalf` (the f16 saved tensors) against `Math.f16round` on normal values over f16's
 * range, and the overflow rule: past 65504 an infinity of the sign, NaN stays NaN.
 */
export const checkHalfPack = async (shape: readonly number[] = [3, 70, 96]): Promise<CheckResult[]> => {
  const n = shape.reduce((a, b) => a * b, 1);
  const host = new Float32Array(n);
  // Magnitudes 2^-14 (f16's smallest normal) to 2^15, both signs, deterministic.
  for (let i = 0; i < n; i++) {
    host[i] = (i % 2 ? -1 : 1) * 2 ** (-14 + ((i * 7919) % 2900) / 100) * (1 + (i % 13) / 17);
  }
  const x = tf.tensor(host, [...shape]);
  const packed = packHalf(x);
  const back = unpackHalf(packed);
  const got = await back.data() as Float32Array;
  const want = Float32Array.from(host, Math.f16round);
  const specials = tf.tensor([70000, -1e9, NaN, 65504, -65519, 65520], [6]);
  const sp = unpackHalf(packHalf(specials));
  const s = await sp.data();
  const specialsOk = s[0] === Infinity && s[1] === -Infinity && Number.isNaN(s[2]) && s[3] === 65504 &&
    s[4] === -65504 && s[5] === Infinity;
  tf.dispose([x, packed, back, specials, sp]);
  return [
    result(
      "f16 pack/unpack (saved tensors)",
      `${JSON.stringify(shape)}, normal range`,
      relativeError(got, want),
      0,
    ),
    result(
      "f16 pack overflow rule",
      `70000, -1e9, NaN, 65504, -65519, 65520 -> ${[...s].join(", ")}`,
      specialsOk ? 0 : 1,
      0,
    ),
  ];
};

/** Gradients through the tiled matmul against those through the stock kernel. */
export const checkMatMulGrad = async (tolerance = 1e-5): Promise<CheckResult[]> => {
  const [x, w] = randomPair(key(11), [90, 40], [40, 52]);
  const f = (x: tf.Tensor, w: tf.Tensor) => tf.sum(tf.square(tf.matMul(x, w)));
  const run = async () => {
    const gs = tf.grads(f)([x, w]);
    const out = await Promise.all(gs.map((g) => g.data()));
    tf.dispose(gs);
    return out;
  };
  restoreStockMatMul();
  const stock = await run();
  registerFastMatMul();
  const fast = await run();
  tf.dispose([x, w]);
  return ["dx", "dw"].map((n, i) =>
    result(`matmul gradient ${n}`, "[90,40] x [40,52]", relativeError(fast[i], stock[i]), tolerance)
  );
};

/**
 * Runs `f` with the kernels off (reference) and on (fused) and compares every output array. `f` gets a
 * fresh set of inputs each time from `inputs` and returns float arrays by name.
 */
const compare = async (
  name: string,
  detail: string,
  tolerance: number,
  f: () => Promise<Record<string, Float32Array>>,
): Promise<CheckResult[]> => {
  restoreStockKernels();
  const ref = await f();
  registerKernels();
  let got: Record<string, Float32Array>;
  try {
    got = await withErrorScope(f);
  } finally {
    restoreStockKernels();
  }
  return Object.keys(ref).map((k) =>
    result(`${name} ${k}`, detail, relativeError(got[k], ref[k]), tolerance)
  );
};

/** Fused LayerNorm (value and the three gradients) against lib/nn/norm.ts on random inputs. */
export const checkLayerNorm = (shape: number[], eps = 1e-6, tolerance = 2e-5): Promise<CheckResult[]> => {
  const d = shape[shape.length - 1];
  const [k1, k2, k3, k4] = split(key(21), 4);
  return compare("layernorm", JSON.stringify(shape), tolerance, async () => {
    const x = tf.tidy(() => tf.add(tf.randomNormal(shape, 0, 2, "float32", seedOf(k1)), 0.5));
    const scale = tf.randomNormal([d], 1, 0.3, "float32", seedOf(k2));
    const bias = tf.randomNormal([d], 0, 0.3, "float32", seedOf(k3));
    const w = tf.randomNormal(shape, 0, 1, "float32", seedOf(k4));
    const f = (x: tf.Tensor, s: tf.Tensor, b: tf.Tensor) =>
      layerNorm({ scale: s as tf.Tensor1D, bias: b as tf.Tensor1D }, x, eps);
    const y = tf.tidy(() => f(x, scale, bias));
    const grads = tf.grads((x: tf.Tensor, s: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(f(x, s, b), w)))([
      x,
      scale,
      bias,
    ]);
    const out = {
      y: await y.data() as Float32Array,
      dx: await grads[0].data() as Float32Array,
      dscale: await grads[1].data() as Float32Array,
      dbias: await grads[2].data() as Float32Array,
    };
    tf.dispose([x, scale, bias, w, y, ...grads]);
    return out;
  });
};

/** Fused GELU / QuickGELU (value and gradient) against lib/nn/mlp.ts. */
export const checkGelu = (shape: number[], quick: boolean, tolerance = 1e-5): Promise<CheckResult[]> => {
  const [k1, k2] = split(key(31));
  return compare(quick ? "quickgelu" : "gelu", JSON.stringify(shape), tolerance, async () => {
    const x = tf.randomNormal(shape, 0, 2, "float32", seedOf(k1));
    const w = tf.randomNormal(shape, 0, 1, "float32", seedOf(k2));
    const act = (x: tf.Tensor) => fusedActivation(x, quick) ?? (quick ? quickGelu(x) : gelu(x));
    const y = tf.tidy(() => act(x));
    const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(act(x), w)))(x);
    const out = { y: await y.data() as Float32Array, dx: await g.data() as Float32Array };
    tf.dispose([x, w, y, g]);
    return out;
  });
};

/** Two updates of the fused AdamW against the reference chain (updates and both moments). */
export const checkAdamw = async (tolerance = 5e-5): Promise<CheckResult[]> => {
  const shapes: Record<string, number[]> = { "blk.w": [37, 5], "blk.bias": [64], "head.kernel": [16, 8] };
  const opts = { lr: 1e-2, weightDecay: 0.05, clip: 0.5 };
  const [kp, kg] = split(key(41));
  const run = async (): Promise<Record<string, Float32Array>> => {
    const opt = fusedAdamw(opts);
    const params: Params = Object.fromEntries(
      Object.entries(shapes).map((
        [n, s],
        i,
      ) => [n, tf.randomNormal(s, 0, 1, "float32", seedOf(split(kp, 3)[i]))]),
    );
    let state = opt.init(params);
    const out: Record<string, Float32Array> = {};
    for (let step = 0; step < 2; step++) {
      const grads: Params = Object.fromEntries(
        Object.entries(shapes).map(([n, s], i) => [
          n,
          tf.randomNormal(s, 0, 1, "float32", seedOf(split(kg, 6)[step * 3 + i])),
        ]),
      );
      const [u, next] = opt.update(grads, state, params);
      for (const [n, t] of Object.entries(flatten(u))) {
        out[`step${step}.update.${n}`] = await t.data() as Float32Array;
      }
      for (const [n, t] of Object.entries(flatten(next[1].mu))) {
        out[`step${step}.mu.${n}`] = await t.data() as Float32Array;
      }
      for (const [n, t] of Object.entries(flatten(next[1].nu))) {
        out[`step${step}.nu.${n}`] = await t.data() as Float32Array;
      }
      tf.dispose([...tensorsIn(grads), ...tensorsIn(u), ...tensorsIn(state)]);
      state = next;
    }
    tf.dispose([...tensorsIn(state), ...tensorsIn(params)]);
    return out;
  };
  return await compare("adamw", "clip 0.5, wd 0.05, 2 steps", tolerance, run);
};

/** Full sums (two-stage kernel) and the Tile gradient (broadcastTo) against the stock ones. */
export const checkReduceAndTile = (size = 100_003, tolerance = 1e-5): Promise<CheckResult[]> => {
  const [k1, k2, k3] = split(key(51), 3);
  return compare("reduce/tile", `sum of ${size}, broadcastTo [1,1,24] -> [5,7,24]`, tolerance, async () => {
    const x = tf.randomNormal([size], 0, 1, "float32", seedOf(k1));
    const x4 = tf.randomNormal([64, 1024], 0, 1, "float32", seedOf(k3));
    const tok = tf.randomNormal([1, 1, 24], 0, 1, "float32", seedOf(k2));
    const w = tf.randomNormal([5, 7, 24], 0, 1, "float32", seedOf(k3));
    const s = tf.sum(x), s4 = tf.sum(x4, [0, 1], true);
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.broadcastTo(t, [5, 7, 24]), w)))(tok);
    const out = {
      sum: await s.data() as Float32Array,
      sumKeepDims: await s4.data() as Float32Array,
      tileGrad: await g.data() as Float32Array,
    };
    if (s4.shape.join() !== "1,1") throw new Error(`keepDims sum has shape [${s4.shape}]`);
    tf.dispose([x, x4, tok, w, s, s4, g]);
    return out;
  });
};

/** Formats check results as lines. */
export const formatChecks = (rs: readonly CheckResult[]): string =>
  rs.map((r) =>
    `${r.ok ? "ok  " : "FAIL"} ${r.name}: rel err ${
      r.relErr.toExponential(2)
    } (tol ${r.tolerance}) ${r.detail}`
  ).join("\n");

/**
 * The MLP's first layer off the tape (`act(x W + b)` in one kernel, the activation in the matmul's
 * epilogue: lib/nn/mlp.ts) against the separate kernels (the fused `x W + b`, then the fused activation)
 * on the same inputs: the same WGSL on the same values, so equal to f32 rounding (`tolerance`). `x`:
 * `[M, D]` rows, `hidden` units; GELU and QuickGELU. Leaves the kernels registered.
 */
export const checkMlpEpilogue = async (
  cases: readonly { readonly rows: number; readonly dim: number; readonly hidden: number }[],
  tolerance = 1e-6,
): Promise<CheckResult[]> => {
  registerKernels();
  const out: CheckResult[] = [];
  let k = key(29);
  for (const c of cases) {
    const [kx, kw, next] = split(k, 3);
    k = next;
    const x = tf.randomNormal([c.rows, c.dim], 0, 1, "float32", seedOf(kx)) as tf.Tensor2D;
    const w = tf.randomNormal([c.dim, c.hidden], 0, 0.05, "float32", seedOf(kw)) as tf.Tensor2D;
    const b = tf.randomNormal([c.hidden], 0, 0.05, "float32", seedOf(kw) + 1) as tf.Tensor1D;
    for (const act of ["gelu", "quickGelu"] as const) {
      const h = matMulBias(x, w, b);
      const fused = matMulBias(x, w, b, act);
      const detail = `[${c.rows}, ${c.dim}] x [${c.dim}, ${c.hidden}]`;
      if (h === undefined || fused === undefined) {
        out.push(result(`matmul+bias+${act} epilogue`, `${detail}: not planned`, Infinity, tolerance));
        continue;
      }
      const ref = fusedActivation(h, act === "quickGelu")!;
      out.push(
        result(
          `matmul+bias+${act} epilogue`,
          detail,
          relativeError(await fused.data(), await ref.data()),
          tolerance,
        ),
      );
      tf.dispose([h, fused, ref]);
    }
    tf.dispose([x, w, b]);
  }
  return out;
};

/**
 * An attention case: `batch` sequences of `nq` queries over `nk` keys, width `dim` in `heads` heads;
 * self-attention reads q, k, v from one `[B, N, 3D]` projection (`nq` = `nk`), cross-attention from three.
 */
export interface HeadAttentionCase {
  readonly batch: number;
  readonly nq: number;
  readonly nk: number;
  readonly dim: number;
  readonly heads: number;
  readonly cross: boolean;
  readonly what: string;
}

/** Small cases: both kinds, ragged token counts, and a head width that is not a multiple of 4 (scalar access). */
export const smallHeadAttentionCases: readonly HeadAttentionCase[] = [
  { batch: 2, nq: 37, nk: 37, dim: 48, heads: 3, cross: false, what: "self, dh 16" },
  { batch: 2, nq: 13, nk: 29, dim: 32, heads: 2, cross: true, what: "cross, dh 16" },
  { batch: 2, nq: 11, nk: 11, dim: 18, heads: 3, cross: false, what: "self, dh 6 (scalar loads)" },
];

/** The model's attention: ViT-B/16 student (99 visible tokens) and teacher (197), ViT-T, the regressor. */
export const modelHeadAttentionCases: readonly HeadAttentionCase[] = [
  { batch: 32, nq: 99, nk: 99, dim: 768, heads: 12, cross: false, what: "ViT-B student" },
  { batch: 32, nq: 197, nk: 197, dim: 768, heads: 12, cross: false, what: "CLIP-B/16 teacher" },
  { batch: 32, nq: 98, nk: 99, dim: 768, heads: 12, cross: true, what: "ViT-B regressor" },
  { batch: 64, nq: 99, nk: 99, dim: 192, heads: 3, cross: false, what: "ViT-T student" },
];

/**
 * Attention with the heads read in place (lib/nn/sdpa.ts `headAttention`, the `CaeHeadMatMul` products)
 * against the composition it replaces, on the same tiled matmul: heads split by transposes and slices,
 * `attentionCore`, heads merged by a transpose. The value and the gradient of every source, at the
 * precision set now (lib/core/precision.ts). The products are the same term for term, so they agree to
 * the bit where the compiler treats both alike (lavapipe: the tests ask for 0); `tolerance` leaves a
 * driver room to contract the scale differently. Leaves the kernels registered.
 */
export const checkHeadAttention = async (
  cases: readonly HeadAttentionCase[],
  tolerance = 1e-6,
): Promise<CheckResult[]> => {
  registerKernels();
  const out: CheckResult[] = [];
  let k = key(31);
  for (const c of cases) {
    const [ks, kw, next] = split(k, 3);
    k = next;
    const d = c.dim;
    const shapes: [number, number, number][] = c.cross
      ? [[c.batch, c.nq, d], [c.batch, c.nk, d], [c.batch, c.nk, d]]
      : [[c.batch, c.nq, 3 * d]];
    const sources = shapes.map((s, i) => tf.randomNormal(s, 0, 1, "float32", seedOf(ks) + i) as tf.Tensor3D);
    const weights = tf.randomNormal([c.batch, c.nq, d], 0, 1, "float32", seedOf(kw));
    const layout: HeadLayout = c.cross
      ? { q: [0, 0], k: [1, 0], v: [2, 0] }
      : { q: [0, 0], k: [0, d], v: [0, 2 * d] };
    const fused = gradients(
      (...xs) => tf.sum(tf.mul(headAttention(xs as tf.Tensor3D[], layout, c.heads), weights)),
      sources,
    );
    const reference = gradients((...xs) => {
      const part = (at: HeadAt) => splitHeads(slice(xs[at[0]], [0, 0, at[1]], [-1, -1, d]), c.heads);
      return tf.sum(
        tf.mul(mergeHeads(attentionCore(part(layout.q), part(layout.k), part(layout.v))), weights),
      );
    }, sources);
    const detail =
      `${c.what}: B ${c.batch}, ${c.nq} x ${c.nk} tokens, D ${d}, ${c.heads} heads, ${precision()}`;
    out.push(
      result(
        "head attention",
        detail,
        relativeError(await fused.value.data(), await reference.value.data()),
        tolerance,
      ),
    );
    for (let i = 0; i < sources.length; i++) {
      const e = relativeError(await fused.grads[i].data(), await reference.grads[i].data());
      out.push(result(`head attention d${c.cross ? ["q", "k", "v"][i] : "qkv"}`, detail, e, tolerance));
    }
    tf.dispose([...sources, weights, fused.value, ...fused.grads, reference.value, ...reference.grads]);
  }
  return out;
};

/**
 * The activation's gradient in a product's epilogue (lib/core/kernels/matmul.ts `matMulActGrad`, the MLP's
 * backward pass) against the product then the fused activation gradient on the same inputs: the same WGSL
 * on the same values, equal to f32 rounding (`tolerance`; the tests ask for 0 on lavapipe). `rows` of the
 * MLP's output width `dim` into `hidden` units; GELU and QuickGELU. Leaves the kernels registered.
 */
export const checkMatMulActGrad = async (
  cases: readonly { readonly rows: number; readonly dim: number; readonly hidden: number }[],
  tolerance = 1e-6,
): Promise<CheckResult[]> => {
  registerKernels();
  const out: CheckResult[] = [];
  let k = key(37);
  for (const c of cases) {
    const [kg, kw, ku, next] = split(k, 4);
    k = next;
    const g = tf.randomNormal([c.rows, c.dim], 0, 1, "float32", seedOf(kg)) as tf.Tensor2D;
    const w = tf.randomNormal([c.hidden, c.dim], 0, 0.05, "float32", seedOf(kw)) as tf.Tensor2D;
    const u = tf.randomNormal([c.rows, c.hidden], 0, 2, "float32", seedOf(ku)) as tf.Tensor2D;
    for (const act of ["gelu", "quickGelu"] as const) {
      const detail = `[${c.rows}, ${c.dim}] x [${c.hidden}, ${c.dim}]^T, ${matMulPrecision()}`;
      const fused = matMulActGrad(g, w, u, act);
      if (fused === undefined) {
        out.push(result(`matmul+${act}' epilogue`, `${detail}: not planned`, Infinity, tolerance));
        continue;
      }
      const dy = tf.matMul(g, w, false, true);
      const ref = fusedActivationGrad(u, dy, act === "quickGelu")!;
      out.push(
        result(
          `matmul+${act}' epilogue`,
          detail,
          relativeError(await fused.data(), await ref.data()),
          tolerance,
        ),
      );
      tf.dispose([fused, dy, ref]);
    }
    tf.dispose([g, w, u]);
  }
  return out;
};

/**
 * The residual connection in the epilogue of a branch's last product (lib/nn/residual.ts `residualLinear`:
 * `r + dropPath(gamma (x W + b))`, and the teacher's plain `r + x W + b`) against the fused `x W + b` then
 * the separate ops (`scaledResidual`, `tf.add`): equal to f32 rounding (`tolerance`; the tests ask for 0
 * on lavapipe). `rows` in 4 samples (drop-path factors 0, 2, 1.25, 1). Leaves the kernels registered.
 */
export const checkResidualEpilogue = async (
  cases: readonly { readonly rows: number; readonly dim: number; readonly out: number }[],
  tolerance = 1e-6,
): Promise<CheckResult[]> => {
  registerKernels();
  const out: CheckResult[] = [];
  let k = key(47);
  for (const c of cases) {
    const [kx, kw, kr, next] = split(k, 4);
    k = next;
    const x = tf.randomNormal([c.rows, c.dim], 0, 1, "float32", seedOf(kx)) as tf.Tensor2D;
    const w = tf.randomNormal([c.dim, c.out], 0, 0.05, "float32", seedOf(kw)) as tf.Tensor2D;
    const b = tf.randomNormal([c.out], 0, 0.05, "float32", seedOf(kw) + 1) as tf.Tensor1D;
    const r = tf.randomNormal([c.rows, c.out], 0, 1, "float32", seedOf(kr)) as tf.Tensor2D;
    const gamma = tf.randomNormal([c.out], 0, 0.5, "float32", seedOf(kr) + 1) as tf.Tensor1D;
    const factors = Float32Array.of(0, 2, 1.25, 1);
    const s = tf.tensor1d(factors);
    const y = matMulBias(x, w, b);
    for (const scaled of [false, true]) {
      const what = `matmul+bias+${scaled ? "layer scale+drop path+" : ""}residual epilogue`;
      const detail = `[${c.rows}, ${c.dim}] x [${c.dim}, ${c.out}], ${matMulPrecision()}`;
      const fused = matMulBias(
        x,
        w,
        b,
        "none",
        scaled ? { x: r, gamma, rowScale: s, rowsPer: c.rows / 4 } : { x: r },
      );
      if (fused === undefined || y === undefined) {
        out.push(result(what, `${detail}: not planned`, Infinity, tolerance));
        fused?.dispose();
        continue;
      }
      const ref = tf.tidy(() => {
        if (!scaled) return tf.add(r, y);
        const r3 = tf.reshape(r, [4, -1, c.out]), y3 = tf.reshape(y, [4, -1, c.out]);
        return tf.reshape(scaledResidual(r3, y3, gamma, factors), [c.rows, c.out]);
      });
      out.push(result(what, detail, relativeError(await fused.data(), await ref.data()), tolerance));
      tf.dispose([fused, ref]);
    }
    tf.dispose([x, w, b, r, gamma, s, ...(y ? [y] : [])]);
  }
  return out;
};
