/**
 * Device-side gradients for the tfjs-core 4.22 kernels whose stock gradient builds a tensor-sized array
 * in JavaScript on the CPU and uploads it.
 *
 * Measured on an H200 (WebGPU under Deno, BENCHMARKS.md "PyTorch reference figures"): `tf.grad` of `sum(x * x)` for
 * `x: [3168, 3072]` takes ~1.9 s with the stock gradient, of which nearly all is `tf.ones(x.shape)`
 * filled on the CPU and uploaded; broadcasting `dy` on the device takes ~2 ms.
 *
 * Audit of tfjs-core 4.22.0 (`dist/gradients/*_grad.js`, `engine.js`, `tape.js`), every gradient the
 * CAE v2 student can reach, looking for data made on the host with a size proportional to a tensor
 * (`ones(`, `zeros(`, `tensor(` of a host array, `buffer(`, `dataSync`):
 *
 * | where | what it makes on the host | verdict |
 * | --- | --- | --- |
 * | `Sum_grad.js`: `mul(expandedDy, ones(x.shape, 'float32'))` | `x.size` floats | replaced below |
 * | `Mean_grad.js`: `div(mul(expandedDy, ones(x.shape, 'float32')), reduceSize)` | `x.size` floats | replaced below |
 * | `engine.js` `addTapeNode`: `dy == null` -> `makeZerosTypedArray(output.size)` for an unused output of a multi-output kernel (`SplitV`, `Unpack`, `TopK`) | output size | patched below ({@link registerDeviceGradients}) |
 * | `engine.js` `gradients`: `dy == null ? ones(y.shape) : dy` (default seed of `tf.grad(s)`) | `y.size` | fine for a scalar loss (4 bytes); pass `dy` for a non-scalar `y` |
 * | `UnsortedSegmentSum_grad.js`: `logicalAnd(isPositive, ones(gathered.shape, 'bool'))` | gathered size | second-order only (the gradient of `GatherV2`'s gradient); not reached |
 * | `Pow`, `Sigmoid`, `Tanh`, `SquaredDifference`, `Selu`, `Mean` (`reduceSize`), `Erf` | `scalar(...)` or a JS number | one element: fine |
 * | `Max`, `Min` (`equal` + `cast`), `Prod` (`cumprod`), `Softmax`, `LogSoftmax` (`sum` keepDims), `Erf`, `Sqrt`, `Rsqrt`, `Pow`, `Square`, `SquaredDifference`, `Exp`, `Log`, `Neg`, `Abs` / `Relu` (`step`), `Sigmoid`, `Tanh`, `Maximum` / `Minimum` (compare + `cast`) | nothing | device ops only |
 * | `Add`, `Sub`, `Multiply`, `RealDiv` (broadcast: `sum` over the broadcast axes + `reshape`), `BroadcastTo` (`sum` keepDims), `BatchMatMul` (`matMul`), `Transpose`, `Reshape`, `ExpandDims`, `Cast`, `Identity` | nothing | device ops only |
 * | `Concat` (`split`), `Slice` (`pad`), `PadV2` (`slice`), `Tile` (`zerosLike` + one `slice` per repeat), `Select` (`zerosLike`, `logicalNot`), `SplitV` (`concat`), `Unpack` / `Pack` | nothing | device ops only (`zerosLike` is the `ZerosLike` kernel, a device fill) |
 * | `GatherV2` (`unsortedSegmentSum`: a WebGPU atomic kernel), `Conv2D` (`conv2DBackpropInput` / `conv2DBackpropFilter`, both WebGPU kernels) | nothing | device ops only |
 *
 * Not gradients but worth knowing for the model (forward ops that fill on the host, in `dist/ops/`):
 * `tf.ones` / `tf.zeros` / `tf.eye` / `tf.buffer`, the random ops (`randomNormal`, `randomUniform`,
 * `truncatedNormal`, so `tf.dropout` of a large tensor), `tf.losses.*` with `weights`
 * (`compute_weighted_loss.js`: `mul(weights, ones(losses.shape))`), `tf.linalg.bandPart`, `tf.meshgrid`.
 * Use `tf.onesLike` / `tf.zerosLike` / `tf.fill` (device kernels) instead. On WebGPU, `tf.tile` and
 * `tf.broadcastTo` of a rank >= 5 tensor read it back and tile on the CPU (`kernels/Tile.js`): keep
 * broadcasts at rank <= 4 or let a binary op broadcast.
 *
 * @module
 */
import { tf } from "../deps.ts";

/** A kernel's gradient as tfjs-core registers it (`kernel_registry.d.ts`). */
export type GradConfig = tf.GradConfig;

/** `x.shape` with every reduced axis set to 1: the shape of a keep-dims reduction. */
const keepDimsShape = (shape: readonly number[], axes: readonly number[]): number[] =>
  shape.map((d, i) => (axes.includes(i) ? 1 : d));

