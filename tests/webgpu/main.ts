/**
 * Runs the suites that touch the WebGPU adapter (every other `.ts` file in this folder) on this process's
 * main thread, and prints one line per test for tests/webgpu_test.ts, which starts this script as a child
 * process and turns each line into a test step.
 *
 * Why a child process: `deno test` runs every test module on a worker thread, and on Mesa's llvmpipe a
 * module that touches the adapter at all left the test process aborting at exit ("corrupted size vs.
 * prev_size in fastbins", "double free", exit 134, sometimes 139) after every test had passed. The abort is
 * in thread-local destructors racing the exit handlers of the GL libraries. Measured on the 2-core CPU
 * machine (Deno 2.9.6, 2026-11-26): 4 test modules that only call `navigator.gpu.requestAdapter()`: 12 of
 * 30 runs aborted; one module with one matmul on WebGPU: 2 of 60; freeing tfjs's buffers and destroying
 * the device on unload did not help. The same WebGPU work under `deno run`, where the main thread owns the
 * GL context: 0 of 90.
 *
 * Usage: `deno run -A tests/webgpu/main.ts [suite.ts ...]` (default: every suite here). Each result is a
 * line `{RESULT_PREFIX}{json}` on stdout ({@link CaseResult}); everything else the tests print passes
 * through. Exits 1 when a test failed.
 *
 * @module
 */

/** Marks a result line among whatever else the tests print. */
export const RESULT_PREFIX = "@@webgpu-case ";

/** One test's outcome, as printed after {@link RESULT_PREFIX}. */
export interface CaseResult {
  readonly suite: string;
  readonly name: string;
  readonly status: "ok" | "failed" | "ignored";
  readonly ms: number;
  /** The failure's stack (or message), for "failed". */
  readonly error?: string;
}

type TestFn = (t: Deno.TestContext) => void | Promise<void>;
interface Case {
  readonly suite: string;
  readonly name: string;
  readonly fn: TestFn;
  readonly ignore: boolean;
}

/** The forms of `Deno.test` the suites use: (name, fn), (name, options, fn), (options), (fn), (options, fn). */
const normalise = (suite: string, a: unknown, b?: unknown, c?: unknown): Case => {
  type Options = { name?: string; fn?: TestFn; ignore?: boolean };
  let options: Options = {}, fn: TestFn | undefined;
  if (typeof a === "string") {
    if (typeof b === "function") fn = b as TestFn;
    else [options, fn] = [(b ?? {}) as Options, c as TestFn];
    options = { ...options, name: a };
  } else if (typeof a === "function") fn = a as TestFn;
  else [options, fn] = [a as Options, (typeof b === "function" ? b : undefined) as TestFn | undefined];
  fn ??= options.fn;
  const name = options.name ?? fn?.name;
  if (fn === undefined || !name) throw new Error(`${suite}: a Deno.test call without a name or a function`);
  return { suite, name, fn, ignore: options.ignore ?? false };
};

const context = (c: Case): Deno.TestContext => ({
  name: c.name,
  origin: c.suite,
  step: () => {
    throw new Error("t.step is not supported by tests/webgpu/main.ts: write the steps as separate tests");
  },
} as unknown as Deno.TestContext);

const errorText = (e: unknown): string => e instanceof Error ? e.stack ?? e.message : String(e);

const run = async (suites: readonly string[]): Promise<number> => {
  const cases: Case[] = [];
  let suite = "";
  // Outside `deno test`, Deno.test is a no-op that may be replaced: collect the registrations instead.
  (Deno as unknown as { test: unknown }).test = (a: unknown, b?: unknown, c?: unknown) => {
    cases.push(normalise(suite, a, b, c));
  };
  for (const file of suites) {
    suite = file.split("/").pop()!;
    await import(new URL(file, import.meta.url).href);
  }
  let failed = 0;
  for (const c of cases) {
    const t0 = performance.now();
    let result: CaseResult;
    if (c.ignore) result = { suite: c.suite, name: c.name, status: "ignored", ms: 0 };
    else {
      try {
        await c.fn(context(c));
        result = { suite: c.suite, name: c.name, status: "ok", ms: performance.now() - t0 };
      } catch (e) {
        failed++;
        result = {
          suite: c.suite,
          name: c.name,
          status: "failed",
          ms: performance.now() - t0,
          error: errorText(e),
        };
      }
    }
    console.log(RESULT_PREFIX + JSON.stringify(result));
  }
  return failed === 0 ? 0 : 1;
};

const here = new URL(".", import.meta.url).pathname;
const allSuites = (): string[] =>
  [...Deno.readDirSync(here)]
    .map((e) => e.name)
    .filter((n) => n.endsWith(".ts") && n !== "main.ts")
    .sort()
    .map((n) => `./${n}`);

if (import.meta.main) {
  Deno.exit(await run(Deno.args.length > 0 ? Deno.args.map((a) => `./${a.split("/").pop()}`) : allSuites()));
}
