/**
 * Full float32 sums (every axis reduced) on WebGPU in two stages, registered over tfjs's `Sum` kernel for
 * that case (the stock kernel keeps partial reductions). Stage 1: 256 workgroups of 256 threads each sum a
 * strided share of the tensor (vec4 loads) and reduce in workgroup memory to one partial; stage 2: one
 * workgroup sums the 256 partials.
 *
 * Why: tfjs 4.22 reduces a whole tensor with a single workgroup; on the H200 `tf.sum` of a 2.4M-element
 * gradient takes 2.6 ms (10M elements: 15 ms of GPU time, phase-1 figures), and the training step's
 * gradient norm (lib/optim/clip.ts `globalNorm`, ~200 tensors) spent 143 ms per ViT-B step there.
 *
 * @module
 */
import { tf, type WebGPUBackend } from "../../deps.ts";
import { type Program, runProgram, type TensorInfo } from "./program.ts";
import { type Info, type KernelArgs, kernelOverride } from "./override.ts";
import { foldWorkgroup, stridedPartialSums } from "./wgsl_sum.ts";

const WG = 256;
const PARTS = 256;
/** Below this many elements the stock kernel is as good. */
const MIN_SIZE = 1 << 14;

const stage1 = (vec: boolean): Program => ({
  variableNames: ["X"],
  variableComponents: [vec ? 4 : 1],
  outputShape: [PARTS],
  shaderKey: `caeSumAll1_${+vec}`,
  dispatchLayout: { x: [0] },
  dispatch: [PARTS, 1, 1],
  workgroupSize: [WG, 1, 1],
  uniforms: "n : i32,",
  getUserCode: () =>
    stridedPartialSums("X", WG, PARTS, vec ? "(v.x + v.y) + (v.z + v.w)" : "v", "result[wg] = part[0];"),
});

const stage2 = (): Program => ({
  variableNames: ["P"],
  outputShape: [1],
  shaderKey: "caeSumAll2",
  dispatchLayout: { x: [0] },
  dispatch: [1, 1, 1],
  workgroupSize: [WG, 1, 1],
  // (Every binding must be used: WebGPU's derived layout drops unused ones and tfjs binds them all.)
  uniforms: "n : i32,",
  getUserCode: () => `
var<workgroup> part: array<f32, ${WG}>;
fn main(index: i32) {
  let lid = i32(localId.x);
  let s = select(0.0, P[min(lid, uniforms.n - 1)], lid < uniforms.n);
  ${foldWorkgroup(WG)}
  if (lid == 0) { result[0] = part[0]; }
}
`,
});

/** Sums every element of a float32 tensor; returns a `[1]` TensorInfo. */
export const sumAll = (backend: WebGPUBackend, x: TensorInfo): TensorInfo => {
  const n = x.shape.reduce((a, b) => a * b, 1);
  const vec = n % 4 === 0;
  const parts = runProgram(backend, stage1(vec), [{ ...x, shape: [n] }], [
    { type: "int32", data: [vec ? n / 4 : n] },
  ]);
  const out = runProgram(backend, stage2(), [parts], [{ type: "int32", data: [PARTS] }]);
  backend.disposeData(parts.dataId);
  return out;
};

const sum = (args: KernelArgs, stock: (args: KernelArgs) => Info): Info => {
  const x = (args.inputs as unknown as { x: TensorInfo }).x;
  const { axis, keepDims } = args.attrs as unknown as { axis: number | number[] | null; keepDims: boolean };
  const rank = x.shape.length;
  const axes = tf.util.parseAxisParam(axis ?? null as unknown as number[], x.shape);
  const size = x.shape.reduce((a, b) => a * b, 1);
  const all = new Set(axes).size === rank;
  if (x.dtype !== "float32" || !all || size < MIN_SIZE) return stock(args);
  const out = sumAll(args.backend as WebGPUBackend, x);
  return { ...out, shape: keepDims ? x.shape.map(() => 1) : [] } as unknown as tf.TensorInfo;
};

const override = kernelOverride("Sum", "webgpu", sum);

/** Registers the two-stage full sum over webgpu's Sum (idempotent). */
export const registerFastSum = override.register;

/** Puts tfjs's Sum back (idempotent). */
export const restoreStockSum = override.restore;
