/**
 * io-ts helpers for configs (docs/design.md, principle 6): closed object codecs that REJECT unknown keys (io-ts
 * `exact`/`strict` silently strip them), branded numeric refinements, and an error reporter that writes
 * one line per error naming the path, the value and what was expected.
 *
 * @module
 */
import { E, t } from "../deps.ts";

/** A value that survives `JSON.stringify` / `JSON.parse` unchanged. */
export type Json = null | boolean | number | string | readonly Json[] | { readonly [key: string]: Json };

/** Codec of any JSON value (for free-form fields such as an optimizer's host state). */
export const Json: t.Type<Json> = t.recursion(
  "Json",
  () =>
    t.union([
      t.null,
      t.boolean,
      t.number,
      t.string,
      t.readonlyArray(Json),
      t.readonly(t.record(t.string, Json)),
    ]),
);

// ---------------------------------------------------------------------------------------------------------
// Closed objects

/** A closed object codec: its props, its optional props, and the names it allows. */
export interface ClosedC<P extends t.Props, O extends t.Props>
  extends t.Type<ClosedOf<P, O>, ClosedOutput<P, O>, unknown> {
  readonly props: P;
  readonly optional: O;
  readonly allowed: readonly string[];
}

/** The decoded type of `strict(props, optional)`. */
export type ClosedOf<P extends t.Props, O extends t.Props> =
  & { [K in keyof P]: t.TypeOf<P[K]> }
  & { [K in keyof O]?: t.TypeOf<O[K]> };

/** The encoded type of `strict(props, optional)`. */
export type ClosedOutput<P extends t.Props, O extends t.Props> =
  & { [K in keyof P]: t.OutputOf<P[K]> }
  & { [K in keyof O]?: t.OutputOf<O[K]> };

const isRecord = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u);

/** Edit distance (Levenshtein) between two short strings. */
const distance = (a: string, b: string): number => {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length];
};

/** The allowed name a misspelt key most likely meant (`batch_size` -> `batchSize`), if any is close. */
export const closest = (key: string, allowed: readonly string[]): string | undefined => {
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, "");
  const exact = allowed.find((a) => norm(a) === norm(key));
  if (exact !== undefined) return exact;
  const scored = allowed.map((a) => [distance(norm(key), norm(a)), a] as const).sort((x, y) => x[0] - y[0]);
  const best = scored[0];
  return best !== undefined && best[0] <= 2 && best[0] < Math.min(key.length, best[1].length)
    ? best[1]
    : undefined;
};

const hasOwn = (o: object, k: string) => Object.prototype.hasOwnProperty.call(o, k);

/**
 * An object codec that rejects unknown keys (it does not strip them, unlike io-ts `exact`). `props` are
 * required, `optional` may be absent (or `undefined`). Nests: a prop may itself be a `strict` codec, and
 * errors inside it carry the full dotted path.
 *
 * @example
 * ```ts
 * import { decodeWith, PositiveInt, strict } from "./codec.ts";
 * import { E } from "../deps.ts";
 * const Optim = strict({ lr: PositiveInt });
 * const r = decodeWith(strict({ optim: Optim }), { optim: { lr: 1, foo: 2 } }, "example");
 * if (E.isRight(r) || !r.left.includes('unknown key "foo" at optim')) throw new Error("not rejected");
 * ```
 */
