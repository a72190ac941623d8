/**
 * Choosing and starting the tfjs backend, and turning WebGPU's asynchronous errors into exceptions.
 *
 * Policy of {@link selectBackend}: an explicit name (flag) wins, then the `CAEV2_BACKEND` environment
 * variable, else "auto": WebGPU on a hardware adapter, else wasm, else cpu. A *software* WebGPU adapter
 * (`isFallbackAdapter`, e.g. llvmpipe) is skipped by auto because wasm beats it several times over (figures
 * below); ask for it by name (`--backend webgpu`, `CAEV2_BACKEND=webgpu`) to test GPU code paths.
 *
 * Measured 2026-11-26 on the 2-core CPU dev machine (Deno 2.9.6, tfjs 4.22.0, float32; ms per call after a
 * warm-up; "block" = one ViT-T pre-norm block on x: [16, 198, 192], 12 heads, erf-GELU MLP 192 -> 768,
 * layer norm by hand; "+grad" = tf.variableGrads of sum(block(x)^2) w.r.t. its 6 weights):
 *
 * | backend                         | matmul [3168,192]x[192,576] | block fwd | block fwd+grad |
 * | ------------------------------- | --------------------------- | --------- | -------------- |
 * | cpu (plain JS)                  |   902                       |  6930     | 22625          |
 * | wasm, SIMD, 1 thread (default)  |    73                       |   986     |  4662          |
 * | wasm, no SIMD, 1 thread         |   126                       |  1149     |  4177          |
 * | webgpu on llvmpipe (fallback)   |   281                       |  6815     | 19178          |
 *
 * On the H200 device machine (Vulkan, from a `deno bundle`), auto picked `webgpu (NVIDIA H200)`, the same
 * matmul took 18.4 ms including the readback, and a tensor one element past maxStorageBufferBindingSize
 * (2 GiB there, 128 MiB on llvmpipe) summed to a silent 0 outside an error scope and threw inside
 * {@link withErrorScope}.
 *
 * So wasm is the CPU default (12x cpu on the matmul, 5x on a training step). Its threaded build cannot
 * start under Deno (`ERR_WORKER_PATH`: it spawns its pthread workers from a Blob URL through
 * node:worker_threads), so wasm runs one thread. In the wasm block, BatchMatMul is ~2/3 of the time and
 * the 5-D Transpose of qkv ~1/5 (tf.profile).
 *
 * wasm lacks some kernels the model's gradients reach: `UnsortedSegmentSum` (the gradient of `gather`,
 * i.e. of picking the visible tokens) and `Conv2DBackpropFilter` (the gradient of a conv patch embedding
 * w.r.t. its filter), plus the depthwise-conv backprops and `Einsum`. {@link selectBackend} registers a
 * one-pass `UnsortedSegmentSum` (also replacing cpu's, which is O(numSegments * size)) and runs the others
 * on wasm through the cpu kernel on copies of the inputs (correct; costs one copy each way). wasm's
 * GatherV2 is also wrong for `batchDims > 0` (tensorflow/tfjs#8658): such gathers go through cpu too.
 *
 * The wasm binaries are found by the package itself next to its JS (`__dirname`), which holds for a local
 * `node_modules` and for Deno's global npm cache alike, so this also works when the project is imported by
 * URL. Where they are missing (a bundle), auto falls back to cpu and says so in `BackendInfo.note`.
 *
 * @module
 */
import { gemmAvailable, gemmThreads, setGemmThreads } from "./kernels/gemm_pool.ts";
import { tf, type WebGPUBackend } from "../deps.ts";
import { installMemoryWatermark } from "./memory.ts";
import { capGpuPool } from "./gpu_pool.ts";

/** The tfjs backends this project supports, in the order "auto" prefers them. */
export const backendNames = ["webgpu", "wasm", "cpu"] as const;
/** A tfjs backend this project supports. */
export type BackendName = (typeof backendNames)[number];
/** What a `--backend` flag or `CAEV2_BACKEND` may name: a backend, or "auto" ({@link selectBackend}'s policy). */
export type BackendChoice = "auto" | BackendName;

