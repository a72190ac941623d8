/** The fixture's AdamW step on the WebGPU backend (tests/optim_test.ts checks it on cpu). */
import { tf } from "../../lib/deps.ts";
import { assertLess } from "../../lib/core/std.ts";
import { FIXTURES, fixtureStep } from "../optim_fixture.ts";

Deno.test({
  name: "adamw reproduces PyTorch's step on the webgpu backend",
  ignore: !("gpu" in navigator),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const ok = await tf.setBackend("webgpu").catch(() => false);
    try {
      if (!ok) {
        console.log("webgpu backend unavailable here; skipped");
        return;
      }
      const r = await fixtureStep(FIXTURES[0]);
      console.log(
        `webgpu: worst param ${r.worstParam.toExponential(2)}, worst step ${r.worstUpdate.toExponential(2)}`,
      );
      assertLess(r.normErr, 1e-5);
      assertLess(r.worstParam, 1e-4);
      assertLess(r.worstUpdate, 1e-4);
    } finally {
      await tf.setBackend("cpu");
    }
  },
});
