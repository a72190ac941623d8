/**
 * Optional WebGPU device features for tfjs's device. tfjs-backend-webgpu 4.22 creates its device itself and
 * asks only for `timestamp-query` (and `bgra8unorm-storage`); the f16 kernels (`--precision f16`,
 * lib/core/precision.ts) need `shader-f16`, and WGSL needs an `enable f16;` line before anything else in a
 * module that uses it, which tfjs's shader prelude cannot place. So, around tfjs's start of the backend,
 * {@link withOptionalFeatures} adds the features the adapter offers to tfjs's device request, and
 * {@link enableF16Shaders} prefixes `enable f16;` to the shader modules that use f16.
 *
 * @module
 */

/** Features this project uses when the adapter has them. */
export const OPTIONAL_FEATURES: readonly GPUFeatureName[] = ["shader-f16"];

/**
 * Runs `start` (tfjs's backend start) with `GPUAdapter.prototype.requestDevice` asking also for every
 * feature of `wanted` that the adapter offers; the method is put back afterwards.
 */
export const withOptionalFeatures = async <T>(
  start: () => Promise<T>,
  wanted: readonly GPUFeatureName[] = OPTIONAL_FEATURES,
): Promise<T> => {
  const proto = (globalThis as { GPUAdapter?: { prototype: GPUAdapter } }).GPUAdapter?.prototype;
  if (proto === undefined) return await start();
  const original = proto.requestDevice;
  proto.requestDevice = function (this: GPUAdapter, descriptor?: GPUDeviceDescriptor) {
    const asked = [...(descriptor?.requiredFeatures ?? [])];
    const extra = wanted.filter((f) => this.features.has(f) && !asked.includes(f));
    return original.call(this, { ...descriptor, requiredFeatures: [...asked, ...extra] });
  };
  try {
    return await start();
  } finally {
    proto.requestDevice = original;
  }
};

const usesF16 = /\bf16\b/;

/**
 * Makes `device.createShaderModule` prefix `enable f16;` to WGSL that uses f16 (idempotent; a no-op on a
 * device without `shader-f16`, where such a module fails to compile as it would anyway).
 */
export const enableF16Shaders = (device: GPUDevice): void => {
  if (!device.features.has("shader-f16")) return;
  const marked = device as GPUDevice & { caeF16?: true };
  if (marked.caeF16) return;
  const create = device.createShaderModule.bind(device);
  device.createShaderModule = (d: GPUShaderModuleDescriptor) =>
    create(
      usesF16.test(d.code) && !/^\s*enable f16;/.test(d.code) ? { ...d, code: `enable f16;\n${d.code}` } : d,
    );
  marked.caeF16 = true;
};
