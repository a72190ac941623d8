/**
 * The WebGPU programs of the fused AdamW update, registered as the tfjs kernel `CaeAdamW` (one kernel, so
 * profiles name it). The gradient transformation that calls it, `fusedAdamw`, is lib/optim/fused_adamw.ts:
 * the same arithmetic as `adamw(opts)` in lib/optim/adamw.ts (global-norm clip, Adam with PyTorch's bias
 * correction, decoupled weight decay, the learning rate), per element, in float32.
 *
 * Why: the reference chain runs about 19 small tfjs kernels per parameter tensor (norm, clip, two moments,
 * the direction, decay, lr, the clones between chain members); a ViT has 150-250 parameter tensors, so an
 * update is 3000-5000 dispatches, each paying tfjs's ~50 us of host-side dispatch on the H200 (phase-1
 * op figures). Here: one sum-of-squares pass per tensor into a shared partials buffer plus one pass for
 * the clip factor, then three elementwise passes per tensor (first moment, second moment, update), i.e.
 * 4 per tensor + 1. The arithmetic is the reference's, in float32, per element.
 *
 * @module
 */
import { tf, type WebGPUBackend } from "../../deps.ts";
import { type Program, runProgram, type TensorInfo } from "./program.ts";
import { foldWorkgroup, stridedPartialSums } from "./wgsl_sum.ts";

/** Workgroups per tensor in the sum-of-squares pass (each writes one partial). */
const PARTIALS = 64;
const WG = 256;

/** Partial sums of squares of one tensor into `result[offset .. offset + PARTIALS)` (n: loads). */
const sumSquaresProgram = (vec: boolean, total: number): Program => ({
  variableNames: ["G"],
  variableComponents: [vec ? 4 : 1],
  outputShape: [total],
  shaderKey: `caeSumSquares_${+vec}`,
  dispatchLayout: { x: [0] },
  dispatch: [PARTIALS, 1, 1],
  workgroupSize: [WG, 1, 1],
  uniforms: "n : i32, offset : i32,",
  getUserCode: () =>
    stridedPartialSums(
      "G",
      WG,
      PARTIALS,
      vec ? "dot(v, v)" : "v * v",
      "result[uniforms.offset + wg] = part[0];",
    ),
});

const clipFactorProgram = (): Program => ({
  variableNames: ["P"],
  outputShape: [1],
  shaderKey: "caeClipFactor",
  dispatchLayout: { x: [0] },
  dispatch: [1, 1, 1],
  workgroupSize: [WG, 1, 1],
  uniforms: "n : i32, maxNorm : f32, clip : i32,",
  getUserCode: () => `
var<workgroup> part: array<f32, ${WG}>;
fn main(index: i32) {
  let lid = i32(localId.x);
  var s = 0.0;
  for (var j = lid; j < uniforms.n; j += ${WG}) { s += P[j]; }
  ${foldWorkgroup(WG)}
  if (lid == 0) {
    // lib/optim/clip.ts: min(1, maxNorm / (norm + 1e-6)); 1 without clipping.
    result[0] = select(1.0, min(1.0, uniforms.maxNorm / (sqrt(part[0]) + 1e-6)), uniforms.clip != 0);
  }
}
`,
});

/** One elementwise pass; `body` assigns `r` from the loaded inputs (vec4 or f32 each). */
const elementwiseProgram = (
  name: string,
  inputs: string[],
  n: number,
  vec: boolean,
  body: string,
): Program => ({
  variableNames: inputs,
  variableComponents: inputs.map((v) => (v === "C" ? 1 : vec ? 4 : 1)),
  outputShape: [n],
  outputComponent: vec ? 4 : 1,
  shaderKey: `caeAdamW_${name}_${+vec}`,
  dispatchLayout: { x: [0] },
  dispatch: [Math.ceil(n / (vec ? 4 : 1) / WG), 1, 1],
  workgroupSize: [WG, 1, 1],
  uniforms:
    "n : i32, b1 : f32, b2 : f32, c1 : f32, c2 : f32, eps : f32, invBc1 : f32, invSqrtBc2 : f32, wd : f32, lr : f32,",
  getUserCode: () => `
fn main(index: i32) {
  if (index >= uniforms.n) { return; }
  let c = C[0];
  ${inputs.filter((v) => v !== "C").map((v) => `let ${v.toLowerCase()} = ${v}[index];`).join("\n  ")}
  ${body}
  result[index] = r;
}
`,
});

/** The kernel's name. */
export const ADAMW_KERNEL = "CaeAdamW";

/** Attributes of the `CaeAdamW` kernel. */
export interface AdamWAttrs {
  readonly count: number;
  readonly b1: number;
  readonly b2: number;
  readonly eps: number;
  readonly wd: number;
  readonly lr: number;
  /** Clip threshold, or 0 for no clipping. */
  readonly clip: number;
  /** Per tensor: whether it decays. */
  readonly decays: boolean[];
}

