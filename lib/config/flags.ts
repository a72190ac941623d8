/**
 * Command-line flags decoded against a config's fields: `--batch-size 64` sets `batchSize`, values are
 * coerced to what the field's codec takes, unknown flags and stray arguments are rejected with the list of
 * known flags. Shared by every `deno task` that takes a config.
 *
 * @module
 */
import { E, t } from "../deps.ts";
import { parseArgs } from "../core/std.ts";
import { acceptsNull, closest, coerceFlag } from "./codec.ts";
import { message, parseJson } from "../core/fs.ts";

/**
 * One flag of a command line, one row of a flag table: what its value must be, its default, one line of
 * help and its placeholder. A table of these is the single source of a command line: its codec, its
 * defaults and its `--help` are derived from it (lib/config/pretrain.ts, lib/eval/cli.ts).
 */
export interface FlagSpec<C extends t.Mixed = t.Mixed> {
  /** What the flag's value must be. */
  readonly codec: C;
  /** Value when the flag is absent; absent: the flag has no default. */
  readonly default?: t.OutputOf<C>;
  /** One line for `--help`. */
  readonly help: string;
  /** Placeholder in the usage line ("N", "FILE"; "" for a switch). */
  readonly arg: string;
}

/** A table of flags by camelCase name (`batchSize` is `--batch-size`), in `--help` order. */
export type FlagTable = Readonly<Record<string, FlagSpec>>;

/**
 * A flag table, each row's default checked against its own codec at compile time (`default: -1` for a
 * `PositiveInt` is a type error); returns the table as typed, so {@link FlagValues} sees every row.
 */
export const flagTable = <const F extends FlagTable>(flags: F & DefaultsMatch<F>): F => flags;

/** Each row of `F` with its default typed by its own codec (a table assignable to it has right defaults). */
export type DefaultsMatch<F> = {
  readonly [K in keyof F]: F[K] extends { readonly codec: infer C extends t.Mixed } ? FlagSpec<C> : never;
};

/** Whether a row has a default. */
type HasDefault<S> = S extends { readonly default: unknown } ? true : false;

/** Decoded flag values that no table types (those of a table declared as the plain {@link FlagTable}). */
export type UntypedFlags = Readonly<Record<string, unknown>>;

/**
 * The decoded values of a flag table: a flag with a default is always there, the others may be absent; each
 * typed by its codec. A table declared as the plain {@link FlagTable} gives {@link UntypedFlags}.
 */
export type FlagValues<F extends FlagTable> = string extends keyof F ? UntypedFlags
  :
    & { readonly [K in keyof F as HasDefault<F[K]> extends true ? K : never]: t.TypeOf<F[K]["codec"]> }
    & { readonly [K in keyof F as HasDefault<F[K]> extends true ? never : K]?: t.TypeOf<F[K]["codec"]> };

/** The codecs of a flag table, by name (what {@link parseFlags} takes). */
export const codecsOf = <F extends FlagTable>(flags: F): { [K in keyof F]: F[K]["codec"] } =>
  Object.fromEntries(Object.entries(flags).map(([k, f]) => [k, f.codec])) as {
    [K in keyof F]: F[K]["codec"];
  };

