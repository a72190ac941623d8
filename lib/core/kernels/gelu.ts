/**
 * GELU (exact, erf form) and QuickGELU as single WebGPU kernels, forward and backward, registered as the
 * tfjs kernels `CaeGelu` / `CaeGeluGrad` (attribute `quick`) with a registered gradient. References:
 * `gelu` and `quickGelu` in lib/nn/mlp.ts. erf is tfjs's own WebGPU approximation (Abramowitz & Stegun
 * 7.1.26, the constants of tfjs-core's backend_util), so the fused value matches the reference's to
 * float32 rounding; the derivative is the reference's autodiff result in closed form:
 * `0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi)`, and for QuickGELU
 * `s + 1.702 x s (1 - s)`, `s = sigmoid(1.702 x)`.
 *
 * Why: the reference is 5 kernels forward and ~10 backward on the MLP's widest tensor ([B N, 4D]); fused,
 * each direction reads and writes it once.
 *
 * @module
 */
import { tf, type WebGPUBackend } from "../../deps.ts";
import { type Program, runProgram, type TensorInfo } from "./program.ts";

const WG = 256;

/** WGSL of `erf_` and `sigmoid_` on vec4 (the fused activation's, and the matmul epilogue's: one text). */
export const ACTIVATION_WGSL = `
fn erf_(a: vec4<f32>) -> vec4<f32> {
  // tfjs-backend-webgpu's ERF (Abramowitz & Stegun 7.1.26).
  let p = 0.3275911;
  let a1 = 0.254829592;
  let a2 = -0.284496736;
  let a3 = 1.421413741;
  let a4 = -1.453152027;
  let a5 = 1.061405429;
  let s = sign(a);
  let v = abs(a);
  let t = 1.0 / (1.0 + p * v);
  return s * (1.0 - (((((a5 * t + a4) * t) + a3) * t + a2) * t + a1) * t * exp(-v * v));
}
fn sigmoid_(a: vec4<f32>) -> vec4<f32> { return 1.0 / (1.0 + exp(-1.0 * a)); }
`;

/** Elementwise over vec4 (size a multiple of 4) or scalars lifted to vec4. */
const program = (name: string, inputs: string[], n: number, expr: string): Program => {
  const vec = n % 4 === 0;
  const load = (v: string) => vec ? `${v}[index]` : `vec4<f32>(${v}[index], 0.0, 0.0, 0.0)`;
  return {
    variableNames: inputs,
    variableComponents: inputs.map(() => (vec ? 4 : 1)),
    outputShape: [n],
    outputComponent: vec ? 4 : 1,
    shaderKey: `caeGelu_${name}_${+vec}`,
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(n / (vec ? 4 : 1) / WG), 1, 1],
    workgroupSize: [WG, 1, 1],
    uniforms: "n : i32,",
    getUserCode: () =>
      `${ACTIVATION_WGSL}
fn main(index: i32) {
  if (index >= uniforms.n) { return; }
  ${inputs.map((v) => `let ${v.toLowerCase()} = ${load(v)};`).join("\n  ")}
  let r = ${expr};
  result[index] = r${vec ? "" : ".x"};
}
`,
  };
};

/** WGSL of the activation of a vec4 `x` (with {@link ACTIVATION_WGSL}). */
export const forwardExpr = (quick: boolean): string =>
  quick
    ? "x * sigmoid_(x * 1.702)" // lib/nn/mlp.ts quickGelu
    : "(x * 0.5) * (erf_(x * 0.7071067811865476) + 1.0)"; // lib/nn/mlp.ts gelu, same grouping

/** WGSL of `dy act'(x)` for vec4 `dy` and `x` (with {@link ACTIVATION_WGSL}). */
export const gradExpr = (quick: boolean): string =>
  quick
    ? "dy * (sigmoid_(x * 1.702) + 1.702 * x * sigmoid_(x * 1.702) * (1.0 - sigmoid_(x * 1.702)))"
    : "dy * (0.5 * (1.0 + erf_(x * 0.7071067811865476)) + x * exp(-0.5 * x * x) * 0.3989422804014327)";

type KernelArgs = { inputs: Record<string, TensorInfo>; backend: WebGPUBackend; attrs: { quick: boolean } };

const size = (t: TensorInfo) => t.shape.reduce((a, b) => a * b, 1);

const run = (backend: WebGPUBackend, name: string, ins: TensorInfo[], expr: string, shape: number[]) => {
  const n = size(ins[0]);
  const out = runProgram(
    backend,
    program(name, ins.length === 1 ? ["X"] : ["X", "DY"], n, expr),
    ins.map((t) => ({ ...t, shape: [n] })),
    [{ type: "int32", data: [n % 4 === 0 ? n / 4 : n] }],
  );
  return { ...out, shape: [...shape] };
};

/** Registers `CaeGelu` (+ gradient) and `CaeGeluGrad` for webgpu (idempotent). */
export const registerGeluKernels = (): void => {
  if (tf.getKernel("CaeGelu", "webgpu") !== undefined) return;
  const reg = (kernelName: string, f: (a: KernelArgs) => TensorInfo) =>
    tf.registerKernel({
      kernelName,
      backendName: "webgpu",
      kernelFunc: f as unknown as Parameters<typeof tf.registerKernel>[0]["kernelFunc"],
    });
  reg(
    "CaeGelu",
    ({ inputs, backend, attrs }) =>
      run(backend, attrs.quick ? "quick" : "erf", [inputs.x], forwardExpr(attrs.quick), inputs.x.shape),
  );
  reg("CaeGeluGrad", ({ inputs, backend, attrs }) =>
    run(
      backend,
      attrs.quick ? "quickGrad" : "erfGrad",
      [inputs.x, inputs.dy],
      gradExpr(attrs.quick),
      inputs.x.shape,
    ));
  tf.registerGradient({
    kernelName: "CaeGelu",
    inputsToSave: ["x"],
    gradFunc: (dy, saved, attrs) => ({
      x: () =>
        tf.engine().runKernel(
          "CaeGeluGrad",
          { x: saved[0], dy: dy as tf.Tensor },
          attrs as unknown as tf.NamedAttrMap,
        ) as tf.Tensor,
    }),
  });
};

/** The fused activation on WebGPU (kernels must be registered). */
export const geluKernel = (x: tf.Tensor, quick: boolean): tf.Tensor =>
  tf.engine().runKernel("CaeGelu", { x }, { quick }) as tf.Tensor;

/** The fused activation's gradient `dy * act'(x)` on WebGPU (kernels must be registered). */
export const geluGradKernel = (x: tf.Tensor, dy: tf.Tensor, quick: boolean): tf.Tensor =>
  tf.engine().runKernel("CaeGeluGrad", { x, dy }, { quick }) as tf.Tensor;

/** Unregisters `CaeGelu` and `CaeGeluGrad` (idempotent): the references run again. */
export const unregisterGeluKernels = (): void => {
  for (const k of ["CaeGelu", "CaeGeluGrad"]) {
    if (tf.getKernel(k, "webgpu") !== undefined) tf.unregisterKernel(k, "webgpu");
  }
};
