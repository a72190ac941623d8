/**
 * The parity check of one shared fixture on one backend, for tests/parity_test.ts (cpu, wasm) and
 * tests/webgpu/parity.ts (WebGPU). Not a test module itself.
 *
 * @module
 */
import { tf } from "../lib/deps.ts";
import { type BackendName, selectBackend } from "../lib/core/backend.ts";
import { assert, assertEquals } from "../lib/core/std.ts";
import { formatReport, PARITY_TOLERANCE, runParity } from "../lib/parity/check.ts";

/** Paths of the two shared fixtures (float64, from the official PyTorch code). */
export const fixtures: readonly string[] = ["caev2-small-same-width", "caev2-projected-width"].map((n) =>
  new URL(`./fixtures/${n}.safetensors`, import.meta.url).pathname
);

/** Runs `file` on `backend` and asserts every group within {@link PARITY_TOLERANCE}, with no leak. */
export const checkParity = async (backend: BackendName, file: string): Promise<void> => {
  await selectBackend(backend);
  const before = tf.memory().numTensors;
  const report = await runParity(file);
  const text = formatReport(report).join("\n");
  assert(report.pass, text);
  assert(report.worst < PARITY_TOLERANCE, text);
  // Every group ran (step1 included) and the loss parts were among them.
  for (
    const g of [
      "teacher_features",
      "targets",
      "predictions",
      "loss",
      "grad_norm",
      "step1",
      "grad.encoder",
    ]
  ) {
    assert(
      report.groups.some((r) => r.group === g && !r.skipped && r.tensors > 0),
      `group ${g} missing\n${text}`,
    );
  }
  assertEquals(tf.memory().numTensors, before, "parity leaked tensors");
};
