/**
 * LayerNorm over the last axis as one WebGPU kernel forward and one tfjs kernel (five passes) backward,
 * registered as the tfjs kernels `CaeLayerNorm` / `CaeLayerNormGrad` with a registered gradient. The
 * reference is `layerNorm` in lib/nn/norm.ts (`(x - mean) * rsqrt(var + eps) * scale + bias`, biased
 * variance, two-pass: mean first, then the mean of the squared deviations); the kernel computes the same
 * in float32 with a tree-ordered sum.
 *
 * Why: the reference is 9 tfjs kernels forward and about 20 backward per LayerNorm; a ViT-B step has ~60
 * LayerNorms, and each tfjs kernel costs ~50 us of host dispatch on the H200 (phase-1 op figures:
 * [32,99,768] LayerNorm 0.48 ms wall for 0.10 ms of GPU time).
 *
 * Passes: forward, one workgroup of 64 threads per row (each thread holds ceil(D / 64) values in
 * registers; x is read once). Backward: row statistics [rows, 2]; dx per row
 * (`rstd * (g - mean(g) - xhat * mean(g * xhat))`, g = dy * scale); per-column partial sums of
 * `dy * xhat` and `dy` over chunks of 256 rows; then the chunk sums for dscale and dbias (two-stage
 * reduction).
 *
 * @module
 */
import { tf, type WebGPUBackend } from "../../deps.ts";
import { type Program, runProgram, type TensorInfo } from "./program.ts";

const WG = 64;
const CHUNK = 256;

