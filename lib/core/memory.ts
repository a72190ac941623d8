/**
 * A cheap high-water mark of tensor memory, on every backend, without the profiler.
 *
 * Two figures, both kept by hooks on tfjs-core 4.22's engine (`trackTensor`, `removeDataId`), so reading them costs nothing and no kernel is timed:
 * - **tensor bytes**: the engine's own count (`tf.memory().numBytes`, what `tf.profile` reports as
 *   `peakBytes`): every live tensor handle's size, so a reshape or a tape's saved clone that shares its
 *   data with another handle is counted again;
 * - **buffer bytes**: the bytes of the distinct data blocks behind the live handles (each counted once):
 *   what the backend really holds for tensors. WebGPU's buffer pool and the wasm heap's free lists come
 *   on top (`tf.memory()` on WebGPU reports the pool).
 *
 * @module
 */
import { tf } from "../deps.ts";

interface EngineInternals {
  trackTensor(a: tf.Tensor, backend: unknown): void;
  removeDataId(dataId: object, backend: unknown): void;
  state: { numBytes: number; tensorInfo: WeakMap<object, { bytes: number; backend: unknown }> };
}

/** Peaks since the last {@link resetPeakMemory}, and the current figures. */
export interface MemoryMark {
  /** Highest engine count of live tensor bytes (shared data counted per handle). */
  readonly peakTensorBytes: number;
  /** Highest count of bytes in distinct live data blocks. */
  readonly peakBufferBytes: number;
  /** Live tensor bytes now, by the engine's count. */
  readonly tensorBytes: number;
  /** Bytes in distinct live data blocks now. */
  readonly bufferBytes: number;
}

let installed = false;
let bufferBytes = 0;
let peakTensor = 0;
let peakBuffer = 0;

const engine = (): EngineInternals => {
  const e = tf.engine() as unknown as Partial<EngineInternals>;
  if (
    typeof e.trackTensor !== "function" || typeof e.removeDataId !== "function" || e.state == null
  ) {
    throw new Error(
      "lib/core/memory.ts: tfjs engine internals (trackTensor, removeDataId) not found; " +
        "it is written against @tensorflow/tfjs-core 4.22.0: update it with tfjs",
    );
  }
  return e as EngineInternals;
};

/**
 * Installs the hooks (idempotent). Blocks that exist already are not counted in the buffer bytes: call it
 * before making the tensors to be measured (backend selection does).
 */
export const installMemoryWatermark = (): void => {
  if (installed) return;
  const e = engine();
  installed = true;
  bufferBytes = 0;
  // The engine keeps its blocks in a WeakMap, which cannot be walked: blocks made before the hooks are
  // not counted, and so not taken off when they go.
  const counted = new WeakSet<object>();
  const track = e.trackTensor, remove = e.removeDataId;
  e.trackTensor = function (this: EngineInternals, a, backend) {
    const fresh = !this.state.tensorInfo.has(a.dataId);
    track.call(this, a, backend);
    if (fresh) {
      const info = this.state.tensorInfo.get(a.dataId);
      if (info) {
        bufferBytes += info.bytes;
        counted.add(a.dataId);
      }
    }
    if (this.state.numBytes > peakTensor) peakTensor = this.state.numBytes;
    if (bufferBytes > peakBuffer) peakBuffer = bufferBytes;
  };
  e.removeDataId = function (this: EngineInternals, dataId, backend) {
    const info = this.state.tensorInfo.get(dataId);
    if (info && info.backend === backend && counted.has(dataId)) {
      bufferBytes -= info.bytes;
      counted.delete(dataId);
    }
    remove.call(this, dataId, backend);
  };
};

/** Starts a new peak from the current figures. */
export const resetPeakMemory = (): void => {
  installMemoryWatermark();
  peakTensor = engine().state.numBytes;
  peakBuffer = bufferBytes;
};

/** The peaks since the last reset and the current figures. */
export const peakMemory = (): MemoryMark => {
  installMemoryWatermark();
  return {
    peakTensorBytes: Math.max(peakTensor, engine().state.numBytes),
    peakBufferBytes: Math.max(peakBuffer, bufferBytes),
    tensorBytes: engine().state.numBytes,
    bufferBytes,
  };
};
