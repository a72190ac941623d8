/**
 * Running this project's WGSL programs on the tfjs WebGPU backend. A program is the object tfjs-backend-
 * webgpu 4.22 compiles (`runWebGPUProgram`): tfjs writes the prelude (bindings `result` and one
 * `var<storage, read>` array per input name, a `uniforms` struct with every input's and the output's
 * shape plus the program's own fields, `localId`, `workgroupId`, ...) and the program supplies
 * `fn main(index: i32)`. One output per program; a second program can write into the same output
 * (`runProgram(..., { into })`), which is how multi-part results (dq | dk | dv) stay one tensor.
 *
 * Size guard: WebGPU binds a buffer to a shader only up to `maxStorageBufferBindingSize` bytes (128 MiB on
 * llvmpipe, larger on real GPUs). Every program here checks its inputs and output against it and throws
 * {@link BindingSizeError} instead of letting the GPU clamp the binding (which would compute garbage).
 *
 * @module
 */
import { tf, type WebGPUBackend } from "../../deps.ts";

/** A tensor's identity as kernels see it. */
export type TensorInfo = { readonly dataId: object; readonly shape: number[]; readonly dtype: tf.DataType };

/** The fields of a tfjs WebGPU program this project uses. */
export interface Program {
  readonly variableNames: string[];
  /** Components per input (1 or 4: `array<f32>` or `array<vec4<f32>>`). */
  readonly variableComponents?: number[];
  readonly outputShape: number[];
  /** Components of `result` (1 or 4). */
  readonly outputComponent?: number;
  /** Must name everything `getUserCode` depends on besides input ranks/dtypes. */
  readonly shaderKey: string;
  readonly dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  readonly workgroupSize: [number, number, number];
  /** dtype of `result` (default float32; int32 for packed f16 pairs, lib/core/kernels/half.ts). */
  readonly outputDtype?: "float32" | "int32";
  /** Extra uniform fields, WGSL, e.g. `"m : i32, alpha : f32,"`. */
  readonly uniforms?: string;
  readonly getUserCode: () => string;
}

/** A uniform value for {@link Program.uniforms}, in declaration order. */
export type Uniform = { readonly type: "int32" | "float32" | "uint32"; readonly data: number[] };

/** Thrown when a tensor is larger than one WebGPU storage binding may be. */
export class BindingSizeError extends Error {
  constructor(what: string, shape: readonly number[], bytes: number, limit: number) {
    super(
      `${what}: tensor of shape [${shape.join(", ")}] needs ${bytes} bytes, more than this GPU's ` +
        `maxStorageBufferBindingSize (${limit} bytes). Use a smaller batch (or run on a GPU with a larger ` +
        `limit); the fused kernel refuses rather than compute on a truncated binding.`,
    );
    this.name = "BindingSizeError";
  }
}

/** The active WebGPU backend; throws when another backend is active. */
export const webgpu = (): WebGPUBackend => {
  if (tf.getBackend() !== "webgpu") {
    throw new Error(`lib/core/kernels: WebGPU kernel called on the ${tf.getBackend()} backend`);
  }
  return tf.backend() as WebGPUBackend;
};

/** `maxStorageBufferBindingSize` of the active WebGPU device. */
export const bindingLimit = (backend: WebGPUBackend = webgpu()): number =>
  backend.device.limits.maxStorageBufferBindingSize;

/** Bytes of a float32 tensor of `shape`. */
export const bytesOf = (shape: readonly number[]): number => 4 * shape.reduce((a, b) => a * b, 1);

/** Throws {@link BindingSizeError} if a float32 tensor of `shape` cannot be bound. */
export const checkBindable = (what: string, shape: readonly number[], limit: number): void => {
  const bytes = bytesOf(shape);
  if (bytes > limit) throw new BindingSizeError(what, shape, bytes, limit);
};

/** Whether every shape fits one binding (for callers that fall back instead of throwing). */
export const fitsBinding = (shapes: readonly (readonly number[])[], limit: number): boolean =>
  shapes.every((s) => bytesOf(s) <= limit);

/**
 * Runs `program` on `inputs` (float32 TensorInfos) and returns the output TensorInfo (float32). With
 * `into`, writes into that existing output instead of a fresh one (the program's `outputShape` must
 * match it).
 */
export const runProgram = (
  backend: WebGPUBackend,
  program: Program,
  inputs: readonly TensorInfo[],
  uniforms: readonly Uniform[] = [],
  into?: TensorInfo,
): TensorInfo => {
  const limit = bindingLimit(backend);
  inputs.forEach((t, i) =>
    checkBindable(`${program.shaderKey} input ${program.variableNames[i]}`, t.shape, limit)
  );
  checkBindable(`${program.shaderKey} output`, program.outputShape, limit);
  // deno-lint-ignore no-explicit-any -- tfjs's WebGPUProgram interface is not exported by the package.
  const run = backend.runWebGPUProgram.bind(backend) as (...a: any[]) => TensorInfo;
  return run(
    program,
    inputs,
    program.outputDtype ?? "float32",
    uniforms.map((u) => ({ type: u.type, data: [...u.data] })),
    into,
  );
};

/** A TensorInfo made by {@link runProgram} as a tf.Tensor owned by the caller. */
export const toTensor = <T extends tf.Tensor = tf.Tensor>(t: TensorInfo): T =>
  tf.engine().makeTensorFromTensorInfo(
    t as Parameters<ReturnType<typeof tf.engine>["makeTensorFromTensorInfo"]>[0],
  ) as T;
