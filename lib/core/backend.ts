/**
 * Choosing and starting the tfjs backend.
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
 * lib/core/webgpu_errors.ts `withErrorScope`.
 *
 * So wasm is the CPU default (12x cpu on the matmul, 5x on a training step). Its threaded build cannot
 * start under Deno (`ERR_WORKER_PATH`: it spawns its pthread workers from a Blob URL through
 * node:worker_threads), so wasm runs one thread. In the wasm block, BatchMatMul is ~2/3 of the time and
 * the 5-D Transpose of qkv ~1/5 (tf.profile).
 *
 * wasm lacks some kernels the model's gradients reach, and one of its kernels is wrong: {@link selectBackend}
 * registers the fallbacks of lib/core/kernels/wasm_fallback.ts before starting wasm (and cpu's faster
 * `UnsortedSegmentSum` before starting cpu). WebGPU's asynchronous errors are turned into exceptions by
 * lib/core/webgpu_errors.ts, whose device watch {@link selectBackend} installs.
 *
 * The wasm binaries are found by the package itself next to its JS (`__dirname`), which holds for a local
 * `node_modules` and for Deno's global npm cache alike, so this also works when the project is imported by
 * URL. Where they are missing (a bundle), auto falls back to cpu and says so in `BackendInfo.note`.
 *
 * @module
 */
import { gemmAvailable, gemmThreads, setGemmThreads } from "./kernels/gemm_pool.ts";
import { tf } from "../deps.ts";
import { installMemoryWatermark } from "./memory.ts";
import { capGpuPool } from "./gpu_pool.ts";
import { message } from "./fs.ts";
import { registerCpuKernels, registerWasmFallbackKernels } from "./kernels/wasm_fallback.ts";
import { watchDevice, webgpuDevice } from "./webgpu_errors.ts";
import { enableShaderExtensions, withOptionalFeatures } from "./webgpu_features.ts";

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

/** Whether `s` is one of {@link backendNames}. */
export const isBackendName = (s: string): s is BackendName => (backendNames as readonly string[]).includes(s);
const ENV_VAR = "CAEV2_BACKEND";

/**
 * Keeps libwayland's `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` off the terminal.
 * Where a Vulkan loader has Mesa's device-select layer (Debian's mesa-vulkan-drivers), each adapter request
 * makes the layer call `wl_display_connect`, and libwayland writes that line to stderr (twice a run: the
 * probe below and tfjs's own request) when `XDG_RUNTIME_DIR` is unset or not an absolute path. Measured
 * with lavapipe on the 2-core dev machine: with the variable pointing at an absolute path the connection
 * fails quietly and the adapters are the same. So, when it is unset or relative (and only then; a desktop
 * session's value is left alone), the variable names a fresh empty directory (0700) while
 * {@link selectBackend} runs; the returned function puts the variable back and removes the directory.
 * Needs env and write permission; without them nothing is changed (and nothing prompts).
 */
const quietWaylandProbe = (): (() => void) | undefined => {
  if (Deno.build.os !== "linux") return undefined;
  const granted = (d: Deno.PermissionDescriptor) => Deno.permissions.querySync(d).state === "granted";
  try {
    if (!granted({ name: "env", variable: "XDG_RUNTIME_DIR" }) || !granted({ name: "write" })) {
      return undefined;
    }
    const before = Deno.env.get("XDG_RUNTIME_DIR");
    if (before?.startsWith("/")) return undefined;
    const dir = Deno.makeTempDirSync({ prefix: "caev2-xdg-" });
    Deno.env.set("XDG_RUNTIME_DIR", dir);
    return () => {
      try {
        if (before === undefined) Deno.env.delete("XDG_RUNTIME_DIR");
        else Deno.env.set("XDG_RUNTIME_DIR", before);
        Deno.removeSync(dir);
      } catch {
        // Not empty, or already gone: leave it.
      }
    };
  } catch {
    return undefined; // only cosmetic: the probe works without it
  }
};

/** The adapter tfjs will use, or null; `undo` collects what puts the environment back afterwards. */
const requestAdapter = async (undo: (() => void)[]): Promise<GPUAdapter | null> => {
  const gpu = (navigator as { gpu?: GPU }).gpu;
  if (gpu === undefined) return null;
  const restore = quietWaylandProbe();
  if (restore !== undefined) undo.push(restore);
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
    return message(e);
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
  const failed = await withOptionalFeatures(() => setBackend("webgpu"));
  if (failed !== undefined) return failed;
  const device = webgpuDevice();
  if (device === undefined) return "tfjs reports no WebGPU device";
  watchDevice(device);
  enableShaderExtensions(device);
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
  if (failed !== undefined) return failed;
  // tfjs's cpu backend greets its first tensor under Node-like runtimes with a banner recommending tfjs-node,
  // which Deno cannot load; mark the greeting done (its only use of `firstUse`) so runs stay quiet.
  const cpu = tf.findBackend("cpu") as { firstUse?: boolean } | null;
  if (cpu !== null && cpu.firstUse === true) cpu.firstUse = false;
  return { name: "cpu", detail: "plain JavaScript" };
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
 * Registers the WebGPU error handlers (lib/core/webgpu_errors.ts `checkDeviceErrors`) and wasm's missing
 * kernels. Throws a
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
  // tfjs's own adapter request (in startWebGPU) happens inside too, so the quiet environment lasts until
  // the backend has started.
  const undo: (() => void)[] = [];
  const adapter = () => (adapterPromise ??= requestAdapter(undo));
  try {
    return await pick(choice, fromEnv, adapter, threads);
  } finally {
    for (const f of undo) f();
  }
};

const pick = async (
  choice: BackendChoice,
  fromEnv: string | undefined,
  adapter: () => Promise<GPUAdapter | null>,
  threads: WasmThreads | undefined,
): Promise<BackendInfo> => {
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
