/**
 * An event-file reader for the tests, written independently of lib/core/tensorboard.ts: its own CRC32C
 * (bitwise, no table), its own protobuf decoding, its own TFRecord framing. tests/tensorboard_test.ts first
 * shows it reads real files written by TensorFlow and by tensorboardX (tests/fixtures/tensorboard/), then
 * uses it on the writer's files; tests/eval_tensorboard_test.ts reads the evaluation tasks' files with it.
 *
 * @module
 */
import { assert, assertEquals } from "../lib/core/std.ts";

/** CRC32C bit by bit (reflected Castagnoli polynomial 0x82F63B78), no table. */
export const crcBitwise = (bytes: Uint8Array): number => {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0x82f63b78 & -(crc & 1));
  }
  return (crc ^ 0xffffffff) >>> 0;
};
/** The masked CRC of TFRecords. */
export const mask = (crc: number) => (((crc >>> 15) | (crc << 17)) + 0xa282ead8) >>> 0;

/** One decoded protobuf field: varints as bigint, fixed64/fixed32 as their 8/4 bytes, length-delimited as bytes. */
export interface Field {
  readonly no: number;
  readonly wire: number;
  readonly int?: bigint;
  readonly bytes?: Uint8Array;
}

/** The fields of a protobuf message, in order. */
export const decodeMessage = (b: Uint8Array): Field[] => {
  const out: Field[] = [];
  let i = 0;
  const readVarint = (): bigint => {
    let v = 0n, shift = 0n;
    for (;;) {
      assert(i < b.length, "varint runs past the message");
      const x = b[i++];
      v |= BigInt(x & 0x7f) << shift;
      if ((x & 0x80) === 0) return v;
      shift += 7n;
    }
  };
  while (i < b.length) {
    const k = Number(readVarint());
    const no = k >>> 3, wire = k & 7;
    if (wire === 0) out.push({ no, wire, int: readVarint() });
    else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4;
      assert(i + n <= b.length, "fixed field runs past the message");
      out.push({ no, wire, bytes: b.slice(i, i + n) });
      i += n;
    } else if (wire === 2) {
      const n = Number(readVarint());
      assert(i + n <= b.length, "length-delimited field runs past the message");
      out.push({ no, wire, bytes: b.slice(i, i + n) });
      i += n;
    } else throw new Error(`wire type ${wire} (field ${no}) is not used by these messages`);
  }
  return out;
};

const one = (fs: Field[], no: number) => fs.filter((f) => f.no === no).at(-1);
const text = (b: Uint8Array | undefined) => (b === undefined ? undefined : new TextDecoder().decode(b));
const f64 = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset).getFloat64(0, true);
const f32 = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset).getFloat32(0, true);

/** What the tests look at in a `Summary.Value`. */
export interface Value {
  readonly tag: string;
  readonly simple?: number;
  readonly plugin?: string;
  readonly tensor?: {
    readonly dtype: number;
    readonly dims: number;
    readonly strings: string[];
    readonly content?: Uint8Array;
  };
}

/** A decoded `Event`. */
export interface Event {
  readonly wallTime: number;
  readonly step: number;
  readonly fileVersion?: string;
  readonly values?: Value[];
  readonly sessionStatus?: number;
}

const decodeValue = (b: Uint8Array): Value => {
  const fs = decodeMessage(b);
  const simple = one(fs, 2);
  const meta = one(fs, 9);
  const tensor = one(fs, 8);
  let plugin: string | undefined;
  if (meta?.bytes) {
    const pd = one(decodeMessage(meta.bytes), 1);
    plugin = text(pd?.bytes && one(decodeMessage(pd.bytes), 1)?.bytes);
  }
  let t: Value["tensor"];
  if (tensor?.bytes) {
    const tf = decodeMessage(tensor.bytes);
    const shape = one(tf, 2);
    assert(shape !== undefined, "a TensorProto without tensor_shape");
    t = {
      dtype: Number(one(tf, 1)?.int ?? 0n),
      dims: decodeMessage(shape.bytes!).filter((f) => f.no === 2).length,
      strings: tf.filter((f) => f.no === 8).map((f) => text(f.bytes)!),
      content: one(tf, 4)?.bytes,
    };
  }
  return {
    tag: text(one(fs, 1)?.bytes) ?? "",
    simple: simple?.bytes ? f32(simple.bytes) : undefined,
    plugin,
    tensor: t,
  };
};

const decodeEvent = (b: Uint8Array): Event => {
  const fs = decodeMessage(b);
  const wall = one(fs, 1), summary = one(fs, 5), session = one(fs, 7);
  assert(wall?.wire === 1, "wall_time is field 1, a double");
  return {
    wallTime: f64(wall.bytes!),
    step: Number(one(fs, 2)?.int ?? 0n),
    fileVersion: text(one(fs, 3)?.bytes),
    values: summary?.bytes
      ? decodeMessage(summary.bytes).filter((f) => f.no === 1).map((f) => decodeValue(f.bytes!))
      : undefined,
    sessionStatus: session?.bytes ? Number(one(decodeMessage(session.bytes), 1)?.int ?? 0n) : undefined,
  };
};

/** Every record of an event file, both checksums checked, decoded. */
export const readEventFile = async (path: string): Promise<Event[]> => {
  const b = await Deno.readFile(path);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const events: Event[] = [];
  let off = 0;
  while (off < b.length) {
    assert(off + 12 <= b.length, `${path}: a record header is cut at byte ${off}`);
    const len = Number(view.getBigUint64(off, true));
    assertEquals(
      view.getUint32(off + 8, true),
      mask(crcBitwise(b.subarray(off, off + 8))),
      `length crc at ${off}`,
    );
    const data = b.subarray(off + 12, off + 12 + len);
    assert(off + 12 + len + 4 <= b.length, `${path}: the record at ${off} is cut`);
    assertEquals(view.getUint32(off + 12 + len, true), mask(crcBitwise(data)), `data crc at ${off}`);
    events.push(decodeEvent(data));
    off += 12 + len + 4;
  }
  return events;
};

/** The event files of a directory in name order (TensorBoard's order). */
export const eventFiles = async (dir: string): Promise<string[]> => {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.isFile && e.name.includes("tfevents")) names.push(e.name);
  return names.sort().map((n) => `${dir}/${n}`);
};

/**
 * What TensorBoard shows of a directory's scalars, as plugin_event_accumulator.py reads them: the files in
 * name order; the run's first `session_log START` is its start, and at each later one, of step s, every
 * point read so far with a step >= s is dropped (`_CheckForRestartAndMaybePurge`, `_Purge`:
 * `_NotExpired = lambda x: x.step < event.step`).
 */
export const tensorboardView = async (dir: string): Promise<Map<string, [number, number][]>> => {
  const series = new Map<string, [number, number][]>();
  let started = false;
  for (const path of await eventFiles(dir)) {
    for (const e of await readEventFile(path)) {
      if (e.sessionStatus === 1 && started) {
        for (const [k, v] of series) series.set(k, v.filter(([s]) => s < e.step));
      }
      if (e.sessionStatus === 1) started = true;
      for (const v of e.values ?? []) {
        if (v.simple === undefined) continue;
        series.set(v.tag, [...(series.get(v.tag) ?? []), [e.step, v.simple]]);
      }
    }
  }
  return series;
};
