/**
 * Which implementation runs: this project's WebGPU kernels where they are registered and the active
 * backend is WebGPU, the plain-tfjs references (lib/nn, lib/optim) everywhere else. `registerKernels()`
 * turns them on (the benchmark does; training may), `restoreStockKernels()` off (tests compare both).
 *
 * - `BatchMatMul` (every tf.matMul and its gradients): lib/core/kernels/matmul.ts, registered over tfjs's;
 *   with it `CaeMatMulBias`, a linear layer's `x W + b` in one kernel (the bias added in the epilogue),
 *   which lib/nn/linear.ts calls through `matMulBias`; off the tape (the teacher, inference) lib/nn/mlp.ts
 *   runs the MLP's first layer, its bias and its GELU / QuickGELU as that one kernel too.
 *   The same kernel takes a residual connection in its epilogue (`r + dropPath(gamma (x W + b))`, lib/nn/
 *   residual.ts `residualLinear`), and `CaeMatMulActGrad` is `dy W^T` with the activation's gradient in its
 *   epilogue (the fused MLP's backward pass, lib/nn/mlp.ts).
 * - `CaeHeadMatMul`: attention's products with the heads read in place from the projections and the
 *   context and the q, k, v gradients written merged (lib/core/kernels/heads.ts; lib/nn/sdpa.ts
 *   `headAttention`): no transposes, slices or pads around attention.
 * - LayerNorm: {@link fusedLayerNorm}, called first by `layerNorm` in lib/nn/norm.ts.
 * - GELU / QuickGELU: {@link fusedActivation}, called by `mlp` in lib/nn/mlp.ts.
 * - `Sum` over every axis (gradient norms): two-stage reduction (lib/core/kernels/reduce.ts).
 * - the gradient of `Tile` (`broadcastTo`): one reshape + sum instead of a slice and an add per tile
 *   (lib/core/kernels/tile_grad.ts; every backend).
 * - wasm: `Identity` (what the tape's saved clones run) shares the block instead of copying it
 *   (lib/core/kernels/identity_wasm.ts).
 * - wasm: transposed products through an explicit transpose (lib/core/kernels/matmul_wasm.ts), and
 *   transposes of rank 5 and above as rank-4 ones (lib/core/kernels/transpose_wasm.ts).
 * - AdamW: the `CaeAdamW` kernel (lib/core/kernels/adamw.ts), which `fusedAdamw` (lib/optim/fused_adamw.ts)
 *   calls where it is registered; its leafwise plain-tfjs path otherwise.
 *
 * @module
 */
import { tf } from "../../deps.ts";
import { registerAdamwKernel, unregisterAdamwKernel } from "./adamw.ts";
import { geluGradKernel, geluKernel, registerGeluKernels, unregisterGeluKernels } from "./gelu.ts";
import {
  layerNormGradKernel,
  layerNormKernel,
  registerLayerNormKernels,
  unregisterLayerNormKernels,
} from "./layernorm.ts";
import { registerFastMatMul, restoreStockMatMul } from "./matmul.ts";
import { registerHeadMatMul, unregisterHeadMatMul } from "./heads.ts";
import { registerWasmMatMul, restoreWasmMatMul } from "./matmul_wasm.ts";
import { registerFastSum, restoreStockSum } from "./reduce.ts";
import { registerWasmTranspose, restoreWasmTranspose } from "./transpose_wasm.ts";
import { registerWasmSlice, restoreWasmSlice } from "./slice_wasm.ts";
import { registerWasmIdentity, restoreWasmIdentity } from "./identity_wasm.ts";
import { registerTileGrad, restoreTileGrad } from "./tile_grad.ts";

/** Turns every fused kernel on (idempotent). Other backends than WebGPU keep the references, except wasm's matmul, transpose and slice routing. */
export const registerKernels = (): void => {
  registerLayerNormKernels();
  registerGeluKernels();
  registerFastMatMul();
  registerHeadMatMul();
  registerWasmMatMul();
  registerWasmTranspose();
  registerWasmSlice();
  registerWasmIdentity();
  registerFastSum();
  registerTileGrad();
  registerAdamwKernel();
};

/** Back to plain tfjs everywhere (idempotent). */
export const restoreStockKernels = (): void => {
  restoreStockMatMul();
  unregisterHeadMatMul();
  restoreWasmMatMul();
  restoreWasmTranspose();
  restoreWasmSlice();
  restoreWasmIdentity();
  restoreStockSum();
  restoreTileGrad();
  unregisterLayerNormKernels();
  unregisterGeluKernels();
  unregisterAdamwKernel();
};

/**
 * Whether a fused kernel runs now: it is registered (tfjs's kernel registry is the one switch, as it is
 * for the BatchMatMul and Sum overrides; no flag of this module's) and the active backend is WebGPU.
 */
export const fusedKernelOn = (name: string): boolean =>
  tf.getBackend() === "webgpu" && tf.getKernel(name, "webgpu") !== undefined;

/**
 * LayerNorm over the last axis by the fused kernel, or undefined where the reference must run (kernels
 * off, another backend, not float32). Throws `BindingSizeError` for tensors over one binding.
 */
export const fusedLayerNorm = (
  x: tf.Tensor,
  scale: tf.Tensor,
  bias: tf.Tensor,
  eps: number,
):
  | tf.Tensor
  | undefined => (fusedKernelOn("CaeLayerNorm") && x.dtype === "float32"
    ? layerNormKernel(x, scale, bias, eps)
    : undefined);

/** GELU (`quick` false) or QuickGELU by the fused kernel, or undefined where the reference must run. */
export const fusedActivation = (x: tf.Tensor, quick: boolean): tf.Tensor | undefined =>
  fusedKernelOn("CaeGelu") && x.dtype === "float32" ? geluKernel(x, quick) : undefined;

/**
 * The gradient of {@link fusedActivation}, `dy * act'(x)`, by the fused kernel, or undefined where the
 * reference must run (for custom ops that keep `x` themselves, e.g. as packed f16).
 */
export const fusedActivationGrad = (x: tf.Tensor, dy: tf.Tensor, quick: boolean): tf.Tensor | undefined =>
  fusedKernelOn("CaeGeluGrad") && x.dtype === "float32" ? geluGradKernel(x, dy, quick) : undefined;

/**
 * The gradients `[dx, dscale, dbias]` of {@link fusedLayerNorm} by the fused kernel, or undefined where the
 * reference must run (for custom ops that keep `x` themselves, e.g. as packed f16).
 */
export const fusedLayerNormGrad = (
  x: tf.Tensor,
  scale: tf.Tensor,
  dy: tf.Tensor,
  eps: number,
): tf.Tensor[] | undefined =>
  fusedKernelOn("CaeLayerNormGrad") && x.dtype === "float32"
    ? layerNormGradKernel(x, scale, dy, eps)
    : undefined;