/** WGSL: the row index of this workgroup as a uniform value, and a sum over the workgroup. */
const rowPrelude = (vec2: boolean) => `
var<workgroup> red: array<${vec2 ? "vec2<f32>" : "f32"}, ${WG}>;
var<workgroup> red1: array<f32, ${WG}>;
var<workgroup> wgRow: i32;
fn rowIndex() -> i32 {
  if (localIndex == 0u) { wgRow = i32(workgroupId.x + workgroupId.y * numWorkgroups.x); }
  return workgroupUniformLoad(&wgRow);
}
fn sum1(v: f32) -> f32 {
  let lid = i32(localIndex);
  red1[lid] = v;
  workgroupBarrier();
  for (var w = ${WG / 2}; w > 0; w /= 2) {
    if (lid < w) { red1[lid] += red1[lid + w]; }
    workgroupBarrier();
  }
  let r = red1[0];
  workgroupBarrier();
  return r;
}
${
  vec2
    ? `fn sum2(v: vec2<f32>) -> vec2<f32> {
  let lid = i32(localIndex);
  red[lid] = v;
  workgroupBarrier();
  for (var w = ${WG / 2}; w > 0; w /= 2) {
    if (lid < w) { red[lid] += red[lid + w]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}`
    : ""
}
`;

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** Per-thread element j of the row: column `lid + j * WG` (guarded when D is not a multiple of WG). */
const cols = (d: number) => range(Math.ceil(d / WG));

/** Row mean and rstd, two-pass, from registers x0.. (declares `mean`, `rstd`, `c0..`). */
const statsCode = (d: number) => {
  const js = cols(d);
  const ok = (j: number) => `(lid + ${j * WG} < ${d})`;
  return `
  let mean = sum1(${js.map((j) => `x${j}`).join(" + ")}) / ${d}.0;
  ${js.map((j) => `let c${j} = select(0.0, x${j} - mean, ${ok(j)});`).join("\n  ")}
  let variance = sum1(${js.map((j) => `c${j} * c${j}`).join(" + ")}) / ${d}.0;
  let rstd = inverseSqrt(variance + uniforms.eps);`;
};

const loadRow = (name: string, v: string, d: number) =>
  cols(d).map((j) =>
    `let ${v}${j} = select(0.0, ${name}[base + min(lid + ${j * WG}, ${d - 1})], lid + ${j * WG} < ${d});`
  ).join("\n  ");

/**
 * The forward and statistics shaders' shared main: one workgroup per row loads the row of X and computes
 * its mean and rstd (`c<j>` the centred values), then runs `tail`.
 */
const statsMain = (d: number, tail: string) =>
  `${rowPrelude(false)}
fn main(index: i32) {
  let row = rowIndex();
  if (row >= uniforms.rows) { return; }
  let lid = i32(localIndex);
  let base = row * ${d};
  ${loadRow("X", "x", d)}
  ${statsCode(d)}
  ${tail}
}
`;

const forwardProgram = (rows: number, d: number): Program => ({
  variableNames: ["X", "S", "B"],
  outputShape: [rows, d],
  shaderKey: `caeLayerNorm_${d}`,
  dispatchLayout: { x: [0] },
  dispatch: [rows, 1, 1],
  workgroupSize: [WG, 1, 1],
  uniforms: "rows : i32, eps : f32,",
  getUserCode: () =>
    statsMain(
      d,
      cols(d).map((j) =>
        `if (lid + ${j * WG} < ${d}) { let k = lid + ${
          j * WG
        }; result[base + k] = c${j} * rstd * S[k] + B[k]; }`
      ).join("\n  "),
    ),
});

/** [rows, 2]: mean and rstd of each row. */
const statsProgram = (rows: number, d: number): Program => ({
  variableNames: ["X"],
  outputShape: [rows, 2],
  outputComponent: 1,
  shaderKey: `caeLayerNormStats_${d}`,
  dispatchLayout: { x: [0] },
  dispatch: [rows, 1, 1],
  workgroupSize: [WG, 1, 1],
  uniforms: "rows : i32, eps : f32,",
  getUserCode: () => statsMain(d, "if (lid == 0) { result[row * 2] = mean; result[row * 2 + 1] = rstd; }"),
});

const dxProgram = (rows: number, d: number): Program => ({
  variableNames: ["X", "S", "DY", "ST"],
  outputShape: [rows, d],
  shaderKey: `caeLayerNormDx_${d}`,
  dispatchLayout: { x: [0] },
  dispatch: [rows, 1, 1],
  workgroupSize: [WG, 1, 1],
  uniforms: "rows : i32, eps : f32,",
  getUserCode: () =>
    `${rowPrelude(true)}
fn main(index: i32) {
  let row = rowIndex();
  if (row >= uniforms.rows) { return; }
  let lid = i32(localIndex);
  let base = row * ${d};
  let mean = ST[row * 2];
  let rstd = ST[row * 2 + 1];
  ${loadRow("X", "x", d)}
  ${loadRow("DY", "dy", d)}
  ${
      cols(d).map((j) =>
        `let xh${j} = (x${j} - mean) * rstd; let g${j} = select(0.0, dy${j} * S[min(lid + ${j * WG}, ${
          d - 1
        })], lid + ${j * WG} < ${d});`
      ).join("\n  ")
    }
  let m = sum2(${cols(d).map((j) => `vec2<f32>(g${j}, g${j} * xh${j})`).join(" + ")}) / ${d}.0;
  ${
      cols(d).map((j) =>
        `if (lid + ${j * WG} < ${d}) { result[base + lid + ${
          j * WG
        }] = rstd * (g${j} - m.x - xh${j} * m.y); }`
      ).join("\n  ")
    }
}
`,
});

/** [chunks, 2, D]: per chunk of CHUNK rows, sums of dy * xhat and of dy, one thread per column. */
const partialsProgram = (rows: number, d: number): Program => {
  const chunks = Math.ceil(rows / CHUNK);
  return {
    variableNames: ["X", "DY", "ST"],
    outputShape: [chunks, 2, d],
    shaderKey: `caeLayerNormPartials_${d}`,
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(d / WG), chunks, 1],
    workgroupSize: [WG, 1, 1],
    uniforms: "rows : i32, eps : f32,",
    getUserCode: () => `
fn main(index: i32) {
  let col = i32(workgroupId.x) * ${WG} + i32(localIndex);
  let chunk = i32(workgroupId.y);
  if (col >= ${d}) { return; }
  let r0 = chunk * ${CHUNK};
  let r1 = min(uniforms.rows, r0 + ${CHUNK});
  var s = 0.0;
  var b = 0.0;
  for (var r = r0; r < r1; r++) {
    let dy = DY[r * ${d} + col];
    s += dy * (X[r * ${d} + col] - ST[r * 2]) * ST[r * 2 + 1];
    b += dy;
  }
  result[(chunk * 2) * ${d} + col] = s;
  result[(chunk * 2 + 1) * ${d} + col] = b;
}
`,
  };
};

/** [D]: slot `slot` (0: dscale, 1: dbias) of the partials summed over chunks. */
const finishProgram = (d: number): Program => ({
  variableNames: ["P"],
  outputShape: [d],
  shaderKey: "caeLayerNormFinish",
  dispatchLayout: { x: [0] },
  dispatch: [Math.ceil(d / WG), 1, 1],
  workgroupSize: [WG, 1, 1],
  uniforms: "d : i32, chunks : i32, slot : i32,",
  getUserCode: () => `
fn main(index: i32) {
  if (index >= uniforms.d) { return; }
  var s = 0.0;
  for (var c = 0; c < uniforms.chunks; c++) { s += P[(c * 2 + uniforms.slot) * uniforms.d + index]; }
  result[index] = s;
}
`,
});

type KernelArgs = {
  inputs: Record<string, TensorInfo>;
  backend: WebGPUBackend;
  attrs: { eps: number };
};

const flat = (t: TensorInfo): [number, number] => {
  const d = t.shape[t.shape.length - 1];
  return [t.shape.reduce((a, b) => a * b, 1) / d, d];
};

const forward = ({ inputs, backend, attrs }: KernelArgs): TensorInfo => {
  const { x, scale, bias } = inputs;
  const [rows, d] = flat(x);
  const out = runProgram(backend, forwardProgram(rows, d), [{ ...x, shape: [rows, d] }, scale, bias], [
    { type: "int32", data: [rows] },
    { type: "float32", data: [attrs.eps] },
  ]);
  return { ...out, shape: [...x.shape] };
};

const backward = ({ inputs, backend, attrs }: KernelArgs): TensorInfo[] => {
  const { x, scale, dy } = inputs;
  const [rows, d] = flat(x);
  const x2 = { ...x, shape: [rows, d] }, dy2 = { ...dy, shape: [rows, d] };
  const u = [{ type: "int32" as const, data: [rows] }, { type: "float32" as const, data: [attrs.eps] }];
  const stats = runProgram(backend, statsProgram(rows, d), [x2], u);
  const dx = runProgram(backend, dxProgram(rows, d), [x2, scale, dy2, stats], u);
  const parts = runProgram(backend, partialsProgram(rows, d), [x2, dy2, stats], u);
  const chunks = Math.ceil(rows / CHUNK);
  const finish = (slot: number) =>
    runProgram(backend, finishProgram(d), [parts], [
      { type: "int32", data: [d] },
      { type: "int32", data: [chunks] },
      { type: "int32", data: [slot] },
    ]);
  const dscale = finish(0), dbias = finish(1);
  backend.disposeData(stats.dataId);
  backend.disposeData(parts.dataId);
  return [{ ...dx, shape: [...x.shape] }, dscale, dbias];
};

/** Registers `CaeLayerNorm` (+ gradient) and `CaeLayerNormGrad` for webgpu (idempotent). */
export const registerLayerNormKernels = (): void => {
  if (tf.getKernel("CaeLayerNorm", "webgpu") !== undefined) return;
  const reg = (kernelName: string, f: (a: KernelArgs) => TensorInfo | TensorInfo[]) =>
    tf.registerKernel({
      kernelName,
      backendName: "webgpu",
      kernelFunc: f as unknown as Parameters<typeof tf.registerKernel>[0]["kernelFunc"],
    });
  reg("CaeLayerNorm", forward);
  reg("CaeLayerNormGrad", backward);
  tf.registerGradient({
    kernelName: "CaeLayerNorm",
    inputsToSave: ["x", "scale"],
    gradFunc: (dy, saved, attrs) => {
      const [x, scale] = saved;
      // Computed eagerly (all three inputs' gradients are always requested): one kernel, three outputs.
      const [dx, dscale, dbias] = tf.engine().runKernel(
        "CaeLayerNormGrad",
        { x, scale, dy: dy as tf.Tensor },
        attrs as unknown as tf.NamedAttrMap,
      ) as tf.Tensor[];
      return { x: () => dx, scale: () => dscale, bias: () => dbias };
    },
  });
};

/** The fused LayerNorm on WebGPU: `x [..., D]`, `scale`, `bias` `[D]` (kernels must be registered). */
export const layerNormKernel = (x: tf.Tensor, scale: tf.Tensor, bias: tf.Tensor, eps: number): tf.Tensor =>
  tf.engine().runKernel("CaeLayerNorm", { x, scale, bias }, { eps }) as tf.Tensor;

/** The fused LayerNorm's gradients `[dx, dscale, dbias]` on WebGPU (kernels must be registered). */
export const layerNormGradKernel = (
  x: tf.Tensor,
  scale: tf.Tensor,
  dy: tf.Tensor,
  eps: number,
): tf.Tensor[] => tf.engine().runKernel("CaeLayerNormGrad", { x, scale, dy }, { eps }) as tf.Tensor[];

/** Unregisters `CaeLayerNorm` and `CaeLayerNormGrad` (idempotent): the references run again. */
export const unregisterLayerNormKernels = (): void => {
  for (const k of ["CaeLayerNorm", "CaeLayerNormGrad"]) {
    if (tf.getKernel(k, "webgpu") !== undefined) tf.unregisterKernel(k, "webgpu");
  }
};
