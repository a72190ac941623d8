/**
 * The arguments of `deno task parity`: fixture files, `--backend NAME`, `--step` / `--no-step`, `--help`.
 * Parsed with the config flags' parser (lib/config/flags.ts), so that an unknown flag is refused with a
 * suggestion and a bad backend name is refused before any backend starts, as `deno task pretrain` does.
 *
 * @module
 */
import { E, t } from "../deps.ts";
import { decodeWith, strict } from "../config/codec.ts";
import { flagPaths, parseFlags } from "../config/flags.ts";
import { BackendChoice, PrecisionName } from "../config/names.ts";
import type { Precision } from "../core/precision.ts";

/** The one-line usage of `deno task parity`. */
export const PARITY_USAGE =
  "usage: deno task parity [FILE.safetensors ...] [--backend auto|webgpu|wasm|cpu] [--precision f32|f16] [--no-step]";

/** What `deno task parity` was asked to do. */
export interface ParityArgs {
  /** Fixture files; empty: the task's default fixtures. */
  readonly files: readonly string[];
  /** The backend flag; "auto" when absent (then `CAEV2_BACKEND`, then the automatic choice). */
  readonly backend: BackendChoice;
  /** `--precision` (default f32; f16 needs WebGPU with shader-f16). */
  readonly precision: Precision;
  /** Whether the optimizer step is checked too (default; `--no-step` leaves it out). */
  readonly step: boolean;
  /** Whether `--help` was given. */
  readonly help: boolean;
}

const fields = { backend: BackendChoice, precision: PrecisionName, step: t.boolean };
const Flags = strict({}, fields, "ParityFlags");

/**
 * Parses `deno task parity` arguments. Left: the lines to print (each one a whole message, the last the
 * usage when a flag was not understood).
 *
 * @example
 * ```ts
 * import { parseParityArgs } from "./cli.ts";
 * import { E } from "../deps.ts";
 * const r = parseParityArgs(["a.safetensors", "--backend", "cpu", "--no-step"]);
 * if (E.isLeft(r) || r.right.files[0] !== "a.safetensors" || r.right.step || r.right.backend !== "cpu") {
 *   throw new Error("not parsed");
 * }
 * ```
 */
export const parseParityArgs = (argv: readonly string[]): E.Either<string, ParityArgs> => {
  const parsed = parseFlags(argv, fields, { positionals: true });
  if (E.isLeft(parsed)) {
    // The usage line says more than parseFlags' list of known flags (which shows `--step`, not `--no-step`).
    const lines = parsed.left.split("\n").filter((l) => !l.startsWith("known flags: "));
    return E.left([...lines, PARITY_USAGE].join("\n"));
  }
  const { values, help, positionals } = parsed.right;
  const decoded = decodeWith(Flags, values, "flags");
  if (E.isLeft(decoded)) return E.left(flagPaths(decoded.left).replace(/^flags: /gm, ""));
  return E.right({
    files: positionals,
    backend: decoded.right.backend ?? "auto",
    precision: decoded.right.precision ?? "f32",
    step: decoded.right.step ?? true,
    help,
  });
};
