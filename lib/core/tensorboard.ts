/**
 * TensorBoard event files, written with no dependency: what `tensorboard --logdir runs/` reads, as the
 * official CAE / MAE code writes them through tensorboardX's `SummaryWriter`.
 *
 * A file `events.out.tfevents.<unix seconds>.<hostname>` is a sequence of TFRecords
 * (tensorboard/summary/writer/record_writer.py): uint64 length (little-endian), masked CRC32C of those 8
 * bytes, the data, masked CRC32C of the data; mask(crc) = ((crc >>> 15) | (crc << 17)) + 0xa282ead8, all
 * uint32 (tensorboard/compat/tensorflow_stub/pywrap_tensorflow.py). Each record is a protobuf `Event`
 * (tensorboard/compat/proto/event.proto): `double wall_time = 1`, `int64 step = 2`, and one of
 * `string file_version = 3` ("brain.Event:2", the first event of every file), `Summary summary = 5`,
 * `SessionLog session_log = 7` (`status = 1`, START = 1). `Summary` (summary.proto) is
 * `repeated Value value = 1`; a scalar is `Value { string tag = 1; float simple_value = 2 }`; a text is
 * `Value { tag = 1; SummaryMetadata metadata = 9; TensorProto tensor = 8 }` with
 * `SummaryMetadata { PluginData plugin_data = 1 { string plugin_name = 1 = "text" } }` (the text plugin's
 * content, `TextPluginData { version = 0 }`, serialises to no bytes) and `TensorProto { DataType dtype = 1
 * = DT_STRING (7); TensorShapeProto tensor_shape = 2 (empty: a scalar); repeated bytes string_val = 8 }`
 * (tensor.proto, types.proto).
 *
 * Resumed runs: a `session_log { status: START }` event at step s makes TensorBoard's Python loaders drop
 * every point of the run read so far with a step >= s ("purge_orphaned_data", on by default;
 * event_accumulator.py `_CheckForRestartAndMaybePurge` and `_Purge`, which keeps `x.step < event.step`).
 * plugin_event_accumulator.py, what `tensorboard --load_fast=false` uses, takes the first START of a run as
 * its start and purges only at later ones: so a fresh run writes START at step 0 and a resumed run writes
 * START at the first step it logs again. The Rust data server (the default `--load_fast=auto`, data/server
 * run.rs and reservoir.rs) needs no START: a step at or below one it has seen in a time series drops that
 * series' points from that step on.
 *
 * Every record goes to the OS in one synchronous write (`Deno.FsFile`, no buffer of ours), so a killed
 * run keeps every event written before it died.
 *
 * @module
 */

// ---- CRC32C (Castagnoli, reflected polynomial 0x82f63b78) ----

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/**
 * CRC32C of `bytes`.
 *
 * @example
 * ```ts
 * import { crc32c } from "./tensorboard.ts";
 * // The check value of CRC-32C (RFC 3720, B.4): "123456789" -> 0xe3069283.
 * if (crc32c(new TextEncoder().encode("123456789")) !== 0xe3069283) throw new Error();
 * ```
 */
export const crc32c = (bytes: Uint8Array): number => {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
};

/** The masked CRC32C of TFRecords: `((crc >>> 15) | (crc << 17)) + 0xa282ead8`, as uint32. */
export const maskedCrc32c = (bytes: Uint8Array): number => {
  const c = crc32c(bytes);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
};

/** One TFRecord: length, masked CRC of the length, data, masked CRC of the data. */
export const tfRecord = (data: Uint8Array): Uint8Array => {
  const out = new Uint8Array(8 + 4 + data.length + 4);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
};

// ---- protobuf encoding (the few wire types these messages use) ----

type Chunk = Uint8Array;

const varint = (n: number | bigint): Chunk => {
  let v = BigInt.asUintN(64, BigInt(n));
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Uint8Array.from(out);
};

const concat = (parts: readonly Chunk[]): Chunk => {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
};

const key = (field: number, wire: 0 | 1 | 2 | 5): Chunk => varint((field << 3) | wire);
const enc = new TextEncoder();

