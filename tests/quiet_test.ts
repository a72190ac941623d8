/**
 * Runs print what concerns the user and nothing else: no tfjs-node banner from the cpu backend, and no
 * `XDG_RUNTIME_DIR is invalid or not set` from Mesa's Vulkan device-select layer while the WebGPU adapter is
 * probed (that one shows only on machines with a Vulkan loader and Mesa's drivers, such as the dev machines;
 * elsewhere the test still runs the selection and checks the output).
 */
import { assertEquals, assertStringIncludes } from "../lib/core/std.ts";

const root = new URL("../", import.meta.url).pathname;

/** Runs tests/quiet/select_backend.ts in the repository (its deno.json applies) with `env` as the whole environment. */
const run = async (backend: string, env: Record<string, string>) => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tests/quiet/select_backend.ts", backend],
    cwd: root,
    env: { ...env, NO_COLOR: "1" },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, text: d.decode(out.stdout) + d.decode(out.stderr) };
};

Deno.test("the cpu backend does not print tfjs's banner recommending tfjs-node", async () => {
  const r = await run("cpu", Deno.env.toObject());
  assertEquals(r.code, 0, r.text);
  assertEquals(r.text.trim(), "backend cpu");
});

Deno.test("probing for WebGPU with XDG_RUNTIME_DIR unset prints no XDG_RUNTIME_DIR error", async () => {
  const env = Deno.env.toObject();
  delete env.XDG_RUNTIME_DIR;
  const r = await run("auto", env);
  assertEquals(r.code, 0, r.text);
  assertStringIncludes(r.text, "backend ");
  assertEquals(r.text.includes("XDG_RUNTIME_DIR"), false, r.text);
});