/** What {@link selectBackend} started. */
export interface BackendInfo {
  /** The backend that runs every tfjs op from now on. */
  readonly name: BackendName;
  /** GPUAdapterInfo description (or vendor) of the WebGPU adapter. */
  readonly adapter?: string;
  /** True when the WebGPU adapter is a software fallback (llvmpipe, lavapipe, SwiftShader). */
  readonly fallbackAdapter?: boolean;
  /** Device features that tfjs enabled (WebGPU). */
  readonly features?: readonly string[];
  /** Device limits that bound the size of one tensor on WebGPU. */
  readonly limits?: { readonly maxStorageBufferBindingSize: number; readonly maxBufferSize: number };
  /** Backend details, e.g. "SIMD, 1 thread" for wasm. */
  readonly detail?: string;
  /** Why auto chose this backend over a better one, when it did. */
  readonly note?: string;
}

const isBackendName = (s: string): s is BackendName => (backendNames as readonly string[]).includes(s);
const ENV_VAR = "CAEV2_BACKEND";

// ---------------------------------------------------------------------------------------------------
// WebGPU errors

/** What kind of GPU error: the WebGPU error scopes, plus a lost device. */
export type WebGPUErrorKind = "validation" | "out-of-memory" | "internal" | "device-lost";

/** A WebGPU error turned into an exception; `gpuMessage` is the driver's text. */
export class WebGPUError extends Error {
  readonly kind: WebGPUErrorKind;
  readonly gpuMessage: string;
  constructor(kind: WebGPUErrorKind, gpuMessage: string, hint: string, options?: ErrorOptions) {
    super(
      `WebGPU ${kind === "device-lost" ? "device lost" : `${kind} error`}: ${gpuMessage}. ${hint}`,
      options,
    );
    this.name = "WebGPUError";
    this.kind = kind;
    this.gpuMessage = gpuMessage;
  }
}

const MiB = (n: number) => `${Math.round(n / 2 ** 20)} MiB`;

const hintFor = (kind: WebGPUErrorKind, device: GPUDevice): string => {
  switch (kind) {
    case "validation":
      return `The GPU refused a command. Often a tensor is larger than one binding allows ` +
        `(maxStorageBufferBindingSize ${MiB(device.limits.maxStorageBufferBindingSize)}, maxBufferSize ` +
        `${
          MiB(device.limits.maxBufferSize)
        }): reduce the batch size or split the op. Otherwise it is a kernel ` +
        `bug: rerun with --backend cpu to compare`;
    case "out-of-memory":
      return "Reduce the batch size or the model, or dispose tensors no longer needed (see tf.memory())";
    case "internal":
      return "The driver failed (shader too large or too slow?); rerun with --backend cpu to compare";
    case "device-lost":
      return "The GPU was reset (driver crash, timeout or memory exhaustion): restart the process, perhaps " +
        "with a smaller batch; checkpoints already written are intact";
  }
};

const kindOf = (e: GPUError): WebGPUErrorKind => {
  const cls = e.constructor?.name ?? "";
  if (cls.includes("Validation")) return "validation";
  if (cls.includes("OutOfMemory")) return "out-of-memory";
  return "internal";
};

const fromGPUError = (e: GPUError, device: GPUDevice, cause?: unknown): WebGPUError => {
  const kind = kindOf(e);
  return new WebGPUError(kind, e.message, hintFor(kind, device), cause === undefined ? undefined : { cause });
};

// The one piece of module state: errors that arrived asynchronously (events, device.lost) wait here for
// the next checkDeviceErrors(). The first is kept whole; later ones are only counted.
let pendingError: WebGPUError | undefined;
let droppedErrors = 0;
const watchedDevices = new WeakSet<GPUDevice>();

const recordError = (e: WebGPUError): void => {
  if (pendingError === undefined) pendingError = e;
  else droppedErrors++;
};

/** Routes a device's uncaptured errors and its loss to {@link checkDeviceErrors} (once per device). */
const watchDevice = (device: GPUDevice): void => {
  if (watchedDevices.has(device)) return;
  watchedDevices.add(device);
  device.addEventListener("uncapturederror", (ev) => {
    ev.preventDefault();
    recordError(fromGPUError((ev as GPUUncapturedErrorEvent).error, device));
  });
  device.lost.then((info) => {
    // "destroyed" is a deliberate device.destroy() (tfjs backend disposal), not a failure.
    if (info.reason !== "destroyed") {
      recordError(
        new WebGPUError("device-lost", info.message || "no message", hintFor("device-lost", device)),
      );
    }
  });
};

/**
 * Throws the first WebGPU error recorded since the last call (validation, out-of-memory, internal, device
 * lost), then forgets it. WebGPU reports errors asynchronously, so call this after awaiting GPU work, e.g.
 * once per training step after `await loss.data()`. A no-op on other backends.
 */
