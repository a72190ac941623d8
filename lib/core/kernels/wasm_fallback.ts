/**
 * Kernels the wasm backend lacks or gets wrong, and a cpu kernel too slow for the model's shapes.
 *
 * wasm lacks some kernels the model's gradients reach: `UnsortedSegmentSum` (the gradient of `gather`,
 * i.e. of picking the visible tokens) and `Conv2DBackpropFilter` (the gradient of a conv patch embedding
 * w.r.t. its filter), plus the depthwise-conv backprops and `Einsum`. {@link registerWasmFallbackKernels}
 * registers a one-pass `UnsortedSegmentSum` (also replacing cpu's, which is O(numSegments * size), through
 * {@link registerCpuKernels}) and runs the others on wasm through the cpu kernel on copies of the inputs
 * (correct; costs one copy each way). wasm's GatherV2 is also wrong for `batchDims > 0`
 * (tensorflow/tfjs#8658): such gathers go through cpu too. lib/core/backend.ts registers these before it
 * starts wasm or cpu.
 *
 * @module
 */
import { tf } from "../../deps.ts";

/** The parts of tfjs-backend-wasm's BackendWasm used here (its class type is not exported by name). */
interface WasmBackendLike {
  readSync(dataId: tf.DataId): tf.backend_util.BackendValues;
  makeOutput(
    shape: number[],
    dtype: tf.DataType,
    memoryOffset?: number,
    values?: tf.backend_util.BackendValues,
  ): tf.TensorInfo;
}

/** The parts of tfjs-backend-cpu's MathBackendCPU used here. */
interface CpuBackendLike extends tf.KernelBackend {
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues): tf.TensorInfo;
  disposeIntermediateTensorInfo(t: tf.TensorInfo): void;
}

/** Kernels registered for cpu but not for wasm that the model or its gradients can reach. */
export const WASM_KERNELS_VIA_CPU: readonly string[] = [
  "Conv2DBackpropFilter", // gradient of Conv2D w.r.t. the filter
  "DepthwiseConv2dNativeBackpropFilter",
  "DepthwiseConv2dNativeBackpropInput",
  "Einsum",
];

const viaCpu = (kernelName: string): tf.KernelConfig => ({
  kernelName,
  backendName: "wasm",
  kernelFunc: ({ inputs, backend, attrs }) => {
    const wasm = backend as unknown as WasmBackendLike;
    const cpu = tf.findBackend("cpu") as CpuBackendLike | null;
    const kernel = tf.getKernel(kernelName, "cpu");
    if (cpu === null || kernel === undefined) {
      throw new Error(`${kernelName} on wasm needs the cpu backend's kernel, which is not registered`);
    }
    const cpuInputs: Record<string, tf.TensorInfo> = {};
    for (const [k, t] of Object.entries(inputs)) {
      if (t) cpuInputs[k] = cpu.makeTensorInfo(t.shape, t.dtype, wasm.readSync(t.dataId));
    }
    try {
      const out = kernel.kernelFunc({ inputs: cpuInputs, backend: cpu, attrs });
      const outs = Array.isArray(out) ? out : [out];
      const inputIds = new Set(Object.values(cpuInputs).map((t) => t.dataId));
      const moved = outs.map((o) => {
        const w = wasm.makeOutput(o.shape, o.dtype, undefined, cpu.readSync(o.dataId));
        if (!inputIds.has(o.dataId)) cpu.disposeIntermediateTensorInfo(o);
        return w;
      });
      return Array.isArray(out) ? moved : moved[0];
    } finally {
      for (const t of Object.values(cpuInputs)) cpu.disposeIntermediateTensorInfo(t);
    }
  },
});

/** Kernel functions installed by this module, so that patching twice is a no-op. */
const ours = new WeakSet<tf.KernelFunc>();

/**
 * tfjs-backend-wasm 4.22.0's GatherV2 is wrong when `batchDims > 0`: its C++ steps through the indices by
 * `batch_size` instead of indices-per-batch, so every batch after the first reads the wrong rows (or
 * memory past the end). tensorflow/tfjs#8658, fix proposed in tensorflow/tfjs#8659, unreleased. The
 * batched gather (picking each image's visible tokens) therefore runs on the cpu kernel; `batchDims = 0`
 * keeps the wasm kernel.
 */