const single = (dy: tf.Tensor | tf.Tensor[], kernel: string): tf.Tensor => {
  if (Array.isArray(dy)) {
    throw new Error(`gradient of ${kernel}: expected one dy, got ${dy.length} (a single-output kernel)`);
  }
  return dy;
};

/** Axes of a reduction's `axis` attribute (undefined or null: every axis), non-negative. */
const reductionAxes = (axis: unknown, shape: readonly number[]): number[] =>
  tf.util.parseAxisParam(axis as number | number[], shape as number[]);

/** A tfjs flag's value, or `fallback` where the flag is not registered (its backend not imported). */
const flagOr = <T extends number | boolean>(name: string, fallback: T): T => {
  try {
    return tf.env().get(name) as T;
  } catch {
    return fallback;
  }
};

/**
 * Whether to broadcast with the `Tile` kernel (what `tf.broadcastTo` runs) rather than a `mul` by a
 * device fill of ones. Tile is one pass instead of two, but the WebGPU backend's Tile
 * (tfjs-backend-webgpu 4.22.0 `kernels/Tile.js`) reads its input back and tiles on the CPU when the
 * input has rank >= 5 ("tile gpu program cannot handle rank >= 5 case") or when it is still
 * host-resident and smaller than `WEBGPU_CPU_HANDOFF_SIZE_THRESHOLD` (1000) elements, as the tape's
 * seed `dy` is. On cpu Tile beats the broadcasting `mul` (53 vs 71 ms for [1024,1] -> [1024,1024]);
 * on wasm it loses badly (13 vs 2 ms for a [1336,192] gradient), so wasm and others use `mul`.
 */
const useTile = (g: tf.Tensor): boolean => {
  const backend = tf.getBackend();
  if (backend === "cpu") return true;
  if (backend !== "webgpu" || g.rank >= 5) return false;
  return !flagOr("WEBGPU_CPU_FORWARD", true) || g.size >= flagOr("WEBGPU_CPU_HANDOFF_SIZE_THRESHOLD", 1000);
};

/**
 * `g` (one value per reduced slice) copied over `shape`, computed on the device: a single-value `g`
 * multiplies a device fill of ones (the scalar fast path of every backend's `mul`), a larger one is
 * tiled where that is safe and fast ({@link useTile}), else multiplies a device fill of ones.
 * `keepShape` is `shape` with the reduced axes set to 1.
 */
const broadcastOnDevice = (g: tf.Tensor, keepShape: number[], shape: number[]): tf.Tensor => {
  if (tf.util.sizeFromShape(shape) === 0) return tf.zeros(shape);
  if (g.size === 1) return tf.mul(tf.reshape(g, []), tf.fill(shape, 1, "float32"));
  const kept = tf.reshape(g, keepShape);
  return useTile(kept) ? tf.broadcastTo(kept, shape) : tf.mul(kept, tf.fill(shape, 1, "float32"));
};

/**
 * Gradient of `Sum` that broadcasts `dy` on the device.
 *
 * Replaces tfjs-core 4.22.0 `dist/gradients/Sum_grad.js` (source `tfjs-core/src/gradients/Sum_grad.ts`):
 * `const derX = mul(expandedDy, ones(x.shape, 'float32'));`, which fills `x.size` ones in JavaScript and
 * uploads them. Same values: `dy * 1 === dy`, and a tile is a copy.
 */
export const sumGradConfig: GradConfig = {
  kernelName: tf.Sum,
  inputsToSave: ["x"],
  gradFunc: (dy, saved, attrs) => {
    const [x] = saved;
    const axes = reductionAxes(attrs.axis, x.shape);
    const g = single(dy, tf.Sum);
    return { x: () => broadcastOnDevice(g, keepDimsShape(x.shape, axes), x.shape) };
  },
};

/**
 * Gradient of `Mean` that divides the small `dy` by the reduce size, then broadcasts it on the device.
 *
 * Replaces tfjs-core 4.22.0 `dist/gradients/Mean_grad.js` (source `tfjs-core/src/gradients/Mean_grad.ts`):
 * `const res = div(mul(expandedDy, ones(x.shape, 'float32')), reduceSize);`. Same values: the stock
 * code computes `(dy * 1) / n` per element, this computes `dy / n` once per output and copies it.
 */
export const meanGradConfig: GradConfig = {
  kernelName: tf.Mean,
  inputsToSave: ["x"],
  gradFunc: (dy, saved, attrs) => {
    const [x] = saved;
    const axes = reductionAxes(attrs.axis, x.shape);
    const reduceSize = axes.reduce((n, a) => n * x.shape[a], 1);
    const g = single(dy, tf.Mean);
    return { x: () => broadcastOnDevice(tf.div(g, reduceSize), keepDimsShape(x.shape, axes), x.shape) };
  },
};

/** The kernel gradients this module replaces, in registration order. */
export const deviceGradConfigs: readonly GradConfig[] = [sumGradConfig, meanGradConfig];

