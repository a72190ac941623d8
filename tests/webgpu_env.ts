/**
 * What the WebGPU suites of tests/webgpu/ share: whether this machine has an adapter (and `shader-f16`),
 * the options of a test that needs one, and the switch back to WebGPU each such test starts with (the suites
 * run in one process, and another may have left wasm active). Importing it selects the WebGPU backend where
 * there is one.
 *
 * @module
 */
import { tf } from "../lib/deps.ts";
import { selectBackend } from "../lib/core/backend.ts";

/** Whether a WebGPU adapter is here. */
export const hasWebGPU = await selectBackend("webgpu").then(() => tf.getBackend() === "webgpu", () => false);

/** Whether that adapter offers `shader-f16` (`--precision f16`). */
export const hasF16 = hasWebGPU &&
  (tf.backend() as unknown as { device: GPUDevice }).device.features.has("shader-f16");

/** `Deno.test` options of a test that needs the adapter (skipped without one; tfjs keeps GPU resources). */
export const gpu = { ignore: !hasWebGPU, sanitizeOps: false, sanitizeResources: false };

/** Makes WebGPU the active backend again. */
export const onWebGPU = (): Promise<unknown> => selectBackend("webgpu");
