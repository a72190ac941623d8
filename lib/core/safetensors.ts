/**
 * Reading and writing the safetensors format (https://github.com/huggingface/safetensors): an 8-byte
 * little-endian u64 header length `N`, then `N` bytes of UTF-8 JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: { key: "string" } }`, then the data
 * buffer, with offsets relative to its start.
 *
 * Validation follows the reference Rust reader (`safetensors/src/tensor.rs`, `Metadata::validate`): the
 * tensors must tile the data buffer exactly (no overlap, no gap, nothing after the last tensor) and every
 * tensor's byte length must equal `product(shape) * dtype size`. Reading streams: the header first, then
 * each wanted tensor's byte range with a seek, so a 1 GB checkpoint loads with bounded extra memory.
 *
 * @module
 */
import { TE, tf } from "../deps.ts";
import { message, writeAll, writeFileAtomic } from "./fs.ts";

/** The element types this module reads (the safetensors spec names). */
export type DType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

/** Where one tensor lives in the data buffer. `offsets` are `[begin, end)` bytes into the data buffer. */
export interface TensorInfo {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly offsets: readonly [number, number];
}

/** A parsed, validated header. */
export interface SafetensorsHeader {
  readonly tensors: Readonly<Record<string, TensorInfo>>;
  readonly metadata: Readonly<Record<string, string>>;
  /** Byte offset of the data buffer in the file (8 + header length). */
  readonly dataStart: number;
}

/**
 * A tensor in host memory. F64 -> Float64Array; F32/F16/BF16 -> Float32Array; integer and bool dtypes ->
 * Int32Array (I64 must fit in int32, else reading fails naming the tensor).
 */
export interface HostTensor {
  /** Dimensions, outermost first (`[]` for a scalar). */
  readonly shape: readonly number[];
  /** The values, row-major. */
  readonly data: Float64Array | Float32Array | Int32Array;
}

/** What reading a file gives: its `__metadata__` and the decoded tensors. */
export interface Safetensors {
  /** The header's `__metadata__` (string to string; empty when absent). */
  readonly metadata: Record<string, string>;
  /** The tensors read, by name. */
  readonly tensors: Record<string, HostTensor>;
}

/** Options for {@link readSafetensors}: `names` selects which tensors to read (others are skipped). */
export interface ReadOptions {
  /** Reads only the tensors whose name passes (default: all). */
  readonly names?: (name: string) => boolean;
}

/** A problem with a safetensors file. `message` is `${file}: ${problem}` followed by what to do. */
export class SafetensorsError extends Error {
  /** The file at fault. */
  readonly file: string;
  /** What is wrong with it, without the hint. */
  readonly problem: string;
  /** `hint` says what to do (default: the file is not valid safetensors; re-download or re-export it). */
  constructor(file: string, problem: string, hint = HINT_CORRUPT, options?: ErrorOptions) {
    super(`${file}: ${problem}. ${hint}`, options);
    this.name = "SafetensorsError";
    this.file = file;
    this.problem = problem;
  }
}

const HINT_CORRUPT =
  "The file is not valid safetensors (truncated or corrupt?): re-download or re-export it, e.g. with " +
  "safetensors.torch.save_file";
const HINT_WRITE = "Nothing was written at this path; check the path, free disk space and the tensors passed";

/** Bytes per element of each dtype. */
const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

const isDType = (s: unknown): s is DType => typeof s === "string" && Object.hasOwn(DTYPE_SIZE, s);

/** Header limit of the reference implementation (`N_LEN`/`MAX_HEADER_SIZE` = 100_000_000 bytes). */
const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = "__metadata__";

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const isRecord = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && !Array.isArray(x);

const isNonNegInt = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;

const product = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

const describeShape = (shape: readonly number[]) => `[${shape.join(", ")}]`;

/** Reads the u64 header length from the first 8 bytes; throws if the file is too short or it is huge. */
const headerLength = (bytes: Uint8Array, file: string, fileSize: number): number => {
  if (fileSize < 8 || bytes.length < 8) {
    throw new SafetensorsError(file, `file is ${fileSize} bytes, shorter than the 8-byte header length`);
  }
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const len = Number(n);
  if (8 + len > fileSize) {
    throw new SafetensorsError(
      file,
      `header length ${len} reaches beyond the end of the file (${fileSize} bytes, header would end at ${
        8 + len
      })`,
    );
  }
  return len;
};