export const strict = <P extends t.Props, O extends t.Props = Record<never, t.Mixed>>(
  props: P,
  optional: O = {} as O,
  name = `{ ${[...Object.keys(props), ...Object.keys(optional).map((k) => `${k}?`)].join(", ")} }`,
): ClosedC<P, O> => {
  const allowed = [...Object.keys(props), ...Object.keys(optional)];
  const is = (u: unknown): u is ClosedOf<P, O> =>
    isRecord(u) && Object.keys(u).every((k) => allowed.includes(k)) &&
    Object.entries(props).every(([k, c]) => c.is(u[k])) &&
    Object.entries(optional).every(([k, c]) => u[k] === undefined || c.is(u[k]));
  const validate = (u: unknown, c: t.Context): t.Validation<ClosedOf<P, O>> => {
    if (!isRecord(u)) return t.failure(u, c);
    const errors: t.ValidationError[] = [];
    const out: Record<string, unknown> = {};
    const field = (k: string, codec: t.Mixed) => {
      const r = codec.validate(u[k], t.appendContext(c, k, codec, u[k]));
      if (E.isLeft(r)) errors.push(...r.left);
      else if (r.right !== undefined || hasOwn(u, k)) out[k] = r.right;
    };
    for (const [k, codec] of Object.entries(props)) field(k, codec);
    for (const [k, codec] of Object.entries(optional)) if (u[k] !== undefined) field(k, codec);
    for (const k of Object.keys(u)) {
      if (allowed.includes(k)) continue;
      const where = pathOf(c);
      const near = closest(k, allowed);
      errors.push({
        value: u[k],
        context: t.appendContext(c, k, t.never, u[k]),
        message: `unknown key "${k}" at ${where === "" ? "the top level" : where}${
          near === undefined ? "" : ` (did you mean "${near}"?)`
        } (allowed: ${allowed.join(", ")})`,
      });
    }
    return errors.length > 0 ? t.failures(errors) : t.success(out as ClosedOf<P, O>);
  };
  const encode = (a: ClosedOf<P, O>): ClosedOutput<P, O> => {
    const src = a as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const [k, codec] of [...Object.entries(props), ...Object.entries(optional)]) {
      if (src[k] !== undefined) out[k] = codec.encode(src[k]);
    }
    return out as ClosedOutput<P, O>;
  };
  return Object.assign(new t.Type<ClosedOf<P, O>, ClosedOutput<P, O>, unknown>(name, is, validate, encode), {
    props,
    optional,
    allowed,
  });
};

// ---------------------------------------------------------------------------------------------------------
// Branded numbers

/** Brand of positive integers. */
export interface PositiveIntBrand {
  readonly PositiveInt: unique symbol;
}
/** An integer > 0 (a batch size, a step count). */
export const PositiveInt = t.brand(
  t.number,
  // A safe integer: past 2^53 - 1 the number read is not the one typed (99999999999999999999 reads as 1e20).
  (n): n is t.Branded<number, PositiveIntBrand> => Number.isSafeInteger(n) && n > 0,
  "PositiveInt",
);
/** An integer > 0. */
export type PositiveInt = t.TypeOf<typeof PositiveInt>;

/** Brand of non-negative integers. */
export interface NonNegativeIntBrand {
  readonly NonNegativeInt: unique symbol;
}
/** An integer >= 0 (a seed, a worker count). */
export const NonNegativeInt = t.brand(
  t.number,
  (n): n is t.Branded<number, NonNegativeIntBrand> => Number.isSafeInteger(n) && n >= 0,
  "NonNegativeInt",
);
/** An integer >= 0. */
export type NonNegativeInt = t.TypeOf<typeof NonNegativeInt>;

/** Brand of seeds. */
export interface SeedBrand {
  readonly Seed: unique symbol;
}
/**
 * A seed: an integer from 0 to 2^53 - 1. A run key is made from it by lib/core/random.ts `key`, which takes
 * safe integers only (it splits the seed into two uint32 words exactly); 1e20 decodes as an integer, so
 * `NonNegativeInt` would let it through to fail there, under the internal name `random.key`.
 */
export const Seed = t.brand(
  t.number,
  (n): n is t.Branded<number, SeedBrand> => Number.isSafeInteger(n) && n >= 0,
  "Seed",
);
/** An integer from 0 to 2^53 - 1. */
export type Seed = t.TypeOf<typeof Seed>;

