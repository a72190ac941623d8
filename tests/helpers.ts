/**
 * Small helpers shared by the tests: unwrapping fp-ts `Either`s with a readable failure, and a temporary
 * directory that is removed however the test ends.
 *
 * @module
 */
import { E } from "../lib/deps.ts";
import type { BackendName } from "../lib/core/backend.ts";

/** The Right value, or a failure that shows the Left message. */
export const right = <A>(r: E.Either<string, A>): A => {
  if (E.isLeft(r)) throw new Error(`expected a value, got:\n${r.left}`);
  return r.right;
};

/** The Left message, or a failure that shows the unexpected Right value. */
export const left = <A>(r: E.Either<string, A>): string => {
  if (E.isRight(r)) throw new Error(`expected an error, got ${JSON.stringify(r.right)}`);
  return r.left;
};

/** Runs `f` in a fresh temporary directory, then removes it. */
export const withTmp = async (prefix: string, f: (dir: string) => Promise<void>): Promise<void> => {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
};

/**
 * The backend the in-process tests run on: `CAEV2_BACKEND`, else wasm (what "auto" picks on a machine
 * without a hardware GPU). Not "auto" itself: choosing calls `navigator.gpu.requestAdapter()`, and any
 * module of the `deno test` process that touches the adapter can make it abort at exit on Mesa's llvmpipe
 * (tests/webgpu/main.ts says why). WebGPU is tested in tests/webgpu/, in a child process.
 */
export const TEST_BACKEND = (Deno.env.get("CAEV2_BACKEND") ?? "wasm") as BackendName;

/** Runs `tasks/<name>.ts` in a child `deno run -A` on the tests' backend: its exit code, stdout and stderr. */
export const runTaskFile = async (
  name: string,
  args: readonly string[],
): Promise<{ code: number; stdout: string; stderr: string }> => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`../tasks/${name}.ts`, import.meta.url).pathname, ...args],
    env: { NO_COLOR: "1", CAEV2_BACKEND: TEST_BACKEND },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
};