/** Field `field` as a varint (int64, enum). */
const pbVarint = (field: number, v: number): Chunk => concat([key(field, 0), varint(v)]);
/** Field `field` as a double (fixed64, little-endian). */
const pbDouble = (field: number, v: number): Chunk => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, v, true);
  return concat([key(field, 1), b]);
};
/** Field `field` as a float (fixed32, little-endian). */
const pbFloat = (field: number, v: number): Chunk => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, v, true);
  return concat([key(field, 5), b]);
};
/** Field `field` as length-delimited bytes (string, bytes, message). */
const pbBytes = (field: number, v: Uint8Array | string): Chunk => {
  const b = typeof v === "string" ? enc.encode(v) : v;
  return concat([key(field, 2), varint(b.length), b]);
};

/** The file version every event file starts with. */
export const FILE_VERSION = "brain.Event:2";

/** What an `Event` carries besides its time and step. */
export type EventBody =
  | { readonly kind: "fileVersion"; readonly version: string }
  | { readonly kind: "scalars"; readonly values: Readonly<Record<string, number>> }
  | { readonly kind: "text"; readonly tag: string; readonly text: string }
  | { readonly kind: "sessionStart" };

/** DataType DT_STRING (types.proto). */
const DT_STRING = 7;
/** SessionLog.SessionStatus START (event.proto). */
const SESSION_START = 1;

const summaryOf = (body: EventBody): Chunk => {
  if (body.kind === "scalars") {
    return concat(
      Object.entries(body.values).map(([tag, v]) => pbBytes(1, concat([pbBytes(1, tag), pbFloat(2, v)]))),
    );
  }
  if (body.kind !== "text") throw new Error(`not a summary: ${body.kind}`);
  const metadata = pbBytes(1, pbBytes(1, "text")); // SummaryMetadata.plugin_data.plugin_name
  const tensor = concat([pbVarint(1, DT_STRING), pbBytes(2, new Uint8Array(0)), pbBytes(8, body.text)]);
  const value = concat([pbBytes(1, body.tag), pbBytes(9, metadata), pbBytes(8, tensor)]);
  return pbBytes(1, value);
};

/**
 * One `Event` as protobuf bytes (no TFRecord framing). `step` is a whole number >= 0.
 *
 * @example
 * ```ts
 * import { encodeEvent } from "./tensorboard.ts";
 * const b = encodeEvent(0, 1, { kind: "fileVersion", version: "brain.Event:2" });
 * // wall_time (field 1, fixed64), step 1 (field 2, varint), file_version (field 3, 13 bytes).
 * if (b[0] !== 0x09 || b[9] !== 0x10 || b[10] !== 1 || b[11] !== 0x1a || b[12] !== 13) throw new Error();
 * ```
 */
export const encodeEvent = (wallTime: number, step: number, body: EventBody): Uint8Array => {
  if (!Number.isSafeInteger(step) || step < 0) {
    throw new Error(`event step ${step}: expected a whole number >= 0`);
  }
  const head = [pbDouble(1, wallTime), ...(step !== 0 ? [pbVarint(2, step)] : [])];
  switch (body.kind) {
    case "fileVersion":
      return concat([...head, pbBytes(3, body.version)]);
    case "sessionStart":
      return concat([...head, pbBytes(7, pbVarint(1, SESSION_START))]);
    default:
      return concat([...head, pbBytes(5, summaryOf(body))]);
  }
};

// ---- the writer ----

/** An open event file. Every call writes one record and hands it to the OS before it returns. */
export interface EventWriter {
  /** The file written. */
  readonly path: string;
  /** Scalars of one step (one `Event`, one `Value` per entry; floats, as TensorBoard stores them). */
  readonly scalars: (step: number, values: Readonly<Record<string, number>>) => void;
  /** A markdown text of one step, for TensorBoard's Text tab. */
  readonly text: (step: number, tag: string, markdown: string) => void;
  /** `session_log { status: START }` at `step`: TensorBoard drops what it read at steps >= `step`. */
  readonly sessionStart: (step: number) => void;
  /** Closes the file (again: nothing). */
  readonly close: () => void;
}

/** Options of {@link openEventWriter}. */
export interface EventWriterOptions {
  /** The clock, in seconds since the epoch (default `Date.now() / 1000`): the file name and `wall_time`. */
  readonly wallTime?: () => number;
  /** The host in the file name (default `Deno.hostname()`, else "localhost"). */
  readonly hostname?: string;
  /**
   * `tolerantEventWriter`: how its warning ends, saying what happens next (default pretraining's "; the run
   * goes on, metrics.jsonl has every step").
   */
  readonly goesOn?: string;
}

