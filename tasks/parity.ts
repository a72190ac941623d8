/**
 * `deno task parity [FILE.safetensors ...] [--backend webgpu|wasm|cpu] [--no-step]`
 *
 * Runs teacher, student, losses, gradients and one AdamW step in float32 on each fixture (default: the two
 * in tests/fixtures) and compares with the official float64 numbers. Exits 1 on FAIL.
 *
 * @module
 */
import { parseArgs } from "../lib/core/std.ts";
import { describeBackend } from "../lib/core/backend.ts";
import { startRuntime } from "../lib/core/runtime.ts";
import { formatReport, runParity } from "../lib/parity/check.ts";

const args = parseArgs(Deno.args, {
  string: ["backend"],
  boolean: ["step", "help"],
  default: { step: true },
});
if (args.help) {
  console.log("usage: deno task parity [FILE.safetensors ...] [--backend auto|webgpu|wasm|cpu] [--no-step]");
  Deno.exit(0);
}
const files = args._.length > 0 ? args._.map(String) : [
  new URL("../tests/fixtures/caev2-small-same-width.safetensors", import.meta.url).pathname,
  new URL("../tests/fixtures/caev2-projected-width.safetensors", import.meta.url).pathname,
];
const info = await startRuntime((args.backend as "webgpu" | "wasm" | "cpu" | undefined) ?? "auto");
console.log(describeBackend(info));
let ok = true;
for (const file of files) {
  try {
    const report = await runParity(file, { step: args.step as boolean });
    for (const line of formatReport(report)) console.log(line);
    ok &&= report.pass;
  } catch (e) {
    console.error(`parity: FAIL ${file}: ${(e as Error).message}`);
    ok = false;
  }
}
Deno.exit(ok ? 0 : 1);