// --- the engine's zero `dy` for unused outputs -------------------------------------------------------

/** The parts of tfjs-core's `Engine` (engine.js, 4.22.0) that the tape patch touches. */
interface TapeNode {
  readonly outputs: readonly tf.Tensor[];
  gradient?: (dys: (tf.Tensor | null)[]) => ReturnType<tf.GradFunc>;
}
type AddTapeNode = (
  kernelName: string,
  inputs: unknown,
  outputs: tf.Tensor[],
  gradientsFunc: unknown,
  saved: unknown,
  attrs: unknown,
) => void;
interface EngineInternals {
  addTapeNode: AddTapeNode;
  state: { activeTape: TapeNode[] | null };
}

const engineInternals = (): EngineInternals => {
  const e = tf.engine() as unknown as Partial<EngineInternals>;
  if (typeof e.addTapeNode !== "function" || e.state == null) {
    throw new Error(
      "registerDeviceGradients: tfjs engine internals (addTapeNode, state) not found; " +
        "lib/core/gradients.ts is written against @tensorflow/tfjs-core 4.22.0: update it with tfjs",
    );
  }
  return e as EngineInternals;
};

/** dtypes the `Fill` kernel can make; others keep the engine's own host zeros. */
const fillable = (dtype: tf.DataType): dtype is "float32" | "int32" | "bool" =>
  dtype === "float32" || dtype === "int32" || dtype === "bool";

/**
 * The tape-node hook: when a multi-output kernel (`SplitV`, `Unpack`, `TopK`) has an output that does
 * not reach the loss, tfjs-core's engine (engine.js `addTapeNode`, 4.22.0) hands its gradient a
 * `dy` of zeros made with `util.makeZerosTypedArray(output.size)` on the host. This hook supplies
 * `tf.fill(shape, 0)` instead, a device kernel, before the engine sees a null.
 */
const deviceZeroDys = (original: AddTapeNode): AddTapeNode =>
  function (this: EngineInternals, kernelName, inputs, outputs, gradientsFunc, saved, attrs) {
    original.call(this, kernelName, inputs, outputs, gradientsFunc, saved, attrs);
    const tape = this.state.activeTape;
    if (outputs.length < 2 || tape == null || tape.length === 0) return;
    const node = tape[tape.length - 1];
    const stock = node.gradient;
    if (stock == null) return;
    node.gradient = (dys) =>
      stock(dys.map((dy, i) => {
        const o = outputs[i];
        return dy ?? (fillable(o.dtype) ? tf.fill(o.shape, 0, o.dtype) : null);
      }));
  };

// --- registration --------------------------------------------------------------------------------------

/**
 * What registration replaced, so that {@link restoreStockGradients} can put it back (benchmarks and
 * tests compare both). tfjs keeps its gradient registry and engine as process-wide globals; this
 * mirrors that one global, nothing else.
 */
interface Replaced {
  readonly grads: readonly GradConfig[];
  readonly addTapeNode: AddTapeNode;
}
let replaced: Replaced | null = null;

/**
 * Re-registers the gradients of `Sum` and `Mean` so that they broadcast `dy` on the device, and makes
 * the engine seed unused outputs of multi-output kernels with device zeros. Idempotent; call once
 * after importing tfjs (backend selection does). Works on every backend; the gain is on GPU backends.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { registerDeviceGradients } from "./gradients.ts";
 * await tf.setBackend("cpu");
 * registerDeviceGradients();
 * const g = tf.grad((x: tf.Tensor) => tf.mean(tf.square(x)))(tf.ones([2, 3]));
 * // d/dx mean(x^2) = 2x / 6 = 1/3 at x = 1
 * if (Math.abs((await g.data())[0] - 1 / 3) > 1e-6) throw new Error("unexpected gradient");
 * ```
 */
export function registerDeviceGradients(): void {
  if (replaced != null) return;
  const engine = engineInternals();
  const stock = deviceGradConfigs.map((c) => {
    const s = tf.getGradient(c.kernelName);
    if (s == null) {
      throw new Error(
        `registerDeviceGradients: no stock gradient registered for ${c.kernelName}; import tfjs through ` +
          "lib/deps.ts (the umbrella package registers them) before calling this",
      );
    }
    return s;
  });
  replaced = { grads: stock, addTapeNode: engine.addTapeNode };
  deviceGradConfigs.forEach((c) => tf.registerGradient(c));
  engine.addTapeNode = deviceZeroDys(engine.addTapeNode);
}

/** Puts back what {@link registerDeviceGradients} replaced (the stock tfjs gradients). Idempotent. */
export function restoreStockGradients(): void {
  if (replaced == null) return;
  replaced.grads.forEach((c) => tf.registerGradient(c));
  engineInternals().addTapeNode = replaced.addTapeNode;
  replaced = null;
}

/** Whether {@link registerDeviceGradients} is in effect. */
export const deviceGradientsActive = (): boolean => replaced != null;