/**
 * Parses and validates a header. `bytes` must start at the beginning of the file and hold at least the
 * 8-byte length and the header; `fileSize` (default `bytes.length`) is the size of the whole file, used to
 * check that the data buffer holds every tensor and nothing else.
 *
 * @example
 * ```ts
 * import { encodeSafetensors, parseHeader } from "./safetensors.ts";
 * const bytes = encodeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } });
 * const h = parseHeader(bytes, "mem");
 * if (h.tensors.w.dtype !== "F32" || h.tensors.w.offsets[1] !== 8) throw new Error("unexpected");
 * ```
 */
export const parseHeader = (bytes: Uint8Array, file: string, fileSize = bytes.length): SafetensorsHeader => {
  const len = headerLength(bytes, file, fileSize);
  if (bytes.length < 8 + len) {
    throw new SafetensorsError(
      file,
      `parseHeader got ${bytes.length} bytes but the header ends at ${8 + len}`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + len));
  } catch {
    throw new SafetensorsError(file, "header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(file, `header is not JSON (${(e as Error).message})`);
  }
  if (!isRecord(json)) throw new SafetensorsError(file, "header is not a JSON object");

  const dataStart = 8 + len;
  const dataLength = fileSize - dataStart;
  const tensors: Record<string, TensorInfo> = {};
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(json)) {
    if (name === METADATA_KEY) {
      metadata = parseMetadata(entry, file);
      continue;
    }
    tensors[name] = parseTensorInfo(name, entry, file, dataLength);
  }
  checkTiling(tensors, file, dataLength);
  return { tensors, metadata, dataStart };
};

const parseMetadata = (entry: unknown, file: string): Record<string, string> => {
  if (!isRecord(entry)) throw new SafetensorsError(file, `"${METADATA_KEY}" is not an object of strings`);
  for (const [k, v] of Object.entries(entry)) {
    if (typeof v !== "string") {
      throw new SafetensorsError(file, `"${METADATA_KEY}.${k}" is ${JSON.stringify(v)}, not a string`);
    }
  }
  return { ...entry } as Record<string, string>;
};

const parseTensorInfo = (name: string, entry: unknown, file: string, dataLength: number): TensorInfo => {
  const where = `tensor "${name}"`;
  if (!isRecord(entry)) throw new SafetensorsError(file, `${where}: entry is not an object`);
  const { dtype, shape, data_offsets: offsets } = entry;
  if (!isDType(dtype)) {
    throw new SafetensorsError(
      file,
      `${where}: unknown dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(DTYPE_SIZE).join(", ")})`,
    );
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
    throw new SafetensorsError(
      file,
      `${where}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`,
    );
  }
  if (
    !Array.isArray(offsets) || offsets.length !== 2 || !isNonNegInt(offsets[0]) || !isNonNegInt(offsets[1]) ||
    offsets[0] > offsets[1]
  ) {
    throw new SafetensorsError(
      file,
      `${where}: data_offsets ${JSON.stringify(offsets)} is not [begin, end] with integers 0 <= begin <= end`,
    );
  }
  const [begin, end] = offsets as [number, number];
  if (end > dataLength) {
    throw new SafetensorsError(
      file,
      `${where}: data_offsets [${begin}, ${end}] end beyond the data buffer (${dataLength} bytes)`,
    );
  }
  const bytes = product(shape) * DTYPE_SIZE[dtype];
  if (!Number.isSafeInteger(bytes) || bytes !== end - begin) {
    throw new SafetensorsError(
      file,
      `${where}: shape ${
        describeShape(shape)
      } of ${dtype} needs ${bytes} bytes but data_offsets [${begin}, ${end}] ` +
        `span ${end - begin}`,
    );
  }
  return { dtype, shape: [...shape], offsets: [begin, end] };
};

/** The tensors must tile the data buffer: sorted by offset, each begins where the previous one ended. */
const checkTiling = (tensors: Record<string, TensorInfo>, file: string, dataLength: number): void => {
  const sorted = Object.entries(tensors).sort(([, a], [, b]) =>
    a.offsets[0] - b.offsets[0] || a.offsets[1] - b.offsets[1]
  );
  let end = 0;
  let prev = "";
  for (const [name, info] of sorted) {
    const [b, e] = info.offsets;
    if (b < end) {
      throw new SafetensorsError(
        file,
        `tensors "${prev}" and "${name}" overlap (byte ranges end at ${end} and begin at ${b})`,
      );
    }
    if (b > end) {
      throw new SafetensorsError(
        file,
        `gap in the data buffer: bytes [${end}, ${b}) before tensor "${name}" belong to no tensor`,
      );
    }
    end = e;
    prev = name;
  }
  if (end !== dataLength) {
    throw new SafetensorsError(
      file,
      `gap in the data buffer: bytes [${end}, ${dataLength}) after the last tensor belong to no tensor`,
    );
  }
};

