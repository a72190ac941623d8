/**
 * Stable hashes of configs: SHA-256 over canonical JSON (object keys sorted at every depth, `undefined`
 * fields dropped), so that key order, whitespace and absent-versus-undefined never change the hash.
 *
 * @module
 */

/**
 * Canonical JSON: keys sorted at every depth, `undefined` object fields dropped, no whitespace.
 *
 * @example
 * ```ts
 * import { canonicalJson } from "./hash.ts";
 * if (canonicalJson({ b: 1, a: { d: [2], c: undefined } }) !== '{"a":{"d":[2]},"b":1}') throw new Error();
 * ```
 */
export const canonicalJson = (value: unknown): string =>
  JSON.stringify(
    value,
    (_key, v: unknown) =>
      typeof v === "object" && v !== null && !Array.isArray(v)
        ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>)
            .filter(([, x]) => x !== undefined)
            .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
        )
        : v,
  );

/** Lower-case hex SHA-256 of a UTF-8 string. */
export const sha256Hex = async (text: string): Promise<string> => {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
};

/**
 * The first 16 hex characters of the SHA-256 of `value`'s canonical JSON, leaving out the top-level keys
 * in `omit` (fields that do not change what is computed, such as the output directory).
 */
export const stableHash = async (value: Readonly<Record<string, unknown>>, omit: readonly string[] = []) =>
  (await sha256Hex(
    canonicalJson(Object.fromEntries(Object.entries(value).filter(([k]) => !omit.includes(k)))),
  ))
    .slice(0, 16);
