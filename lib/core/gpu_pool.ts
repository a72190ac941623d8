/**
 * A cap on the WebGPU backend's pool of free buffers.
 *
 * tfjs-backend-webgpu 4.22's `BufferManager` keeps every released buffer for reuse, pooled by exact size
 * and usage, for the life of the process: a buffer freed by one op can serve only a later tensor of the
 * very same byte size. Within a training step tensors of many sizes come and go, so the pool holds, for
 * each size, as many buffers as were ever alive at once, and the GPU memory held grows past the step's
 * peak of live tensors (measured on the dev machine's llvmpipe adapter, ViT-T batch 4, micro teacher:
 * 0.39 GiB held for a 0.25 GiB peak of live tensor data, BENCHMARKS.md "Memory").
 *
 * With a cap, a buffer released while the pool already holds `maxFreeBytes` is destroyed instead of
 * pooled (WebGPU keeps a destroyed buffer alive until the commands already submitted that use it have
 * run). Reuse still serves the common case: a step's shapes repeat every step.
 *
 * The WebGPU backend starts with a cap of 1 GiB (lib/core/backend.ts); `CAEV2_GPU_POOL_MIB=N` sets
 * another (`unbounded`: tfjs's own pool), and `deno task bench --gpu-pool-mib N` for one benchmark.
 *
 * @module
 */
import { tf } from "../deps.ts";

/** The `BufferManager` members this module uses (tfjs-backend-webgpu 4.22 `buffer_manager.js`). */
interface BufferManager {
  numBytesUsed: number;
  numBytesAllocated: number;
  numFreeBuffers: number;
  freeBuffers: Map<string, GPUBuffer[]>;
  acquireBuffer(size: number, usage: number, mappedAtCreation?: boolean, reuse?: boolean): GPUBuffer;
  releaseBuffer(buffer: GPUBuffer, reuse?: boolean): void;
}

const manager = (): BufferManager | undefined => {
  if (tf.getBackend() !== "webgpu") return undefined;
  const m = (tf.backend() as unknown as { bufferManager?: Partial<BufferManager> }).bufferManager;
  if (m == null || typeof m.releaseBuffer !== "function" || typeof m.numBytesAllocated !== "number") {
    throw new Error(
      "lib/core/gpu_pool.ts: the WebGPU backend's bufferManager (releaseBuffer, numBytesAllocated) was not " +
        "found; it is written against @tensorflow/tfjs-backend-webgpu 4.22.0: update it with tfjs",
    );
  }
  return m as BufferManager;
};

const stock = new WeakMap<BufferManager, BufferManager["releaseBuffer"]>();
const caps = new WeakMap<BufferManager, number>();

/** Destroys pooled free buffers until the pool holds at most `maxFreeBytes`. */
const trim = (m: BufferManager, maxFreeBytes: number) => {
  for (const buffers of m.freeBuffers.values()) {
    while (buffers.length > 0 && m.numBytesAllocated - m.numBytesUsed > maxFreeBytes) {
      const b = buffers.pop()!;
      m.numBytesAllocated -= b.size;
      m.numFreeBuffers--;
      b.destroy();
    }
  }
};

/**
 * Caps the free pool of the active WebGPU backend at `maxFreeBytes` (`Infinity`: tfjs's unbounded pool),
 * releasing what it holds beyond the cap now. Returns false when the active backend is not WebGPU.
 */
export const capGpuPool = (maxFreeBytes: number): boolean => {
  if (!(maxFreeBytes >= 0)) throw new Error(`capGpuPool: the cap must be >= 0 bytes, got ${maxFreeBytes}`);
  const m = manager();
  if (m === undefined) return false;
  caps.set(m, maxFreeBytes);
  trim(m, maxFreeBytes);
  if (!stock.has(m)) {
    const release = m.releaseBuffer;
    stock.set(m, release);
    m.releaseBuffer = function (this: BufferManager, buffer, reuse = true) {
      const free = this.numBytesAllocated - this.numBytesUsed;
      const keep = reuse && free + buffer.size <= (caps.get(this) ?? Infinity);
      release.call(this, buffer, keep);
    };
  }
  return true;
};

const peaks = new WeakMap<BufferManager, number>();

/**
 * Starts a high-water mark of the bytes the active WebGPU backend holds (used + pooled: what the GPU
 * driver sees), from the bytes held now. Idempotent hooks; false off WebGPU.
 */
export const resetGpuPeak = (): boolean => {
  const m = manager();
  if (m === undefined) return false;
  if (!peaks.has(m)) {
    const acquire = m.acquireBuffer;
    m.acquireBuffer = function (this: BufferManager, size, usage, mapped, reuse) {
      const b = acquire.call(this, size, usage, mapped, reuse);
      if (this.numBytesAllocated > (peaks.get(this) ?? 0)) peaks.set(this, this.numBytesAllocated);
      return b;
    };
  }
  peaks.set(m, m.numBytesAllocated);
  return true;
};

/**
 * Bytes the WebGPU backend holds now in live tensors (`used`) and in its free pool (`free`), and the most
 * it held since {@link resetGpuPeak} (`peak`); undefined off WebGPU.
 */
export const gpuPoolBytes = ():
  | { readonly used: number; readonly free: number; readonly peak: number | undefined }
  | undefined => {
  const m = manager();
  return m === undefined
    ? undefined
    : { used: m.numBytesUsed, free: m.numBytesAllocated - m.numBytesUsed, peak: peaks.get(m) };
};