// ---------------------------------------------------------------------------------------------------
// Decoding

let f16Table: Float32Array | undefined;

/** IEEE 754 binary16 -> number, exact (subnormals, signed zero, inf, nan). */
export const halfToFloat = (h: number): number => {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24; // zero or subnormal
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
};

/** A 65536-entry lookup table (256 KB, built once on first F16 read). */
const halfTable = (): Float32Array => {
  if (f16Table === undefined) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = halfToFloat(i);
  }
  return f16Table;
};

/**
 * Decodes one tensor's bytes. `bytes` is exactly the tensor's byte range. When `owned` is true the bytes
 * belong to this call (a fresh read) and aligned little-endian data is viewed without copying.
 */
const decodeTensor = (
  name: string,
  info: TensorInfo,
  bytes: Uint8Array,
  file: string,
  owned: boolean,
): HostTensor => {
  const n = product(info.shape);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shape = [...info.shape];
  const view = <T>(size: number, make: (b: ArrayBuffer, off: number, len: number) => T): T | undefined => {
    if (!LITTLE_ENDIAN_HOST) return undefined;
    if (owned && bytes.byteOffset % size === 0 && bytes.buffer instanceof ArrayBuffer) {
      return make(bytes.buffer, bytes.byteOffset, n);
    }
    const copy = bytes.slice(); // fresh ArrayBuffer at offset 0: aligned
    return make(copy.buffer, 0, n);
  };
  switch (info.dtype) {
    case "F64": {
      const v = view(8, (b, o, l) => new Float64Array(b, o, l));
      if (v) return { shape, data: v };
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true);
      return { shape, data: out };
    }
    case "F32": {
      const v = view(4, (b, o, l) => new Float32Array(b, o, l));
      if (v) return { shape, data: v };
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
      return { shape, data: out };
    }
    case "F16": {
      const table = halfTable();
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = table[dv.getUint16(2 * i, true)];
      return { shape, data: out };
    }
    case "BF16": {
      // bfloat16 is the top half of a float32: shifting the bits up is exact, nan and inf included.
      const bits = new Uint32Array(n);
      for (let i = 0; i < n; i++) bits[i] = dv.getUint16(2 * i, true) << 16;
      return { shape, data: new Float32Array(bits.buffer) };
    }
    case "I64": {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const lo = dv.getInt32(8 * i, true), hi = dv.getInt32(8 * i + 4, true);
        if (hi !== (lo < 0 ? -1 : 0)) {
          throw new SafetensorsError(
            file,
            `tensor "${name}": I64 element ${i} = ${dv.getBigInt64(8 * i, true)} does not fit in int32`,
            "tfjs has no int64; store this tensor as I32 or as a float dtype",
          );
        }
        out[i] = lo;
      }
      return { shape, data: out };
    }
    case "I32": {
      const v = view(4, (b, o, l) => new Int32Array(b, o, l));
      if (v) return { shape, data: v };
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true);
      return { shape, data: out };
    }
    case "I16": {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) out[i] = dv.getInt16(2 * i, true);
      return { shape, data: out };
    }
    case "I8":
      return { shape, data: Int32Array.from(new Int8Array(bytes.buffer, bytes.byteOffset, n)) };
    case "U8":
      return { shape, data: Int32Array.from(bytes.subarray(0, n)) };
    case "BOOL":
      return { shape, data: Int32Array.from(bytes.subarray(0, n), (b) => (b !== 0 ? 1 : 0)) };
  }
};

/**
 * Decodes a whole safetensors file held in memory. The result does not alias `bytes`.
 *
 * @example
 * ```ts
 * import { decodeSafetensors, encodeSafetensors } from "./safetensors.ts";
 * const bytes = encodeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } }, { step: "3" });
 * const { metadata, tensors } = decodeSafetensors(bytes);
 * if (metadata.step !== "3" || tensors.w.data[1] !== 2) throw new Error("unexpected");
 * ```
 */
export const decodeSafetensors = (bytes: Uint8Array, file = "<memory>"): Safetensors => {
  const header = parseHeader(bytes, file);
  const tensors: Record<string, HostTensor> = {};
  for (const [name, info] of Object.entries(header.tensors)) {
    const [b, e] = info.offsets;
    tensors[name] = decodeTensor(
      name,
      info,
      bytes.subarray(header.dataStart + b, header.dataStart + e),
      file,
      false,
    );
  }
  return { metadata: { ...header.metadata }, tensors };
};

// ---------------------------------------------------------------------------------------------------
// Reading files