const hostName = (): string => {
  try {
    return Deno.hostname();
  } catch {
    return "localhost";
  }
};

const writeAllSync = (file: Deno.FsFile, bytes: Uint8Array) => {
  let off = 0;
  while (off < bytes.length) off += file.writeSync(bytes.subarray(off));
};

/**
 * Creates `dir` (if needed) and a new event file in it, `events.out.tfevents.<seconds>.<hostname>`
 * (`.1`, `.2`, ... appended when that name is taken, which sorts after it, as TensorBoard reads the files
 * of a directory in name order), and writes the `file_version` event. Throws when the file cannot be
 * created; see {@link tolerantEventWriter} for a writer that never throws.
 *
 * @example
 * ```ts
 * import { openEventWriter } from "./tensorboard.ts";
 * const dir = await Deno.makeTempDir();
 * const w = await openEventWriter(dir, { wallTime: () => 1700000000.5, hostname: "box" });
 * w.scalars(1, { "train/loss": 0.5 });
 * w.close();
 * if (!w.path.endsWith("/events.out.tfevents.1700000000.box")) throw new Error(w.path);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export const openEventWriter = async (dir: string, o: EventWriterOptions = {}): Promise<EventWriter> => {
  const clock = o.wallTime ?? (() => Date.now() / 1000);
  const host = (o.hostname ?? hostName()).replace(/[/\\\s]/g, "_") || "localhost";
  await Deno.mkdir(dir, { recursive: true });
  const stem = `${dir.replace(/\/+$/, "")}/events.out.tfevents.${Math.floor(clock())}.${host}`;
  let file: Deno.FsFile | undefined, path = stem;
  for (let n = 0; file === undefined; n++) {
    path = n === 0 ? stem : `${stem}.${n}`;
    try {
      file = await Deno.open(path, { write: true, createNew: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists) || n >= 1000) throw e;
    }
  }
  const f = file;
  let open = true;
  const write = (step: number, body: EventBody) => {
    if (!open) throw new Error(`tensorboard: ${path} is closed`);
    writeAllSync(f, tfRecord(encodeEvent(clock(), step, body)));
  };
  write(0, { kind: "fileVersion", version: FILE_VERSION });
  return {
    path,
    scalars: (step, values) => write(step, { kind: "scalars", values }),
    text: (step, tag, text) => write(step, { kind: "text", tag, text }),
    sessionStart: (step) => write(step, { kind: "sessionStart" }),
    close: () => {
      if (open) f.close();
      open = false;
    },
  };
};

/**
 * An event writer that never throws: the first failure (the folder cannot be created, the disk is full)
 * is passed to `warn` once, and every later call does nothing. For a training run, whose events are a
 * convenience and must never stop it.
 */
export const tolerantEventWriter = async (
  dir: string,
  warn: (message: string) => void,
  o: EventWriterOptions = {},
): Promise<EventWriter> => {
  let inner: EventWriter | undefined;
  let warned = false;
  const fail = (e: unknown) => {
    try {
      inner?.close();
    } catch { /* already broken */ }
    inner = undefined;
    if (warned) return;
    warned = true;
    warn(
      `warning: TensorBoard events are not written from here on (${dir}: ${
        e instanceof Error ? e.message : String(e)
      })${o.goesOn ?? "; the run goes on, metrics.jsonl has every step"}`,
    );
  };
  try {
    inner = await openEventWriter(dir, o);
  } catch (e) {
    fail(e);
  }
  const guard = <A extends unknown[]>(f: (w: EventWriter, ...a: A) => void) => (...a: A) => {
    if (inner === undefined) return;
    try {
      f(inner, ...a);
    } catch (e) {
      fail(e);
    }
  };
  return {
    path: inner?.path ?? dir,
    scalars: guard((w, step: number, values: Readonly<Record<string, number>>) => w.scalars(step, values)),
    text: guard((w, step: number, tag: string, markdown: string) => w.text(step, tag, markdown)),
    sessionStart: guard((w, step: number) => w.sessionStart(step)),
    close: () => {
      try {
        inner?.close();
      } catch { /* nothing to keep */ }
      inner = undefined;
    },
  };
};
