/**
 * Where the images come from, as the `--data` flag names it: the procedural synthetic dataset, an image
 * folder in ImageNet layout, or WebDataset tar shards.
 *
 * @module
 */
import { E } from "../lib/deps.ts";

/** A data source. */
export type DataSource =
  | {
    readonly kind: "synthetic";
    /** Images per epoch (training split); default {@link DEFAULT_SYNTHETIC_SIZE}. */
    readonly size?: number;
    /** Which synthetic dataset (default 0); independent of the run's data key. */
    readonly seed?: number;
  }
  /** `path/<class>/**\/*.jpg|png`, or `path/train/<class>/...` with an optional `path/val/<class>/...`. */
  | { readonly kind: "folder"; readonly path: string }
  /** Shards: a brace pattern (`shards/train-{000000..000146}.tar`), `::`-joined paths, or a `.txt` list. */
  | { readonly kind: "wds"; readonly pattern: string };

/** Images per epoch of the synthetic source when `synthetic` has no size. */
export const DEFAULT_SYNTHETIC_SIZE = 10_000;

const EXPECTED =
  'expected "synthetic", "synthetic:N" (N images per epoch), "folder:PATH" (image folder) or "wds:PATTERN" (WebDataset tar shards)';

/**
 * Parses a `--data` value.
 *
 * @example
 * ```ts
 * import { parseDataSource } from "./source.ts";
 * import { E } from "../lib/deps.ts";
 * const r = parseDataSource("synthetic:5000");
 * if (!E.isRight(r) || r.right.kind !== "synthetic" || r.right.size !== 5000) throw new Error();
 * if (!E.isLeft(parseDataSource("imagenet"))) throw new Error("unknown kinds are rejected");
 * ```
 */
export const parseDataSource = (s: string): E.Either<string, DataSource> => {
  const colon = s.indexOf(":");
  const kind = colon < 0 ? s : s.slice(0, colon);
  const rest = colon < 0 ? undefined : s.slice(colon + 1);
  switch (kind) {
    case "synthetic": {
      if (rest === undefined) return E.right({ kind: "synthetic" });
      const n = Number(rest);
      return /^\d+$/.test(rest) && Number.isSafeInteger(n) && n > 0
        ? E.right({ kind: "synthetic", size: n })
        : E.left(`data source "${s}": the size after "synthetic:" must be a positive integer; ${EXPECTED}`);
    }
    case "folder":
      return rest
        ? E.right({ kind: "folder", path: rest })
        : E.left(`data source "${s}": "folder:" needs a path; ${EXPECTED}`);
    case "wds":
      return rest
        ? E.right({ kind: "wds", pattern: rest })
        : E.left(`data source "${s}": "wds:" needs a shard pattern; ${EXPECTED}`);
    default:
      return E.left(`data source "${s}": ${EXPECTED}`);
  }
};

/** The `--data` spelling of a source (inverse of {@link parseDataSource}). */
export const formatDataSource = (src: DataSource): string =>
  src.kind === "synthetic"
    ? (src.size === undefined ? "synthetic" : `synthetic:${src.size}`)
    : src.kind === "folder"
    ? `folder:${src.path}`
    : `wds:${src.pattern}`;
