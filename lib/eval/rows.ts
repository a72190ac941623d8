/**
 * What each row of an evaluation split is: the file it came from and its class name. The evaluation loader
 * (data/loader.ts `evalLoader`) reads a split in a fixed order and skips unusable files, and its batches
 * carry pixels and labels only; this module walks the same order (the same listing code: data/folder.ts,
 * data/wds.ts, the synthetic index ranges), leaves out the files the loader reported as skipped, and checks
 * every label against the row's, so a row is never given another file's name.
 *
 * - synthetic: `synthetic:<index>` (the generator's image index; the held-out images follow the training
 *   ones), class names from data/synthetic.ts ("striped disc", ...);
 * - folder: the image's path as opened (`PATH/train/cat/1.jpg`), class names the class folders' names;
 * - wds: `<shard>:<key>.<ext>`, class names unknown (the shards hold integer labels only).
 *
 * @module
 */
import type { DataSource } from "../../data/source.ts";
import { DEFAULT_SYNTHETIC_SIZE } from "../../data/source.ts";
import { listFolder } from "../../data/folder.ts";
import { classNames as syntheticClassNames, syntheticLabel } from "../../data/synthetic.ts";
import { resolveShards, shardSamples } from "../../data/wds.ts";
import type { FeatureSet } from "./features.ts";

/**
 * The class names of a labelled source, label order: the synthetic classes, the class folders of an image
 * folder; undefined for WebDataset shards (their `.cls` members are integers).
 *
 * @example
 * ```ts
 * import { sourceClassNames } from "./rows.ts";
 * const names = await sourceClassNames({ kind: "synthetic" });
 * if (names?.length !== 10 || names[0] !== "solid disc") throw new Error(String(names));
 * ```
 */
export const sourceClassNames = async (source: DataSource): Promise<readonly string[] | undefined> =>
  source.kind === "synthetic"
    ? syntheticClassNames
    : source.kind === "folder"
    ? (await listFolder(source.path, "train")).classes
    : undefined;

/** One sample of a split in the evaluation loader's order. */
export interface SplitRow {
  /** What to print for it: a file path, `synthetic:<index>`, `<shard>:<key>.<ext>`. */
  readonly path: string;
  /** The name the loader gives it when it skips it (a folder item's path relative to the root). */
  readonly name: string;
  /** Its label, -1 when unlabelled. */
  readonly label: number;
}

/** Every sample of a split, in the order the (unshuffled) evaluation loader reads them. */
export async function* splitRows(source: DataSource, split: "train" | "val"): AsyncGenerator<SplitRow> {
  if (source.kind === "synthetic") {
    const size = source.size ?? DEFAULT_SYNTHETIC_SIZE;
    // As data/loader.ts: the held-out images are the ceil(size / 10) after the training range.
    const [offset, n] = split === "train" ? [0, size] : [size, Math.ceil(size / 10)];
    const prefix = source.seed === undefined ? "synthetic" : `synthetic(seed ${source.seed})`;
    for (let j = 0; j < n; j++) {
      const path = `${prefix}:${offset + j}`;
      yield { path, name: path, label: syntheticLabel(offset + j) };
    }
  } else if (source.kind === "folder") {
    for (const it of (await listFolder(source.path, split)).items) {
      yield { path: it.path, name: it.name, label: it.label };
    }
  } else {
    for (const shard of await resolveShards(source.pattern)) {
      // Shard problems were reported by the loader already; the samples read before them are kept alike.
      for await (const s of shardSamples(shard, () => {})) {
        if ((s.hash % 10 === 9) === (split === "val")) yield { path: s.name, name: s.name, label: s.label };
      }
    }
  }
}

/**
 * The path of each row of `set`, a split's features from lib/eval/features.ts `splitFeatures` (which
 * records what the loader skipped). Throws when the rows cannot be named with certainty (a label that
 * differs from the listing's, more rows than the listing holds), saying why.
 */
export const rowPaths = async (
  source: DataSource,
  split: "train" | "val",
  set: Pick<FeatureSet, "count" | "labels" | "skipped">,
): Promise<string[]> => {
  const skipped = new Set(set.skipped?.names ?? []);
  const paths: string[] = [];
  const why = () =>
    set.skipped !== undefined && set.skipped.count > set.skipped.names.length
      ? ` (the loader skipped ${set.skipped.count} files and named the first ${set.skipped.names.length})`
      : "";
  if (set.count === 0) return paths;
  for await (const r of splitRows(source, split)) {
    if (skipped.has(r.name)) continue;
    const i = paths.length;
    if (r.label !== set.labels[i]) {
      throw new Error(
        `cannot name row ${i} of the ${split} split: the listing gives ${r.path} with label ${r.label}, ` +
          `the features have label ${set.labels[i]}${why()}; did the data change while the task ran?`,
      );
    }
    paths.push(r.path);
    if (paths.length === set.count) return paths;
  }
  throw new Error(
    `cannot name the rows of the ${split} split: ${set.count} rows, the listing has ${paths.length}${why()}`,
  );
};

/**
 * The rows sidecar of an extracted features file: `feats.safetensors` -> `feats.rows.json` (any other
 * name gets `.rows.json` appended).
 *
 * @example
 * ```ts
 * import { rowsPathOf } from "./rows.ts";
 * if (rowsPathOf("out/feats.safetensors") !== "out/feats.rows.json") throw new Error();
 * ```
 */
export const rowsPathOf = (out: string): string => `${out.replace(/\.safetensors$/, "")}.rows.json`;

/** The label names of rows: `classNames[label]`, else the label as text; null where unlabelled. */
export const labelNames = (
  labels: Int32Array,
  classNames: readonly string[] | undefined,
): (string | null)[] => Array.from(labels, (y) => (y < 0 ? null : classNames?.[y] ?? String(y)));
