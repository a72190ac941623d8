/**
 * lib/core/webgpu_features.ts without a GPU: the device request with the optional features, and the rewrite
 * of tfjs's entry point that passes the subgroup builtins to a program. tests/webgpu/kernels_matmul.ts runs it on the adapter.
 */
import { assertEquals, assertStringIncludes, assertThrows } from "../lib/core/std.ts";
import {
  SUBGROUP_DECLARATIONS,
  withOptionalFeatures,
  withSubgroupBuiltins,
} from "../lib/core/webgpu_features.ts";

Deno.test("subgroup builtins: tfjs's entry point passes them to a program that declares them, and only then", () => {
  // The end of tfjs-backend-webgpu 4.22's entry point, as makeShader writes it.
  const start = `fn _start(@builtin(local_invocation_id) LocalId : vec3<u32>,
                @builtin(num_workgroups) NumWorkgroups : vec3<u32>) {
        localId = LocalId;
        main(getGlobalIndex());
      }`;
  const program = `${SUBGROUP_DECLARATIONS}fn main(index: i32) {}
${start}`;
  const rewritten = withSubgroupBuiltins(program);
  assertStringIncludes(rewritten, "@builtin(subgroup_invocation_id) SgLane : u32");
  assertStringIncludes(rewritten, "@builtin(subgroup_size) SgSize : u32) {");
  assertStringIncludes(rewritten, "sgLane = SgLane;");
  assertStringIncludes(rewritten, "sgSize = SgSize;");
  assertEquals(rewritten.indexOf("sgLane = SgLane") < rewritten.indexOf("main(getGlobalIndex())"), true);
  assertEquals(
    withSubgroupBuiltins(`fn main(index: i32) {}
${start}`),
    `fn main(index: i32) {}
${start}`,
  );
  assertThrows(
    () =>
      withSubgroupBuiltins(`${SUBGROUP_DECLARATIONS}fn main(index: i32) {}
fn _start() { main(0); }`),
    Error,
    "not the one of tfjs-backend-webgpu 4.22",
  );
});

Deno.test("device request: listed optional features are added, 'subgroups' asked even unlisted and dropped if refused", async () => {
  // The driver's side is a stand-in (this machine's adapters grant subgroups, so the refusal cannot happen
  // for real here): it records each request and refuses the ones with features it lacks.
  const proto = (globalThis as unknown as { GPUAdapter: { prototype: GPUAdapter } }).GPUAdapter.prototype;
  const real = proto.requestDevice;
  const asked: string[][] = [];
  const request = (grants: string[]) =>
    function (this: GPUAdapter, d?: GPUDeviceDescriptor) {
      const features = [...(d?.requiredFeatures ?? [])] as string[];
      asked.push(features);
      const missing = features.filter((f) => !grants.includes(f));
      return missing.length > 0
        ? Promise.reject(new TypeError(`unsupported: ${missing}`))
        : Promise.resolve({ features } as unknown as GPUDevice);
    };
  const adapter = { features: new Set(["shader-f16", "timestamp-query"]) } as unknown as GPUAdapter;
  const start = () => proto.requestDevice.call(adapter, { requiredFeatures: ["timestamp-query"] });
  try {
    proto.requestDevice = request(["timestamp-query", "shader-f16", "subgroups"]);
    const granted = await withOptionalFeatures(start) as unknown as { features: string[] };
    assertEquals(granted.features, ["timestamp-query", "shader-f16", "subgroups"]);
    assertEquals(asked.length, 1);
    asked.length = 0;
    const refusing = request(["timestamp-query", "shader-f16"]);
    proto.requestDevice = refusing;
    const without = await withOptionalFeatures(start) as unknown as { features: string[] };
    assertEquals(proto.requestDevice, refusing, "the method is put back");
    assertEquals(without.features, ["timestamp-query", "shader-f16"]);
    assertEquals(asked, [["timestamp-query", "shader-f16", "subgroups"], ["timestamp-query", "shader-f16"]]);
  } finally {
    proto.requestDevice = real;
  }
});
