/**
 * lib/core/webgpu_features.ts without a GPU: the rewrite of tfjs's entry point that passes the subgroup
 * builtins to a program. tests/webgpu/kernels_matmul.ts runs it on the adapter.
 */
import { assertEquals, assertStringIncludes, assertThrows } from "../lib/core/std.ts";
import { SUBGROUP_DECLARATIONS, withSubgroupBuiltins } from "../lib/core/webgpu_features.ts";

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
