/**
 * Optional WebGPU device features for tfjs's device. tfjs-backend-webgpu 4.22 creates its device itself and
 * asks only for `timestamp-query` (and `bgra8unorm-storage`); this project's kernels use two more where the
 * device has them:
 *
 * - `shader-f16` (`--precision f16`, lib/core/precision.ts). WGSL needs an `enable f16;` line before
 *   anything else in a module that uses it, which tfjs's shader prelude cannot place.
 * - `subgroups` (the matmul's subgroup variant, lib/core/kernels/matmul.ts). Deno 2.9.6 does not list it in
 *   `adapter.features` (on the H200 nor on lavapipe), yet a device asked for it gets it; its builtins then
 *   compile without an `enable subgroups;` line (naga refuses that line), but only as parameters of the
 *   entry point, which tfjs writes.
 *
 * So, around tfjs's start of the backend, {@link withOptionalFeatures} adds these features to tfjs's device
 * request (`subgroups` asked even when unlisted, and dropped if the device cannot be had with it), and
 * {@link enableShaderExtensions} rewrites the shader modules that need it: `enable f16;` first, and the
 * subgroup builtins passed from tfjs's entry point into the private variables a program declares
 * ({@link SUBGROUP_DECLARATIONS}).
 *
 * @module
 */

/** Features this project uses when the adapter lists them. */
export const OPTIONAL_FEATURES: readonly GPUFeatureName[] = ["shader-f16"];

/** Features asked for even when the adapter does not list them (see the module doc), kept if granted. */
export const UNLISTED_FEATURES: readonly GPUFeatureName[] = ["subgroups" as GPUFeatureName];

/**
 * Runs `start` (tfjs's backend start) with `GPUAdapter.prototype.requestDevice` asking also for every
 * feature of `wanted` that the adapter offers, and for those of `unlisted` (if the device cannot be had with
 * them, it is asked for again without them); the method is put back afterwards.
 */
export const withOptionalFeatures = async <T>(
  start: () => Promise<T>,
  wanted: readonly GPUFeatureName[] = OPTIONAL_FEATURES,
  unlisted: readonly GPUFeatureName[] = UNLISTED_FEATURES,
): Promise<T> => {
  const proto = (globalThis as { GPUAdapter?: { prototype: GPUAdapter } }).GPUAdapter?.prototype;
  if (proto === undefined) return await start();
  const original = proto.requestDevice;
  proto.requestDevice = async function (this: GPUAdapter, descriptor?: GPUDeviceDescriptor) {
    const asked = [...(descriptor?.requiredFeatures ?? [])];
    const extra = wanted.filter((f) => this.features.has(f) && !asked.includes(f));
    const plain = { ...descriptor, requiredFeatures: [...asked, ...extra] };
    const more = unlisted.filter((f) => !plain.requiredFeatures.includes(f));
    if (more.length > 0) {
      try {
        return await original.call(this, {
          ...plain,
          requiredFeatures: [...plain.requiredFeatures, ...more],
        });
      } catch {
        // Not granted here: the device without them (the kernels that need them are then not used).
      }
    }
    return await original.call(this, plain);
  };
  try {
    return await start();
  } finally {
    proto.requestDevice = original;
  }
};

/** Whether `device` was granted `subgroups` (the subgroup builtins compile in its shaders). */
export const hasSubgroups = (device: GPUDevice | undefined): boolean =>
  device?.features.has("subgroups" as GPUFeatureName) ?? false;

/**
 * The smallest subgroup size `device`'s adapter reports (`GPUAdapterInfo.subgroupMinSize`), or undefined
 * where the device has no subgroups or the size is not reported.
 */
export const subgroupMinSize = (device: GPUDevice | undefined): number | undefined => {
  if (!hasSubgroups(device)) return undefined;
  const info = (device as GPUDevice & { adapterInfo?: { subgroupMinSize?: number } }).adapterInfo;
  const n = info?.subgroupMinSize;
  return typeof n === "number" && Number.isInteger(n) && n > 0 ? n : undefined;
};

/**
 * What a program declares to read the subgroup builtins: `sgLane` (`subgroup_invocation_id`) and `sgSize`
 * (`subgroup_size`), set by tfjs's entry point once {@link enableShaderExtensions} has rewritten it. naga
 * takes these builtins only in a one-dimensional workgroup.
 */
export const SUBGROUP_DECLARATIONS = "var<private> sgLane: u32;\nvar<private> sgSize: u32;\n";

const usesF16 = /\bf16\b/;

/** The end of the parameter list of tfjs 4.22's entry point `_start` (tfjs-backend-webgpu's makeShader). */
const START_PARAMS_END = "@builtin(num_workgroups) NumWorkgroups : vec3<u32>) {";

/** `code` with the subgroup builtins passed from tfjs's entry point into {@link SUBGROUP_DECLARATIONS}. */
export const withSubgroupBuiltins = (code: string): string => {
  if (!code.includes(SUBGROUP_DECLARATIONS)) return code;
  const at = code.indexOf(START_PARAMS_END);
  if (at < 0) {
    throw new Error(
      "lib/core/webgpu_features.ts: tfjs's shader entry point is not the one of tfjs-backend-webgpu 4.22; " +
        "the subgroup builtins cannot be passed to the program",
    );
  }
  return code.slice(0, at) +
    "@builtin(num_workgroups) NumWorkgroups : vec3<u32>, @builtin(subgroup_invocation_id) SgLane : u32, " +
    "@builtin(subgroup_size) SgSize : u32) {\n        sgLane = SgLane;\n        sgSize = SgSize;" +
    code.slice(at + START_PARAMS_END.length);
};

/**
 * Makes `device.createShaderModule` prefix `enable f16;` to WGSL that uses f16 (on a device with
 * `shader-f16`; without it such a module fails to compile as it would anyway) and pass the subgroup
 * builtins to programs that declare {@link SUBGROUP_DECLARATIONS}. Idempotent.
 */
export const enableShaderExtensions = (device: GPUDevice): void => {
  const marked = device as GPUDevice & { caeShaders?: true };
  if (marked.caeShaders) return;
  const f16 = device.features.has("shader-f16");
  const create = device.createShaderModule.bind(device);
  device.createShaderModule = (d: GPUShaderModuleDescriptor) => {
    let code = withSubgroupBuiltins(d.code);
    if (f16 && usesF16.test(code) && !/^\s*enable f16;/.test(code)) code = `enable f16;\n${code}`;
    return create(code === d.code ? d : { ...d, code });
  };
  marked.caeShaders = true;
};