/**
 * The whole update as one tfjs kernel (so profiles name it): inputs `g0.., m0.., v0.., p0..`, outputs
 * `[updates..., mu..., nu...]` flat (the caller reshapes).
 */
const adamwKernel = (
  { inputs, backend, attrs }: {
    inputs: Record<string, TensorInfo>;
    backend: WebGPUBackend;
    attrs: AdamWAttrs;
  },
): TensorInfo[] => {
  const n = attrs.decays.length;
  const floats = (xs: number[]) => xs.map((x) => ({ type: "float32" as const, data: [x] }));
  const int = (x: number) => ({ type: "int32" as const, data: [x] });
  const flatInfo = (t: TensorInfo): TensorInfo => ({ ...t, shape: [t.shape.reduce((a, b) => a * b, 1)] });
  const at = (k: string, i: number) => flatInfo(inputs[`${k}${i}`]);
  // Clip factor (a [1] tensor on the GPU): sums of squares per tensor into one partials buffer.
  const total = n * PARTIALS;
  const partials = backend.makeTensorInfo([total], "float32") as unknown as TensorInfo;
  for (let i = 0; i < n; i++) {
    const g = at("g", i);
    const vec = g.shape[0] % 4 === 0;
    runProgram(backend, sumSquaresProgram(vec, total), [g], [
      int(g.shape[0] / (vec ? 4 : 1)),
      int(i * PARTIALS),
    ], partials);
  }
  const c = runProgram(backend, clipFactorProgram(), [partials], [
    int(total),
    ...floats([attrs.clip > 0 ? attrs.clip : 1]),
    int(attrs.clip > 0 ? 1 : 0),
  ]);
  backend.disposeData(partials.dataId);
  const { b1, b2, eps, count } = attrs;
  const invBc1 = 1 / (1 - b1 ** count), invSqrtBc2 = 1 / Math.sqrt(1 - b2 ** count);
  const updates: TensorInfo[] = [], mus: TensorInfo[] = [], nus: TensorInfo[] = [];
  for (let i = 0; i < n; i++) {
    const g = at("g", i);
    const size = g.shape[0], vec = size % 4 === 0;
    const run = (prog: Program, ins: TensorInfo[]) =>
      runProgram(backend, prog, [c, ...ins], [
        int(size / (vec ? 4 : 1)),
        // 1 - b1, 1 - b2 in float64 on the host, as the reference computes them.
        ...floats([
          b1,
          b2,
          1 - b1,
          1 - b2,
          eps,
          invBc1,
          invSqrtBc2,
          attrs.decays[i] ? attrs.wd : 0,
          attrs.lr,
        ]),
      ]);
    // lib/optim/adam.ts, with the clipped gradient g * c (lib/optim/clip.ts).
    const mu = run(
      elementwiseProgram(
        "mu",
        ["C", "M", "G"],
        size,
        vec,
        "let r = m * uniforms.b1 + (g * c) * uniforms.c1;",
      ),
      [at("m", i), g],
    );
    const nu = run(
      elementwiseProgram(
        "nu",
        ["C", "V", "G"],
        size,
        vec,
        "let gc = g * c; let r = v * uniforms.b2 + (gc * gc) * uniforms.c2;",
      ),
      [at("v", i), g],
    );
    // Direction, decay (lib/optim/decay.ts: u + p * wd), then -lr (lib/optim/lr.ts).
    updates.push(run(
      elementwiseProgram(
        "update",
        ["C", "M", "V", "P"],
        size,
        vec,
        "let d = (m * uniforms.invBc1) / (sqrt(v) * uniforms.invSqrtBc2 + uniforms.eps); " +
          "let r = (d + p * uniforms.wd) * (-uniforms.lr);",
      ),
      [mu, nu, at("p", i)],
    ));
    mus.push(mu);
    nus.push(nu);
  }
  backend.disposeData(c.dataId);
  return [...updates, ...mus, ...nus];
};

/** Registers `CaeAdamW` for webgpu (idempotent). */
export const registerAdamwKernel = (): void => {
  if (tf.getKernel(ADAMW_KERNEL, "webgpu") !== undefined) return;
  tf.registerKernel({
    kernelName: ADAMW_KERNEL,
    backendName: "webgpu",
    kernelFunc: adamwKernel as unknown as Parameters<typeof tf.registerKernel>[0]["kernelFunc"],
  });
};

/** Unregisters `CaeAdamW` (idempotent): `fusedAdamw` then runs its plain-tfjs path. */
export const unregisterAdamwKernel = (): void => {
  if (tf.getKernel(ADAMW_KERNEL, "webgpu") !== undefined) tf.unregisterKernel(ADAMW_KERNEL, "webgpu");
};
