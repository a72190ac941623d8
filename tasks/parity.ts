/**
 * `deno task parity [FILE.safetensors ...] [--backend webgpu|wasm|cpu] [--precision f32|f16] [--no-step]`
 *
 * Runs teacher, student, losses, gradients and one AdamW step in float32 on each fixture (default: the two
 * in tests/fixtures) and compares with the official float64 numbers. `--precision f16` runs the f16
 * products (WebGPU with shader-f16) and holds each group to 2e-2 instead of 1e-4 (lib/parity/check.ts). Exits 1 on FAIL, 2 when the arguments
 * or the backend (`--backend`, `CAEV2_BACKEND`, `CAEV2_THREADS`) are refused, with one line per problem.
 *
 * @module
 */
import { E } from "../lib/deps.ts";
import { describeBackend } from "../lib/core/backend.ts";
import { startRuntime } from "../lib/core/runtime.ts";
import { formatReport, runParity } from "../lib/parity/check.ts";
import { PARITY_USAGE, parseParityArgs } from "../lib/parity/cli.ts";
import { message } from "../lib/core/fs.ts";

const parsed = parseParityArgs(Deno.args);
if (E.isLeft(parsed)) {
  for (const line of parsed.left.split("\n")) console.error(`parity: ${line}`);
  Deno.exit(2);
}
const args = parsed.right;
if (args.help) {
  console.log(PARITY_USAGE);
  Deno.exit(0);
}
const files = args.files.length > 0 ? args.files : [
  new URL("../tests/fixtures/caev2-small-same-width.safetensors", import.meta.url).pathname,
  new URL("../tests/fixtures/caev2-projected-width.safetensors", import.meta.url).pathname,
];
let info;
try {
  info = await startRuntime(args.backend, { precision: args.precision });
} catch (e) {
  // A backend refused by name or by the environment is the user's to fix: their message, not a stack.
  console.error(`parity: ${message(e)}`);
  Deno.exit(2);
}
console.log(describeBackend(info));
let ok = true;
for (const file of files) {
  try {
    const report = await runParity(file, { step: args.step });
    for (const line of formatReport(report)) console.log(line);
    ok &&= report.pass;
  } catch (e) {
    console.error(`parity: FAIL ${file}: ${(e as Error).message}`);
    ok = false;
  }
}
Deno.exit(ok ? 0 : 1);