/** Brand of positive finite numbers. */
export interface PositiveNumberBrand {
  readonly PositiveNumber: unique symbol;
}
/** A finite number > 0 (a learning rate). */
export const PositiveNumber = t.brand(
  t.number,
  (n): n is t.Branded<number, PositiveNumberBrand> => Number.isFinite(n) && n > 0,
  "PositiveNumber",
);
/** A finite number > 0. */
export type PositiveNumber = t.TypeOf<typeof PositiveNumber>;

/** Brand of non-negative finite numbers. */
export interface NonNegativeNumberBrand {
  readonly NonNegativeNumber: unique symbol;
}
/** A finite number >= 0 (a weight decay, a clipping norm where 0 turns clipping off). */
export const NonNegativeNumber = t.brand(
  t.number,
  (n): n is t.Branded<number, NonNegativeNumberBrand> => Number.isFinite(n) && n >= 0,
  "NonNegativeNumber",
);
/** A finite number >= 0. */
export type NonNegativeNumber = t.TypeOf<typeof NonNegativeNumber>;

/** Brand of numbers in [0, 1]. */
export interface UnitIntervalBrand {
  readonly UnitInterval: unique symbol;
}
/** A number in [0, 1] (a drop-path rate, a ratio). */
export const UnitInterval = t.brand(
  t.number,
  (n): n is t.Branded<number, UnitIntervalBrand> => Number.isFinite(n) && n >= 0 && n <= 1,
  "UnitInterval",
);
/** A number in [0, 1]. */
export type UnitInterval = t.TypeOf<typeof UnitInterval>;

const brandWords: Record<string, string> = {
  PositiveInt: "a positive integer",
  NonNegativeInt: "a non-negative integer",
  PositiveNumber: "a positive number",
  NonNegativeNumber: "a non-negative number",
  UnitInterval: "a number between 0 and 1",
  Seed: `an integer from 0 to ${Number.MAX_SAFE_INTEGER} (2^53 - 1, the largest seed a run key takes)`,
  Int: "an integer",
};

// ---------------------------------------------------------------------------------------------------------
// Error reporting

const tagOf = (d: unknown): string | undefined =>
  typeof d === "object" && d !== null && "_tag" in d && typeof d._tag === "string" ? d._tag : undefined;

// Entries that io-ts appends for the members of a union or an intersection ("0", "1", ...) are not part
// of the user's path: a key counts only when its parent is not a union or an intersection.
const pathKeys = (c: t.Context): number[] => {
  const idx: number[] = [];
  for (let i = 1; i < c.length; i++) {
    const parent = tagOf(c[i - 1].type);
    if (parent !== "UnionType" && parent !== "IntersectionType") idx.push(i);
  }
  return idx;
};

/** The dotted path of a validation context (`optim.lr`, `layers[2].dim`); "" for the top level. */
export const pathOf = (c: t.Context): string =>
  pathKeys(c).reduce((p, i) => {
    const k = c[i].key;
    if (tagOf(c[i - 1].type) === "ArrayType") return `${p}[${k}]`;
    return p === "" ? k : `${p}.${k}`;
  }, "");

/** Human words for what a codec accepts ("a positive integer", `one of "tiny" | "small"`). */
export const describe = (d: unknown): string => {
  const tag = tagOf(d);
  const rec = d as Record<string, unknown>;
  const name = typeof rec?.name === "string" ? rec.name : "a valid value";
  switch (tag) {
    case "UnionType": {
      const parts = (rec.types as unknown[]).map(describe);
      return parts.every((p) => p.startsWith('"')) ? `one of ${parts.join(" | ")}` : parts.join(" or ");
    }
    case "KeyofType":
      return `one of ${Object.keys(rec.keys as object).map((k) => JSON.stringify(k)).join(" | ")}`;
    case "LiteralType":
      return JSON.stringify(rec.value);
    case "RefinementType":
      return brandWords[name] ?? name;
    case "NumberType":
      return "a number";
    case "StringType":
      return "a string";
    case "BooleanType":
      return "true or false";
    case "NullType":
      return "null";
    case "ArrayType":
      return `an array of ${describe(rec.type)}`;
    case "InterfaceType":
    case "PartialType":
    case "DictionaryType":
      return "an object";
    case "RecursiveType":
      return name === "Json" ? "a JSON value" : name;
    default:
      return Array.isArray(rec?.allowed)
        ? `an object with keys ${(rec.allowed as string[]).join(", ")}`
        : name;
  }
};