export const checkDeviceErrors = (): void => {
  const e = pendingError, more = droppedErrors;
  pendingError = undefined;
  droppedErrors = 0;
  if (e === undefined) return;
  if (more === 0) throw e;
  throw new WebGPUError(e.kind, `${e.gpuMessage} (and ${more} more GPU error(s))`, "", { cause: e });
};

/** The current tfjs WebGPU backend, or undefined when another backend is active. */
const webgpuBackend = (): WebGPUBackend | undefined =>
  tf.getBackend() === "webgpu" ? tf.backend() as WebGPUBackend : undefined;

/** The GPUDevice of the active tfjs WebGPU backend, or undefined on other backends. */
export const webgpuDevice = (): GPUDevice | undefined => webgpuBackend()?.device;

/**
 * Runs `f` inside "validation" and "out-of-memory" error scopes of the active WebGPU device and throws a
 * {@link WebGPUError} if the GPU reported one (tfjs's batched commands are submitted before the scopes are
 * popped, so the errors of `f`'s kernels are caught). Do not run two of these concurrently: scopes are a
 * per-device stack. On other backends it just runs `f`.
 */
export const withErrorScope = async <T>(f: () => Promise<T>): Promise<T> => {
  const backend = webgpuBackend();
  if (backend === undefined) return await f();
  const device = backend.device;
  device.pushErrorScope("out-of-memory");
  device.pushErrorScope("validation");
  let outcome: { ok: true; value: T } | { ok: false; error: unknown };
  try {
    outcome = { ok: true, value: await f() };
  } catch (error) {
    outcome = { ok: false, error };
  }
  try {
    // Submit what tfjs has batched (WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE), as it does before a read.
    backend.ensureCommandEncoderReady();
    backend.endComputePassEncoder();
    backend.submitQueue();
  } catch (error) {
    if (outcome.ok) outcome = { ok: false, error };
  }
  const validation = await device.popErrorScope();
  const oom = await device.popErrorScope();
  const gpu = validation ?? oom;
  if (gpu) throw fromGPUError(gpu, device, outcome.ok ? undefined : outcome.error);
  if (!outcome.ok) throw outcome.error;
  return outcome.value;
};

// ---------------------------------------------------------------------------------------------------
// wasm: kernels it lacks, run by the cpu backend

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

// ---------------------------------------------------------------------------------------------------
// Starting backends

