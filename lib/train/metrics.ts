/**
 * The metrics log: one JSON object per line (`metrics.jsonl`), appended and handed to the OS line by line
 * so that a crash loses at most the line being written. Numbers are plain JSON numbers; the non-finite
 * ones JSON cannot hold (a diverged loss) are written as the strings "NaN", "Infinity", "-Infinity" and
 * read back as numbers.
 *
 * @module
 */
import { message, writeTextAtomic } from "../core/fs.ts";

/** A value in a metrics record. */
export type MetricValue = number | string | boolean | null;

/** One line of the metrics log; training lines carry `step`. */
export type MetricsRecord = Readonly<Record<string, MetricValue>>;

const NON_FINITE: Readonly<Record<string, number>> = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };

/**
 * A record as one line of JSON (no newline), non-finite numbers as strings.
 *
 * @example
 * ```ts
 * import { encodeMetrics } from "./metrics.ts";
 * if (encodeMetrics({ step: 1, loss: NaN }) !== '{"step":1,"loss":"NaN"}') throw new Error();
 * ```
 */
export const encodeMetrics = (record: MetricsRecord): string =>
  JSON.stringify(record, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v));

/** Parses one line written by `encodeMetrics`; throws on anything that is not a flat JSON object. */
export const decodeMetrics = (line: string): MetricsRecord => {
  const v: unknown = JSON.parse(line);
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not a JSON object");
  const out: Record<string, MetricValue> = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x === "string" && Object.hasOwn(NON_FINITE, x)) out[k] = NON_FINITE[x];
    else if (x === null || ["number", "string", "boolean"].includes(typeof x)) out[k] = x as MetricValue;
    else throw new Error(`field "${k}" is not a number, string, boolean or null`);
  }
  return out;
};

/** An open metrics log. */
export interface MetricsWriter {
  /** The file written. */
  readonly path: string;
  /** Appends one record as a line; the bytes reach the OS before this returns. */
  readonly write: (record: MetricsRecord) => void;
  /** Closes the file. */
  readonly close: () => void;
}

const writeAllSync = (file: Deno.FsFile, bytes: Uint8Array) => {
  let off = 0;
  while (off < bytes.length) off += file.writeSync(bytes.subarray(off));
};

/**
 * Opens `path` for appending (creating it), once per run. Writes are synchronous, one `write` call per
 * line, so lines never interleave and each is on disk (in the OS cache) when `write` returns.
 */
export const openMetricsWriter = async (path: string): Promise<MetricsWriter> => {
  const file = await Deno.open(path, { append: true, create: true });
  const enc = new TextEncoder();
  let open = true;
  return {
    path,
    write: (record) => {
      if (!open) throw new Error(`metrics: ${path} is closed; a record was written after the run ended`);
      writeAllSync(file, enc.encode(`${encodeMetrics(record)}\n`));
    },
    close: () => {
      if (open) file.close();
      open = false;
    },
  };
};

/** What `readMetrics` found. */
export interface MetricsLog {
  /** Every complete, well-formed record, in file order. */
  readonly records: readonly MetricsRecord[];
  /** Lines that could not be read (a line cut by a crash), with their 1-based line numbers. */
  readonly skipped: readonly { readonly line: number; readonly text: string; readonly error: string }[];
}

/** Reads a metrics log; a missing file is an empty log. Bad lines are reported in `skipped`, not thrown. */
export const readMetrics = async (path: string): Promise<MetricsLog> => {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { records: [], skipped: [] };
    throw e;
  }
  const records: MetricsRecord[] = [];
  const skipped: { line: number; text: string; error: string }[] = [];
  const lines = text.split("\n");
  lines.forEach((line, i) => {
    if (line.trim() === "") return;
    try {
      // The last line without its newline was being written when the process stopped.
      if (i === lines.length - 1) throw new Error("incomplete line (no newline at the end of the file)");
      records.push(decodeMetrics(line));
    } catch (e) {
      skipped.push({
        line: i + 1,
        text: line.slice(0, 80),
        error: message(e),
      });
    }
  });
  return { records, skipped };
};

/**
 * Cuts the log back to what an uninterrupted run had written after `step`: keeps the lines before the
 * first line with a `step` above it (or the first unreadable line), byte for byte, and drops the rest.
 * Rewrites atomically (lib/core/fs.ts `writeTextAtomic`). Returns the number of lines dropped.
 */
export const truncateMetricsAfter = async (path: string, step: number): Promise<number> => {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return 0;
    throw e;
  }
  const lines = text.split("\n");
  const complete = lines.slice(0, -1); // the part after the last newline is an incomplete line (or "")
  let keep = 0;
  for (const line of complete) {
    let rec: MetricsRecord;
    try {
      rec = decodeMetrics(line);
    } catch {
      break;
    }
    if (typeof rec.step === "number" && rec.step > step) break;
    keep++;
  }
  const dropped = complete.length - keep + (lines[lines.length - 1] === "" ? 0 : 1);
  if (dropped === 0) return 0;
  const kept = complete.slice(0, keep).map((l) => `${l}\n`).join("");
  await writeTextAtomic(path, kept);
  return dropped;
};