const patchWasmBatchedGather = (): void => {
  const original = tf.getKernel("GatherV2", "wasm");
  if (original === undefined || ours.has(original.kernelFunc)) return;
  const cpuPath = viaCpu("GatherV2").kernelFunc;
  const kernelFunc: tf.KernelFunc = (args) =>
    (args.attrs?.batchDims ?? 0) === 0 ? original.kernelFunc(args) : cpuPath(args);
  ours.add(kernelFunc);
  tf.unregisterKernel("GatherV2", "wasm");
  tf.registerKernel({ ...original, kernelFunc });
};

/** Host-memory access shared by the cpu and wasm backends. */
interface HostBackend {
  readSync(dataId: tf.DataId): tf.backend_util.BackendValues;
}

/**
 * `UnsortedSegmentSum` (the gradient of `gather`) in one pass over `x`: `out[ids[i], j] += x[i, j]`, ids
 * outside `[0, numSegments)` dropped as in TensorFlow. tfjs-backend-cpu 4.22's kernel builds a full-size
 * mask per segment (`equal` + `mul` + `sum` for each of `numSegments`), O(numSegments * x.size): the gather
 * gradient of ViT tokens, [3136, 192] with 3136 segments, did not finish in 10 minutes on the dev machine;
 * this takes milliseconds. Registered for cpu (replacing the stock kernel) and for wasm (which has none).
 */
const segmentSumKernel = (backendName: "cpu" | "wasm"): tf.KernelConfig => ({
  kernelName: "UnsortedSegmentSum",
  backendName,
  kernelFunc: ({ inputs, backend, attrs }) => {
    const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
    const numSegments = Number(attrs?.numSegments);
    const host = backend as unknown as HostBackend;
    const xs = host.readSync(x.dataId) as tf.TypedArray;
    const ids = host.readSync(segmentIds.dataId) as tf.TypedArray;
    const rest = x.shape.slice(segmentIds.shape.length);
    const inner = rest.reduce((a, b) => a * b, 1);
    const acc = new Float64Array(numSegments * inner);
    for (let i = 0; i < ids.length; i++) {
      const s = ids[i];
      if (s < 0 || s >= numSegments) continue;
      const src = i * inner, dst = s * inner;
      for (let j = 0; j < inner; j++) acc[dst + j] += xs[src + j];
    }
    const values = x.dtype === "int32" ? Int32Array.from(acc) : Float32Array.from(acc);
    const shape = [numSegments, ...rest];
    return backendName === "wasm"
      ? (backend as unknown as WasmBackendLike).makeOutput(shape, x.dtype, undefined, values)
      : (backend as unknown as CpuBackendLike).makeTensorInfo(shape, x.dtype, values);
  },
});

/** Installs {@link segmentSumKernel} for `backendName` unless this module already did. */
const installSegmentSum = (backendName: "cpu" | "wasm"): void => {
  const current = tf.getKernel("UnsortedSegmentSum", backendName);
  if (current !== undefined && ours.has(current.kernelFunc)) return;
  if (current !== undefined) tf.unregisterKernel("UnsortedSegmentSum", backendName);
  const config = segmentSumKernel(backendName);
  ours.add(config.kernelFunc);
  tf.registerKernel(current === undefined ? config : { ...current, kernelFunc: config.kernelFunc });
};

/** Replaces cpu kernels that are too slow for the model's shapes ({@link segmentSumKernel}); idempotent. */
export const registerCpuKernels = (): void => installSegmentSum("cpu");

/**
 * Registers {@link WASM_KERNELS_VIA_CPU} and a one-pass `UnsortedSegmentSum` for wasm, and routes batched
 * gathers around the wasm GatherV2 bug (idempotent; leaves correct wasm kernels alone).
 * {@link selectBackend} calls it before starting wasm.
 */
export const registerWasmFallbackKernels = (): void => {
  installSegmentSum("wasm");
  for (const name of WASM_KERNELS_VIA_CPU) {
    if (tf.getKernel(name, "wasm") === undefined && tf.getKernel(name, "cpu") !== undefined) {
      const config = viaCpu(name);
      ours.add(config.kernelFunc);
      tf.registerKernel(config);
    }
  }
  patchWasmBatchedGather();
};