const openError = (path: string, e: unknown): SafetensorsError =>
  e instanceof SafetensorsError ? e : new SafetensorsError(
    path,
    `cannot read the file (${message(e)})`,
    "Check that the path exists and is readable (deno needs --allow-read)",
    { cause: e },
  );

/** Reads exactly `buf.length` bytes at `position` (a file may return fewer bytes per read call). */
const readExactly = async (
  f: Deno.FsFile,
  position: number,
  buf: Uint8Array,
  path: string,
): Promise<void> => {
  await f.seek(position, Deno.SeekMode.Start);
  let got = 0;
  while (got < buf.length) {
    const n = await f.read(buf.subarray(got));
    if (n === null) {
      throw new SafetensorsError(
        path,
        `unexpected end of file at byte ${position + got} (file changed while reading?)`,
      );
    }
    got += n;
  }
};

const readHeaderOf = async (f: Deno.FsFile, path: string): Promise<SafetensorsHeader> => {
  const size = (await f.stat()).size;
  const prefix = new Uint8Array(Math.min(8, size));
  await readExactly(f, 0, prefix, path);
  const len = headerLength(prefix, path, size);
  const head = new Uint8Array(8 + len);
  await readExactly(f, 0, head, path);
  return parseHeader(head, path, size);
};

/** Reads and validates only the header of a file (cheap: the data buffer is not read). */
export const readHeader = async (path: string): Promise<SafetensorsHeader> => {
  let f: Deno.FsFile | undefined;
  try {
    f = await Deno.open(path, { read: true });
    return await readHeaderOf(f, path);
  } catch (e) {
    throw openError(path, e);
  } finally {
    f?.close();
  }
};

/**
 * Reads a file: the header, then each wanted tensor's byte range by seek + read (in file order), so memory
 * grows with the tensors asked for, not with the file. Throws {@link SafetensorsError}.
 */
export const readSafetensors = async (path: string, opts: ReadOptions = {}): Promise<Safetensors> => {
  let f: Deno.FsFile | undefined;
  try {
    f = await Deno.open(path, { read: true });
    const header = await readHeaderOf(f, path);
    const wanted = Object.entries(header.tensors).filter(([name]) => opts.names?.(name) ?? true);
    const inFileOrder = [...wanted].sort(([, a], [, b]) => a.offsets[0] - b.offsets[0]);
    const decoded = new Map<string, HostTensor>();
    for (const [name, info] of inFileOrder) {
      const [b, e] = info.offsets;
      const buf = new Uint8Array(e - b);
      await readExactly(f, header.dataStart + b, buf, path);
      decoded.set(name, decodeTensor(name, info, buf, path, true));
    }
    // Keep the header's order for the caller.
    const tensors: Record<string, HostTensor> = {};
    for (const [name] of wanted) tensors[name] = decoded.get(name)!;
    return { metadata: { ...header.metadata }, tensors };
  } catch (e) {
    throw openError(path, e);
  } finally {
    f?.close();
  }
};

/** {@link readSafetensors} at the fp-ts edge: a TaskEither that never rejects. */
export const loadSafetensors = (
  path: string,
  opts?: ReadOptions,
): TE.TaskEither<SafetensorsError, Safetensors> =>
  TE.tryCatch(() => readSafetensors(path, opts), (e) => openError(path, e));

/**
 * A host tensor as a tf tensor: float data as float32 (F64 is rounded), integer data as int32. The tensor
 * may share memory with `h.data` on the cpu backend: do not mutate `h.data` afterwards.
 */
export const toTensor = (h: HostTensor): tf.Tensor => {
  const shape = [...h.shape];
  if (h.data instanceof Int32Array) return tf.tensor(h.data, shape, "int32");
  if (h.data instanceof Float64Array) return tf.tensor(Float32Array.from(h.data), shape, "float32");
  return tf.tensor(h.data, shape, "float32");
};

// ---------------------------------------------------------------------------------------------------
// Writing

interface Planned {
  readonly name: string;
  readonly dtype: "F32" | "I32";
  readonly shape: readonly number[];
  readonly bytes: number;
  /** Produces the tensor's bytes (little endian) when it is its turn to be written. */
  readonly read: () => Promise<Uint8Array>;
}

const asBytes = (a: Float32Array | Int32Array): Uint8Array => {
  if (!LITTLE_ENDIAN_HOST) {
    const out = new Uint8Array(a.length * 4);
    const dv = new DataView(out.buffer);
    for (let i = 0; i < a.length; i++) {
      if (a instanceof Float32Array) dv.setFloat32(4 * i, a[i], true);
      else dv.setInt32(4 * i, a[i], true);
    }
    return out;
  }
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
};

