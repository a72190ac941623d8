/**
 * WebGPU's errors as exceptions. WebGPU reports errors asynchronously (uncaptured-error events, a lost
 * device) or through error scopes; without these, a validation error (a tensor past
 * maxStorageBufferBindingSize) makes a kernel write nothing and the result is a silent 0.
 * {@link checkDeviceErrors} throws what arrived since the last call; {@link withErrorScope} runs work
 * inside scopes and throws what it caused. lib/core/backend.ts watches the device it starts.
 *
 * @module
 */
import { tf, type WebGPUBackend } from "../deps.ts";

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
export const watchDevice = (device: GPUDevice): void => {
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
