/**
 * The WebGPU suites (tests/webgpu/: backends, device-side gradients, the custom kernels, parity and the
 * AdamW step on WebGPU), run in one child `deno run` process and reported here as one step per test.
 * tests/webgpu/main.ts says why they cannot run inside `deno test` on Mesa's llvmpipe. No module of the
 * main test process may touch `navigator.gpu` for the same reason (tests/helpers.ts `TEST_BACKEND`).
 */
import { assert, assertEquals } from "../lib/core/std.ts";
import { type CaseResult, RESULT_PREFIX } from "./webgpu/main.ts";

const root = new URL("..", import.meta.url).pathname;
const main = new URL("./webgpu/main.ts", import.meta.url).pathname;

Deno.test("WebGPU suites (child process on the adapter this machine has)", async (t) => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout), stderr = new TextDecoder().decode(out.stderr);
  const results: CaseResult[] = stdout.split("\n")
    .filter((l) => l.startsWith(RESULT_PREFIX))
    .map((l) => JSON.parse(l.slice(RESULT_PREFIX.length)));
  const tail = `\n--- child stderr (tail) ---\n${stderr.slice(-4000)}`;
  assert(results.length > 0, `tests/webgpu/main.ts reported no test (exit ${out.code})${tail}`);
  for (const r of results) {
    await t.step({
      name: `${r.suite}: ${r.name}`,
      ignore: r.status === "ignored",
      fn: () => {
        if (r.status === "failed") throw new Error(r.error);
      },
    });
  }
  assertEquals(out.code, 0, `tests/webgpu/main.ts exited with ${out.code}${tail}`);
});
