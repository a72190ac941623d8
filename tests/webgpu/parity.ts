/**
 * Both shared fixtures on WebGPU (the software adapter on CPU-only machines) within 1e-4 relative: the same
 * check as tests/parity_test.ts runs on cpu and wasm.
 */
import { checkParity, fixtures } from "../parity_fixture.ts";

const hasAdapter = !!(await navigator.gpu?.requestAdapter());

for (const file of fixtures) {
  Deno.test({
    name: `parity on webgpu: ${file.split("/").pop()}`,
    ignore: !hasAdapter,
    fn: () => checkParity("webgpu", file),
  });
}