const showValue = (v: unknown): string => {
  if (v === undefined) return "nothing (the key is missing)";
  let s: string;
  try {
    s = typeof v === "number" && !Number.isFinite(v) ? String(v) : JSON.stringify(v);
  } catch {
    s = String(v);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
};

/** One line per error: `<where>: at <path>: expected <what>, got <JSON value>` (duplicates removed). */
export const reportErrors = (errors: t.Errors, where: string): string => {
  const lines = errors.map((e) => {
    if (e.message !== undefined) return `${where}: ${e.message}`;
    const keys = pathKeys(e.context);
    const at = pathOf(e.context);
    // What was expected is the codec of the innermost path key (a union is described as a whole).
    const codec = e.context[keys.length > 0 ? keys[keys.length - 1] : 0]?.type;
    return `${where}: at ${at === "" ? "the top level" : at}: expected ${describe(codec)}, got ${
      showValue(e.context[keys.length > 0 ? keys[keys.length - 1] : 0]?.actual ?? e.value)
    }`;
  });
  return [...new Set(lines)].join("\n");
};

/**
 * Decodes `value` with `codec`; on failure, a human report (one line per error, each prefixed with
 * `where`, e.g. the file name or "flags").
 *
 * @example
 * ```ts
 * import { decodeWith, PositiveInt } from "./codec.ts";
 * import { E } from "../deps.ts";
 * const r = decodeWith(PositiveInt, -3, "flags");
 * if (E.isRight(r) || r.left !== "flags: at the top level: expected a positive integer, got -3") {
 *   throw new Error("unexpected report");
 * }
 * ```
 */
export const decodeWith = <A, O>(
  codec: t.Type<A, O, unknown>,
  value: unknown,
  where: string,
): E.Either<string, A> => E.mapLeft((errors: t.Errors) => reportErrors(errors, where))(codec.decode(value));

// ---------------------------------------------------------------------------------------------------------
// Command-line values

const members = (d: unknown): unknown[] => {
  const tag = tagOf(d);
  const rec = d as Record<string, unknown>;
  if (tag === "UnionType") return (rec.types as unknown[]).flatMap(members);
  if (tag === "RefinementType") return members(rec.type);
  return [d];
};

/**
 * Turns a command-line string into what `codec` takes: a number when the codec accepts numbers and the
 * text is one, `null` for "null"/"none" when it accepts null, a boolean for "true"/"false" when it accepts
 * booleans, otherwise the text unchanged (so that the codec's error shows what the user typed).
 */
export const coerceFlag = (codec: t.Mixed, raw: string): unknown => {
  const tags = members(codec).map(tagOf);
  const text = raw.trim();
  if (tags.includes("NullType") && (text === "null" || text === "none")) return null;
  // Whole numbers past 2^53 - 1 stay text, so the error quotes what was typed, not the float it rounds to.
  if (/^[+-]?\d+$/.test(text) && !Number.isSafeInteger(Number(text))) return raw;
  if (tags.includes("NumberType") && text !== "" && Number.isFinite(Number(text))) return Number(text);
  if (tags.includes("BooleanType") && (text === "true" || text === "false")) return text === "true";
  return raw;
};

/** Whether `codec` accepts null (used to offer `--no-<flag>`). */
export const acceptsNull = (codec: t.Mixed): boolean => members(codec).some((m) => tagOf(m) === "NullType");
