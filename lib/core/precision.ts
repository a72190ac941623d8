/**
 * `--precision f32|f16`: where f16 enters a step, and where it may not.
 *
 * In "f16" (WebGPU with `shader-f16` only):
 * - every matrix product on the tiled kernel rounds its operands to f16 as they are loaded and
 *   accumulates in f32 (lib/core/kernels/matmul.ts `setMatMulPrecision`; weights stay f32 tensors, so the
 *   f32 master copy is the parameters themselves and each product sees their f16 rounding);
 * - the tensors the linear layers, attention, GELU, LayerNorm and the residual branches keep for the
 *   backward pass are packed f16 (lib/core/kernels/half.ts), half the bytes of the tape's largest entries;
 * - everything else stays float32 (tfjs has no f16 dtype): LayerNorm statistics, softmax, the loss, the
 *   gradient norm, the optimizer state and the update;
 * - the loss is scaled dynamically so small gradients survive f16 (lib/optim/loss_scale.ts).
 *
 * Global, like the kernel registry: {@link setPrecision} is called once by lib/core/runtime.ts after
 * {@link precisionProblem} has accepted the choice for the started backend.
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { BackendInfo } from "./backend.ts";
import { setMatMulPrecision } from "./kernels/matmul.ts";
import { packHalf, unpackHalf } from "./kernels/half.ts";
import { savingForBackward } from "./autodiff.ts";

/** The precisions a step can run in. */
export const precisionNames = ["f32", "f16"] as const;
/** `--precision`. */
export type Precision = (typeof precisionNames)[number];

let current: Precision = "f32";

/**
 * Why `precision` cannot run on the started backend, or undefined when it can: "f16" needs the WebGPU
 * backend, its adapter's `shader-f16` feature and the fused kernels (the f16 products live in them).
 */
export const precisionProblem = (
  precision: Precision,
  info: Pick<BackendInfo, "name" | "features" | "adapter">,
  kernels: "fused" | "stock" = "fused",
): string | undefined => {
  if (precision === "f32") return undefined;
  if (info.name !== "webgpu") {
    return `--precision f16 needs the webgpu backend (this run has ${info.name}; wasm and cpu compute in ` +
      "float32 only): use --backend webgpu on a GPU with shader-f16, or --precision f32";
  }
  if (!(info.features ?? []).includes("shader-f16")) {
    return `--precision f16 needs the WebGPU feature shader-f16, which the adapter ` +
      `${JSON.stringify(info.adapter ?? "unknown")} does not offer: use --precision f32`;
  }
  if (kernels !== "fused") return "--precision f16 runs on this project's kernels: drop --kernels stock";
  return undefined;
};

/** Sets the precision of the steps that follow (after {@link precisionProblem} accepted it). */
export const setPrecision = (p: Precision): void => {
  current = p;
  setMatMulPrecision(p);
};

/** The precision set now. */
export const precision = (): Precision => current;

/** Whether tensors kept for the backward pass are packed to f16 now (f16 on WebGPU). */
const packing = (): boolean => current === "f16" && tf.getBackend() === "webgpu";

/**
 * What a custom op keeps of `x` for its backward pass: `x` itself, or in f16 a packed f16 copy (last axis
 * even; an odd one keeps `x`; off the tape, where nothing is kept, `x`). {@link withRestored} gives the
 * float32 tensor back.
 */
export const toSaved = (x: tf.Tensor): tf.Tensor =>
  packing() && savingForBackward() && x.dtype === "float32" && x.rank > 0 && x.shape[x.rank - 1] % 2 === 0
    ? packHalf(x)
    : x;

/** The float32 tensor of a {@link toSaved} result (a new tensor when it was packed, else `s` itself). */
const restoreSaved = (s: tf.Tensor): tf.Tensor => (s.dtype === "int32" ? unpackHalf(s) : s);

/**
 * `f` of the float32 tensors of {@link toSaved} results, the widened copies released as soon as it returns
 * (a backward pass's scope would otherwise hold them, each as large as the tensor it was packed from).
 */
export const withRestored = <T>(saved: readonly tf.Tensor[], f: (xs: tf.Tensor[]) => T): T => {
  const xs = saved.map(restoreSaved);
  try {
    return f(xs);
  } finally {
    tf.dispose(xs.filter((x, i) => x !== saved[i]));
  }
};
