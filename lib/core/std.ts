/**
 * Typed wrappers over the parts of Deno std this project uses (the `deno-std` npm package ships plain JS).
 *
 * @module
 */
import { stdArgs, stdAssert, stdBytes } from "../deps.ts";

/** Parsed command-line flags, as std's `parseArgs` returns them. */
export interface ParsedArgs {
  readonly _: (string | number)[];
  readonly [flag: string]: unknown;
}

/** Options of std's `parseArgs` that this project uses. */
export interface ParseOptions {
  readonly string?: readonly string[];
  readonly boolean?: readonly string[];
  readonly default?: Record<string, unknown>;
  readonly alias?: Record<string, string | string[]>;
  readonly collect?: readonly string[];
  readonly stopEarly?: boolean;
  readonly unknown?: (arg: string, key?: string, value?: unknown) => unknown;
}

/** std `parseArgs`, typed. */
export const parseArgs: (args: string[], opts?: ParseOptions) => ParsedArgs = stdArgs.parseArgs;

/** std `format` of byte counts ("1.2 MB"). */
export const formatBytes: (n: number, opts?: { binary?: boolean; maximumFractionDigits?: number }) => string =
  stdBytes.format;

/** std assertions, typed (used by tests and by runtime invariants). */
export const assert: (cond: unknown, msg?: string) => asserts cond = stdAssert.assert;
export const assertEquals: <T>(actual: T, expected: T, msg?: string) => void = stdAssert.assertEquals;
export const assertNotEquals: <T>(actual: T, expected: T, msg?: string) => void = stdAssert.assertNotEquals;
export const assertAlmostEquals: (
  actual: number,
  expected: number,
  tolerance?: number,
  msg?: string,
) => void = stdAssert.assertAlmostEquals;
export const assertLess: (actual: number, expected: number, msg?: string) => void = stdAssert.assertLess;
export const assertGreater: (actual: number, expected: number, msg?: string) => void =
  stdAssert.assertGreater;
export const assertThrows: (fn: () => unknown, errorClass?: unknown, msgIncludes?: string) => Error =
  stdAssert.assertThrows;
export const assertRejects: (
  fn: () => PromiseLike<unknown>,
  errorClass?: unknown,
  msgIncludes?: string,
) => Promise<Error> = stdAssert.assertRejects;
export const assertStringIncludes: (actual: string, expected: string, msg?: string) => void =
  stdAssert.assertStringIncludes;
export const assertMatch: (actual: string, expected: RegExp, msg?: string) => void = stdAssert.assertMatch;