const isTfTensor = (x: unknown): x is tf.Tensor => x instanceof tf.Tensor;

const hostBytes = (h: HostTensor): Uint8Array =>
  asBytes(h.data instanceof Float64Array ? Float32Array.from(h.data) : h.data);

const plan = (
  tensors: Readonly<Record<string, tf.Tensor | HostTensor>>,
  file: string,
): Planned[] =>
  Object.keys(tensors).sort().map((name): Planned => {
    const x = tensors[name];
    if (isTfTensor(x)) {
      if (x.dtype !== "float32" && x.dtype !== "int32" && x.dtype !== "bool") {
        throw new SafetensorsError(
          file,
          `tensor "${name}" has dtype ${x.dtype}, which cannot be written`,
          HINT_WRITE,
        );
      }
      const dtype = x.dtype === "float32" ? "F32" : "I32";
      return {
        name,
        dtype,
        shape: x.shape,
        bytes: x.size * 4,
        read: async () => {
          const d = await x.data();
          return asBytes(
            d instanceof Float32Array || d instanceof Int32Array ? d : Int32Array.from(d as Uint8Array),
          );
        },
      };
    }
    const n = product(x.shape);
    if (!x.shape.every(isNonNegInt) || n !== x.data.length) {
      throw new SafetensorsError(
        file,
        `tensor "${name}" has shape ${describeShape(x.shape)} (${n} elements) but ${x.data.length} values`,
        HINT_WRITE,
      );
    }
    return {
      name,
      dtype: x.data instanceof Int32Array ? "I32" : "F32",
      shape: x.shape,
      bytes: n * 4,
      read: () => Promise.resolve(hostBytes(x)),
    };
  });

/** Header bytes (length prefix + JSON padded with spaces to a multiple of 8, as the reference writer does). */
const headerBytes = (
  planned: readonly Planned[],
  metadata: Record<string, string>,
  file: string,
): Uint8Array => {
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== "string") {
      throw new SafetensorsError(file, `metadata "${k}" is ${typeof v}, not a string`, HINT_WRITE);
    }
  }
  const json: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) json[METADATA_KEY] = metadata;
  let offset = 0;
  for (const p of planned) {
    json[p.name] = { dtype: p.dtype, shape: p.shape, data_offsets: [offset, offset + p.bytes] };
    offset += p.bytes;
  }
  const text = new TextEncoder().encode(JSON.stringify(json));
  const padded = Math.ceil(text.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(text, 8);
  return out;
};

/**
 * Encodes host tensors in memory (F32 for float data, F64 included; I32 for Int32Array). Names are sorted.
 */
export const encodeSafetensors = (
  tensors: Readonly<Record<string, HostTensor>>,
  metadata: Record<string, string> = {},
): Uint8Array => {
  const planned = plan(tensors, "<memory>");
  const head = headerBytes(planned, metadata, "<memory>");
  const out = new Uint8Array(head.length + planned.reduce((s, p) => s + p.bytes, 0));
  out.set(head, 0);
  let at = head.length;
  for (const name of Object.keys(tensors).sort()) {
    const b = hostBytes(tensors[name]);
    out.set(b, at);
    at += b.length;
  }
  return out;
};

/**
 * Writes tensors atomically: F32 for float data (tf float32 tensors, Float32Array and Float64Array host
 * data), I32 for int32/bool tf tensors and Int32Array host data; names sorted; metadata values must be
 * strings. The file is written atomically (lib/core/fs.ts `writeFileAtomic`): to `${path}.tmp-<pid>-<rand>`
 * in the same directory, fsynced, then renamed over `path`; on any error the temporary file is removed and
 * an existing `path` is left untouched.
 * tf tensors are read one at a time with `await t.data()` (not disposed).
 */
export const writeSafetensors = async (
  path: string,
  tensors: Readonly<Record<string, tf.Tensor | HostTensor>>,
  metadata: Record<string, string> = {},
): Promise<void> => {
  const planned = plan(tensors, path);
  const head = headerBytes(planned, metadata, path);
  try {
    await writeFileAtomic(path, async (f) => {
      await writeAll(f, head);
      for (const p of planned) {
        const bytes = await p.read();
        if (bytes.length !== p.bytes) {
          throw new SafetensorsError(
            path,
            `tensor "${p.name}" produced ${bytes.length} bytes, expected ${p.bytes}`,
          );
        }
        await writeAll(f, bytes);
      }
    });
  } catch (e) {
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(path, `writing failed (${message(e)})`, HINT_WRITE, { cause: e });
  }
};