/** `batchSize` -> `batch-size`. */
export const kebabCase = (camel: string): string => camel.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`);

/** `batch-size` -> `batchSize`. */
export const camelCase = (kebab: string): string =>
  kebab.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** Flags that are not config fields (`--config FILE`, `--help`). */
export interface ExtraFlags {
  /** Extra flags that take a value, kebab-case. */
  readonly strings?: readonly string[];
  /** Extra on/off flags, kebab-case (`help` is always known). */
  readonly booleans?: readonly string[];
  /** Whether bare arguments are taken (`deno task parity FILE ...`); otherwise they are refused. */
  readonly positionals?: boolean;
}

/** What `parseFlags` found. */
export interface ParsedFlags {
  /** Config fields set on the command line, camelCase keys, values coerced for their codecs. */
  readonly values: Readonly<Record<string, unknown>>;
  /** Extra flags given, kebab-case keys. */
  readonly extras: Readonly<Record<string, string | boolean>>;
  /** Whether `--help` (or `-h`) was given. */
  readonly help: boolean;
  /** Bare arguments, in order (always empty unless `positionals` was asked for). */
  readonly positionals: readonly string[];
}

/** Every known flag, `--kebab-case`, fields first. */
export const knownFlags = (fields: t.Props, extra: ExtraFlags = {}): string[] => [
  ...Object.keys(fields).map((k) => `--${kebabCase(k)}`),
  ...(extra.strings ?? []).map((k) => `--${k}`),
  ...["help", ...(extra.booleans ?? [])].map((k) => `--${k}`),
];

const NEGATIVE_NUMBER = /^-\d|^-\.\d/;

/**
 * Parses `argv` against config `fields` (camelCase names, io-ts codecs). `--no-<field>` sets a nullable
 * field to null; `--flag=-3` and `--flag -3` both pass a negative number.
 *
 * @example
 * ```ts
 * import { parseFlags } from "./flags.ts";
 * import { t, E } from "../deps.ts";
 * const r = parseFlags(["--batch-size", "8"], { batchSize: t.number });
 * if (E.isLeft(r) || r.right.values.batchSize !== 8) throw new Error("not parsed");
 * ```
 */
export const parseFlags = (
  argv: readonly string[],
  fields: t.Props,
  extra: ExtraFlags = {},
): E.Either<string, ParsedFlags> => {
  const keyOf = new Map(Object.keys(fields).map((k) => [kebabCase(k), k]));
  const fieldFlags = [...keyOf.keys()];
  const strings = [...fieldFlags, ...(extra.strings ?? [])];
  const booleans = ["help", ...(extra.booleans ?? [])];
  const nullable = new Set(
    Object.entries(fields).filter(([, c]) => acceptsNull(c)).map(([k]) => kebabCase(k)),
  );
  const switches = new Set(
    Object.entries(fields).filter(([, c]) => c.name === "boolean").map(([k]) => kebabCase(k)),
  );
  // std parseArgs reads "-3" after a flag as a short option: glue negative numbers to their flag, and turn
  // `--no-teacher` into `--teacher=null` for nullable fields. A boolean field is a switch: `--remat` is
  // `--remat=true` (unless a true/false follows), `--no-remat` is `--remat=false`.
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const name = a.startsWith("--") && !a.includes("=") ? a.slice(2) : undefined;
    if (name !== undefined && switches.has(name) && !["true", "false"].includes(argv[i + 1] ?? "")) {
      args.push(`--${name}=true`);
    } else if (name !== undefined && name.startsWith("no-") && switches.has(name.slice(3))) {
      args.push(`--${name.slice(3)}=false`);
    } else if (name !== undefined && name.startsWith("no-") && nullable.has(name.slice(3))) {
      args.push(`--${name.slice(3)}=null`);
    } else if (name !== undefined && strings.includes(name) && NEGATIVE_NUMBER.test(argv[i + 1] ?? "")) {
      args.push(`${a}=${argv[++i]}`);
    } else args.push(a);
  }
  const unknown: string[] = [];
  const parsed = parseArgs(args, {
    string: strings,
    boolean: booleans,
    alias: { h: "help" },
    unknown: (arg: string) => {
      unknown.push(arg);
      return false;
    },
  });
  const errors: string[] = [];
  const stray = unknown.filter((a) => !a.startsWith("-"));
  const badFlags = unknown.filter((a) => a.startsWith("-"));
  if (badFlags.length > 0) {
    const known = knownFlags(fields, extra);
    // The `--no-` forms are suggested too: `--no-stpe` means `--no-step`, not `--step`.
    const names = [...known.map((k) => k.slice(2)), ...[...switches, ...nullable].map((k) => `no-${k}`)];
    for (const f of badFlags) {
      const near = closest(f.replace(/^-+/, "").replace(/=.*$/, ""), names);
      errors.push(`unknown flag ${f}${near === undefined ? "" : ` (did you mean --${near}?)`}`);
    }
    errors.push(`known flags: ${known.join(", ")}`);
  }
  if (stray.length > 0 && !extra.positionals) {
    errors.push(`unexpected argument${stray.length > 1 ? "s" : ""} ${stray.join(" ")}`);
  }
  const values: Record<string, unknown> = {};
  const extras: Record<string, string | boolean> = {};
  for (const flag of strings) {
    const raw = parsed[flag];
    if (raw === undefined) continue;
    const text = Array.isArray(raw) ? String(raw[raw.length - 1]) : String(raw);
    if (text === "") {
      errors.push(`--${flag} needs a value (e.g. --${flag} VALUE or --${flag}=VALUE)`);
      continue;
    }
    const key = keyOf.get(flag);
    if (key !== undefined) values[key] = coerceFlag(fields[key], text);
    else extras[flag] = text;
  }
  for (const flag of booleans) if (parsed[flag] === true && flag !== "help") extras[flag] = true;
  return errors.length > 0
    ? E.left(errors.join("\n"))
    : E.right({ values, extras, help: parsed.help === true, positionals: extra.positionals ? stray : [] });
};

/**
 * A decoding report of flag values with each field path turned into the flag the user typed:
 * `flags: at batchSize: ...` becomes `flags: --batch-size: ...`.
 */
export const flagPaths = (report: string): string =>
  report.replace(/^flags: at (\w+):/gm, (_, k: string) => `flags: --${kebabCase(k)}:`);

/**
 * The JSON of a file read synchronously (`--config FILE`, a run's config.json). Left: a message that starts
 * with `where` ("file not found", "cannot read it", "not valid JSON").
 */
export const readJsonSync = (
  path: string,
  where: string,
  read: (path: string) => string = Deno.readTextFileSync,
): E.Either<string, unknown> => {
  let text: string;
  try {
    text = read(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return E.left(`${where}: file not found`);
    return E.left(`${where}: cannot read it (${message(e)})`);
  }
  return parseJson(text, where);
};

/**
 * Two fields that set one thing in two ways (`lr` and `blr`, `numMasked` and `maskRatio`, `warmupSteps`
 * and `warmupEpochs`), camelCase.
 */
export type FieldPair = readonly [string, string];

/**
 * Layers of settings merged from low to high (defaults, a resumed run's config.json, `--config FILE`,
 * flags). A layer that sets one field of a pair and not the other drops the other from the layers below,
 * so that `--blr X` over a config file's `lr` means blr, and `--warmup-steps 5` replaces a default
 * `warmupEpochs`.
 *
 * @example
 * ```ts
 * import { mergeLayers } from "./flags.ts";
 * const m = mergeLayers([{ lr: 1, seed: 0 }, { blr: 2 }], [["lr", "blr"]]);
 * if (JSON.stringify(m) !== '{"seed":0,"blr":2}') throw new Error(JSON.stringify(m));
 * ```
 */
export const mergeLayers = (
  layers: readonly Readonly<Record<string, unknown>>[],
  pairs: readonly FieldPair[],
): Record<string, unknown> =>
  layers.reduce<Record<string, unknown>>((acc, layer) => {
    const next = { ...acc };
    for (const [a, b] of pairs) {
      if (a in layer && !(b in layer)) delete next[b];
      if (b in layer && !(a in layer)) delete next[a];
    }
    return { ...next, ...layer };
  }, {});

/**
 * The pairs a single layer sets both fields of, one line each naming the layer: `flags: --lr and --blr
 * both given ...` (as typed, for `where` "flags"), `config file c.json: "lr" and "blr" both given ...`.
 */
export const bothGiven = (
  layer: Readonly<Record<string, unknown>>,
  pairs: readonly FieldPair[],
  where: string,
): string[] =>
  pairs.filter(([a, b]) => layer[a] !== undefined && layer[b] !== undefined).map(([a, b]) => {
    const [x, y] = where === "flags" ? [`--${kebabCase(a)}`, `--${kebabCase(b)}`] : [`"${a}"`, `"${b}"`];
    return `${where}: ${x} and ${y} both given; they set the same thing two ways: give one`;
  });
