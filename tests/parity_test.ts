/**
 * The strongest evidence that the model, losses, gradients and optimizer step are the paper's: both shared
 * fixtures (float64, computed by the official PyTorch modules) within 1e-4 relative, on the cpu and wasm
 * backends here and on WebGPU in tests/webgpu/parity.ts (the software adapter on CPU-only machines).
 */
import { tf } from "../lib/deps.ts";
import { assert, assertRejects } from "../lib/core/std.ts";
import { checkParity, fixtures } from "./parity_fixture.ts";
import { encodeSafetensors, readSafetensors } from "../lib/core/safetensors.ts";
import { sinCos2dValues } from "../lib/nn/positions.ts";
import { runParity } from "../lib/parity/check.ts";
import { relativeError } from "../lib/core/compare.ts";

for (const backend of ["cpu", "wasm"] as const) {
  for (const file of fixtures) {
    Deno.test(`parity on ${backend}: ${file.split("/").pop()}`, () => checkParity(backend, file));
  }
}

Deno.test("the fixed sin-cos embeddings equal the official pos_embed and rd_pos_embed", async () => {
  for (const file of fixtures) {
    const { metadata, tensors } = await readSafetensors(file, { names: (n) => n.endsWith("pos_embed") });
    const c = JSON.parse(metadata.config);
    const side = c.img / c.patch;
    const enc = tensors["student.encoder.pos_embed"], rd = tensors["student.rd_pos_embed"];
    assert(relativeError(sinCos2dValues(side, side, c.dim), enc.data) < 1e-6);
    assert(relativeError(sinCos2dValues(side, side, c.rdim), rd.data) < 1e-6);
  }
});

Deno.test("a fixture with a misshapen or missing tensor fails naming it", async () => {
  await tf.setBackend("cpu");
  const { metadata, tensors } = await readSafetensors(fixtures[0]);
  const dir = await Deno.makeTempDir();
  try {
    const bad = {
      ...tensors,
      "student.encoder.blocks.1.mlp.fc1.weight": { shape: [128, 31], data: new Float64Array(128 * 31) },
    };
    await Deno.writeFile(`${dir}/bad.safetensors`, encodeSafetensors(bad, metadata));
    await assertRejects(
      () => runParity(`${dir}/bad.safetensors`),
      Error,
      `tensor "encoder.blocks.1.mlp.fc1.weight" has shape [128, 31], expected [128, 32]`,
    );
    const missing = { ...tensors };
    delete (missing as Record<string, unknown>)["teacher.visual.ln_post.bias"];
    await Deno.writeFile(`${dir}/missing.safetensors`, encodeSafetensors(missing, metadata));
    await assertRejects(
      () => runParity(`${dir}/missing.safetensors`),
      Error,
      `missing tensor "ln_post.bias"`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