const requestAdapter = async (): Promise<GPUAdapter | null> => {
  const gpu = (navigator as { gpu?: GPU }).gpu;
  if (gpu === undefined) return null;
  try {
    // The same request tfjs-backend-webgpu makes, so this is the adapter it will use.
    return await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch {
    return null;
  }
};

const adapterName = (a: GPUAdapter): string => a.info.description || a.info.vendor || "unnamed adapter";

const isFallback = (a: GPUAdapter): boolean =>
  (a.info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter ??
    (a as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false;

/** tf.setBackend, with its swallowed init failure turned into a reason. */
const setBackend = async (name: BackendName): Promise<string | undefined> => {
  try {
    if (!(await tf.setBackend(name))) return `tf.setBackend("${name}") failed (see the warning above)`;
    await tf.ready();
    // The peak-memory counters (lib/core/memory.ts) count tensors made from here on.
    installMemoryWatermark();
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
};

/**
 * `CAEV2_GPU_POOL_MIB`: cap on the WebGPU backend's pool of free buffers (lib/core/gpu_pool.ts), or
 * "unbounded" for tfjs's own pool. Default 1 GiB: on the dev machine's software adapter the unbounded pool
 * held 0.39 GiB for a 0.25 GiB peak of live tensors, the capped one 0.25-0.30 GiB at the same speed.
 */
const POOL_VAR = "CAEV2_GPU_POOL_MIB";
const DEFAULT_POOL_MIB = 1024;

/** The pool cap `CAEV2_GPU_POOL_MIB` asks for, in MiB; throws on a value that is not one. */
const gpuPoolMibFromEnv = (): number => {
  const pool = Deno.env.get(POOL_VAR);
  if (pool === undefined) return DEFAULT_POOL_MIB;
  const mib = pool.trim() === "unbounded" ? Infinity : Number(pool);
  if (pool.trim() === "" || !(mib >= 0)) {
    throw new Error(
      `${POOL_VAR}=${
        JSON.stringify(pool)
      }: expected a number of MiB >= 0 or "unbounded" (the cap on WebGPU's ` +
        "pool of free buffers); unset it for the default 1024",
    );
  }
  return mib;
};

const startWebGPU = async (adapter: GPUAdapter | null): Promise<BackendInfo | string> => {
  if (adapter === null) {
    return "no WebGPU adapter (Deno needs a GPU driver or a software one such as mesa's llvmpipe/lavapipe)";
  }
  const failed = await setBackend("webgpu");
  if (failed !== undefined) return failed;
  const device = webgpuDevice();
  if (device === undefined) return "tfjs reports no WebGPU device";
  watchDevice(device);
  capGpuPool(gpuPoolMibFromEnv() * 2 ** 20);
  return {
    name: "webgpu",
    adapter: adapterName(adapter),
    fallbackAdapter: isFallback(adapter),
    features: [...device.features].sort(),
    limits: {
      maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
      maxBufferSize: device.limits.maxBufferSize,
    },
  };
};

/** `CAEV2_THREADS`: threads of wasm's packed matmul (lib/core/kernels/gemm_pool.ts); 0 leaves products to tfjs's own kernels. */
const THREADS_VAR = "CAEV2_THREADS";
/**
 * The fewest threads `CAEV2_THREADS` may always ask for: a few threads past the logical cores only wait their
 * turn (the tests oversubscribe a 2-core machine on purpose), but a thousand would start a thousand workers
 * and overrun the pool's 512 slots (lib/core/kernels/gemm_pool.ts). The cap is the larger of this and the
 * logical cores.
 */
const THREADS_CAP_FLOOR = 64;

/** A checked `CAEV2_THREADS`: the threads to use, and why fewer than asked for, when so. */
interface WasmThreads {
  readonly threads: number;
  readonly capped?: string;
}

/**
 * Reads and checks `CAEV2_THREADS` (undefined when unset). A value that is not a whole number of threads
 * throws, whatever the backend: were it only a failed wasm start, "auto" would fall back to the cpu
 * backend, 5x slower, with nothing but a note. Above {@link THREADS_CAP_FLOOR} and the logical cores, the
 * threads are capped and `capped` says so for the backend line.
 */
const wasmThreadsFromEnv = (): WasmThreads | undefined => {
  let raw: string | undefined;
  try {
    raw = Deno.env.get(THREADS_VAR);
  } catch {
    return undefined; // no --allow-env: the variable cannot be set for us anyway
  }
  if (raw === undefined) return undefined;
  if (!/^\s*\d+\s*$/.test(raw)) {
    throw new Error(
      `${THREADS_VAR}=${JSON.stringify(raw)}: expected a whole number of threads >= 0 (0: matrix products ` +
        `on tfjs's own kernels); set it to one, or unset it for the default (the logical cores, at most 8)`,
    );
  }
  const n = Number(raw);
  const cores = navigator.hardwareConcurrency > 0 ? navigator.hardwareConcurrency : 0;
  const cap = Math.max(THREADS_CAP_FLOOR, cores);
  if (n <= cap) return { threads: n };
  return {
    threads: cap,
    capped: `${THREADS_VAR}=${raw.trim()} capped at ${cap} threads (the larger of ${THREADS_CAP_FLOOR} and ` +
      `the ${cores || "unknown number of"} logical cores)`,
  };
};

const startWasm = async (threads: WasmThreads | undefined): Promise<BackendInfo | string> => {
  if (threads !== undefined) setGemmThreads(threads.threads);
  registerWasmFallbackKernels();
  const failed = await setBackend("wasm");
  if (failed !== undefined) {
    return `${failed}; the .wasm files of @tensorflow/tfjs-backend-wasm must sit next to its JS (not bundled)`;
  }
  const simd = tf.env().getBool("WASM_HAS_SIMD_SUPPORT");
  // tfjs's own kernels (XNNPACK) run on one thread; matrix products on lib/core/kernels/gemm_pool.ts.
  const n = gemmThreads();
  const gemm = gemmAvailable()
    ? `, matmul on ${n} thread${n === 1 ? "" : "s"}${threads?.capped ? ` (${threads.capped})` : ""}`
    : "";
  return { name: "wasm", detail: `${simd ? "SIMD" : "no SIMD"}, 1 thread${gemm}` };
};

const startCpu = async (): Promise<BackendInfo | string> => {
  registerCpuKernels();
  const failed = await setBackend("cpu");
  return failed ?? { name: "cpu", detail: "plain JavaScript" };
};

const start = (
  name: BackendName,
  adapter: () => Promise<GPUAdapter | null>,
  threads: WasmThreads | undefined,
): Promise<BackendInfo | string> =>
  name === "webgpu" ? adapter().then(startWebGPU) : name === "wasm" ? startWasm(threads) : startCpu();

const envBackend = (): string | undefined => {
  try {
    return Deno.env.get(ENV_VAR) || undefined;
  } catch {
    return undefined; // no --allow-env: the variable cannot be set for us anyway
  }
};

/**
 * Picks and starts a backend: `preferred` (a flag), else the `CAEV2_BACKEND` environment variable, else
 * "auto" (WebGPU on a hardware adapter, else wasm, else cpu; see the module doc for the measurements).
 * Registers the WebGPU error handlers ({@link checkDeviceErrors}) and wasm's missing kernels. Throws a
 * message saying what failed and what to do when a backend asked for by name cannot start, and when
 * `CAEV2_BACKEND` is not a backend or `CAEV2_THREADS` not a number of threads (under "auto" too);
 * an absurd `CAEV2_THREADS` (above 64 and the logical cores) is capped, and wasm's `detail` says so.
 *
 * @example
 * ```ts
 * import { describeBackend, selectBackend } from "./backend.ts";
 * const info = await selectBackend("cpu");
 * if (describeBackend(info) !== "backend: cpu (plain JavaScript)") throw new Error("unexpected");
 * ```
 */
export const selectBackend = async (preferred: BackendChoice = "auto"): Promise<BackendInfo> => {
  const fromEnv = preferred === "auto" ? envBackend() : undefined;
  const choice = fromEnv ?? preferred;
  if (choice !== "auto" && !isBackendName(choice)) {
    const where = fromEnv !== undefined ? `${ENV_VAR}=${choice}` : `backend "${choice}"`;
    throw new Error(`${where}: unknown backend; expected one of auto, ${backendNames.join(", ")}`);
  }
  // Checked before anything starts, for every backend: a bad value is refused, never a reason to fall back.
  const threads = wasmThreadsFromEnv();
  gpuPoolMibFromEnv();
  let adapterPromise: Promise<GPUAdapter | null> | undefined;
  const adapter = () => (adapterPromise ??= requestAdapter());

  if (choice !== "auto") {
    const r = await start(choice, adapter, threads);
    if (typeof r === "string") {
      const others = backendNames.filter((n) => n !== choice).join(" or ");
      throw new Error(
        `backend ${choice} was requested${
          fromEnv !== undefined ? ` (by ${ENV_VAR})` : ""
        } but cannot start: ${r}. ` +
          `Use --backend ${others}, or --backend auto to let the toolkit choose`,
      );
    }
    return r;
  }

  const notes: string[] = [];
  const a = await adapter();
  if (a !== null && !isFallback(a)) {
    const r = await startWebGPU(a);
    if (typeof r !== "string") return r;
    notes.push(`webgpu failed (${r})`);
  } else if (a !== null) {
    notes.push(
      `WebGPU adapter "${adapterName(a)}" is a software fallback, slower than wasm; ` +
        `${ENV_VAR}=webgpu uses it anyway`,
    );
  }
  const w = await startWasm(threads);
  if (typeof w !== "string") return { ...w, note: notes.join("; ") || undefined };
  notes.push(`wasm failed (${w})`);
  const c = await startCpu();
  if (typeof c === "string") throw new Error(`no tfjs backend could start: ${notes.join("; ")}; cpu: ${c}`);
  return { ...c, note: notes.join("; ") };
};

/**
 * One line for logs, e.g. `backend: webgpu (llvmpipe (LLVM 15.0.6, 256 bits), fallback adapter)` or
 * `backend: wasm (SIMD, 1 thread; WebGPU adapter "llvmpipe ..." is a software fallback, ...)`.
 */
export const describeBackend = (info: BackendInfo): string => {
  const parts: string[] = [];
  if (info.adapter !== undefined) {
    parts.push(info.adapter + (info.fallbackAdapter ? ", fallback adapter" : ""));
  }
  if (info.detail !== undefined) parts.push(info.detail);
  const inner = parts.join(", ") + (info.note ? `${parts.length ? "; " : ""}${info.note}` : "");
  return `backend: ${info.name}${inner ? ` (${inner})` : ""}`;
};
