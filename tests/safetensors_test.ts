import { E, tf } from "../lib/deps.ts";
import {
  decodeSafetensors,
  encodeSafetensors,
  halfToFloat,
  type HostTensor,
  loadSafetensors,
  parseHeader,
  readHeader,
  readSafetensors,
  SafetensorsError,
  toTensor,
  writeSafetensors,
} from "../lib/core/safetensors.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes, assertThrows } from "../lib/core/std.ts";

// These tests exercise the file format, not a backend: the cpu backend starts instantly.
await tf.setBackend("cpu");

const FIXTURES = new URL("./fixtures/", import.meta.url);
const fixture = (name: string) => new URL(name, FIXTURES).pathname;

/** A file built by hand (independently of the encoder): raw header text and raw data bytes. */
const rawFile = (header: string | object, data: number[] | Uint8Array = [], lengthOverride?: bigint) => {
  const text = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + text.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(text.length), true);
  out.set(text, 8);
  out.set(data, 8 + text.length);
  return out;
};

const u16le = (...xs: number[]) => xs.flatMap((x) => [x & 0xff, (x >> 8) & 0xff]);
const bytesOf = (a: ArrayBufferView) => [...new Uint8Array(a.buffer, a.byteOffset, a.byteLength)];

const sum = (xs: ArrayLike<number>) => Array.from(xs).reduce((a, b) => a + b, 0);

const withTempDir = async (f: (dir: string) => Promise<void>) => {
  const dir = await Deno.makeTempDir({ prefix: "safetensors_test_" });
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
};

Deno.test("round trip: write then read gives exact values, shapes, dtypes and metadata", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/ckpt.safetensors`;
    const w = tf.tensor2d([[1.5, -2.25, 3e-8], [Math.PI, -0, 65504.5]]);
    const idx = tf.tensor1d([0, -3, 2147483647], "int32");
    const host: HostTensor = { shape: [2, 2], data: new Float64Array([0.1, 0.2, 0.3, 1e300]) };
    const scalar: HostTensor = { shape: [], data: new Float32Array([7]) };
    const empty: HostTensor = { shape: [0, 3], data: new Float32Array(0) };
    await writeSafetensors(path, { "z.w": w, "a.idx": idx, "m.host": host, "s": scalar, "e": empty }, {
      step: "12",
      config: '{"dim":192}',
    });
    const header = await readHeader(path);
    assertEquals(Object.keys(header.tensors), ["a.idx", "e", "m.host", "s", "z.w"], "names are sorted");
    assertEquals(header.tensors["z.w"].dtype, "F32");
    assertEquals(header.tensors["a.idx"].dtype, "I32");
    assertEquals(header.tensors["m.host"].dtype, "F32", "Float64Array host data is written as F32");
    assertEquals(header.dataStart % 8, 0, "header padded to 8 bytes like the reference writer");

    const { metadata, tensors } = await readSafetensors(path);
    assertEquals(metadata, { step: "12", config: '{"dim":192}' });
    assertEquals(tensors["z.w"].shape, [2, 3]);
    assertEquals(tensors["z.w"].data, Float32Array.from(await w.data()));
    assertEquals(tensors["a.idx"].data, new Int32Array([0, -3, 2147483647]));
    assertEquals(tensors["m.host"].data, Float32Array.from([0.1, 0.2, 0.3, 1e300]));
    assertEquals(tensors["s"], { shape: [], data: new Float32Array([7]) });
    assertEquals(tensors["e"], { shape: [0, 3], data: new Float32Array(0) });

    // The in-memory codec agrees with the file codec byte for byte.
    const hosts = Object.fromEntries(Object.entries(tensors));
    const again = decodeSafetensors(encodeSafetensors(hosts, metadata));
    assertEquals(again.tensors, tensors);
    assertEquals(await Deno.readFile(path), encodeSafetensors(hosts, metadata));
    tf.dispose([w, idx]);
  });
});

Deno.test("fixtures: F64 tensors decode exactly (values from an independent Python reader)", async () => {
  const path = fixture("caev2-small-same-width.safetensors");
  const { metadata, tensors } = await readSafetensors(path);
  const nMask = JSON.parse(metadata.config).n_mask;
  assertEquals(nMask, 6);
  const mask = tensors["input.mask"];
  assertEquals(mask.shape, [2, 16]);
  assert(mask.data instanceof Float64Array);
  for (let r = 0; r < 2; r++) {
    assertEquals(sum(mask.data.subarray(16 * r, 16 * r + 16)), 6, `row ${r}`);
  }
  assertEquals(tensors["output.loss"].data[0], 1.0453962618697883);
  assertEquals(tensors["output.grad_norm"].data[0], 2.6483152489372173);
  const qb = tensors["student.encoder.blocks.0.attn.q_bias"];
  assertEquals(qb.shape, [32]);
  assertEquals([qb.data[0], qb.data[31]], [0.027881154477168088, 0.07682446313216314]);

  // `names` reads a subset.
  const inputs = await readSafetensors(path, { names: (n) => n.startsWith("input.") });
  assertEquals(Object.keys(inputs.tensors).sort(), [
    "input.mask",
    "input.student_images",
    "input.teacher_images",
  ]);
  assertEquals(inputs.tensors["input.mask"], mask);

  const projected = await readSafetensors(fixture("caev2-projected-width.safetensors"));
  const pm = projected.tensors["input.mask"];
  assertEquals(pm.shape, [3, 9]);
  for (let r = 0; r < 3; r++) assertEquals(sum(pm.data.subarray(9 * r, 9 * r + 9)), 3);

  const t = toTensor(mask);
  assertEquals([t.dtype, t.shape], ["float32", [2, 16]]);
  t.dispose();
});

Deno.test("every dtype decodes from hand-built bytes (F16/BF16 bit patterns, unaligned data)", async () => {
  const f16 = [0x3c00, 0xc000, 0x7c00, 0xfc00, 0x0001, 0x03ff, 0x7bff, 0x8000, 0x3555, 0x7e00];
  const bf16 = [0x3f80, 0xc000, 0x7f80, 0xff80, 0x0001, 0x4049, 0x8000, 0x7fc0];
  const i64 = new BigInt64Array([5n, -7n, 2147483647n, -2147483648n]);
  const parts: [string, string, number[], number[]][] = [
    ["u8", "U8", [3], [0, 200, 255]], // 3 bytes: everything after is unaligned
    ["f16", "F16", [f16.length], u16le(...f16)],
    ["bf16", "BF16", [bf16.length], u16le(...bf16)],
    ["f32", "F32", [2], bytesOf(new Float32Array([1.25, -3e38]))],
    ["f64", "F64", [1, 2], bytesOf(new Float64Array([0.1, -1e-310]))],
    ["i64", "I64", [4], bytesOf(i64)],
    ["i32", "I32", [2], bytesOf(new Int32Array([-1, 123456789]))],
    ["i16", "I16", [2], bytesOf(new Int16Array([-32768, 32767]))],
    ["i8", "I8", [2], [0x80, 0x7f]],
    ["bool", "BOOL", [3], [1, 0, 1]],
  ];
  const header: Record<string, unknown> = {};
  const data: number[] = [];
  for (const [name, dtype, shape, bytes] of parts) {
    header[name] = { dtype, shape, data_offsets: [data.length, data.length + bytes.length] };
    data.push(...bytes);
  }
  const file = rawFile(header, data);
  const check = (tensors: Record<string, HostTensor>) => {
    assertEquals(tensors.u8.data, new Int32Array([0, 200, 255]));
    const h = tensors.f16.data;
    assert(h instanceof Float32Array);
    assertEquals([...h.subarray(0, 9)], [
      1,
      -2,
      Infinity,
      -Infinity,
      2 ** -24,
      1023 * 2 ** -24,
      65504,
      -0,
      Math.fround(0.333251953125),
    ]);
    assert(Object.is(h[7], -0), "0x8000 is negative zero");
    assert(Number.isNaN(h[9]));
    const b = tensors.bf16.data;
    assertEquals([...b.subarray(0, 7)], [1, -2, Infinity, -Infinity, 2 ** -133, 3.140625, -0]);
    assert(Number.isNaN(b[7]));
    assertEquals(tensors.f32.data, new Float32Array([1.25, -3e38]));
    assertEquals(tensors.f64, { shape: [1, 2], data: new Float64Array([0.1, -1e-310]) });
    assertEquals(tensors.i64.data, new Int32Array([5, -7, 2147483647, -2147483648]));
    assertEquals(tensors.i32.data, new Int32Array([-1, 123456789]));
    assertEquals(tensors.i16.data, new Int32Array([-32768, 32767]));
    assertEquals(tensors.i8.data, new Int32Array([-128, 127]));
    assertEquals(tensors.bool.data, new Int32Array([1, 0, 1]));
  };
  check(decodeSafetensors(file, "mem").tensors);
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/all.safetensors`, file);
    check((await readSafetensors(`${dir}/all.safetensors`)).tensors);
  });
  assertEquals(halfToFloat(0x3c00), 1);
  assertEquals(halfToFloat(0x0400), 2 ** -14, "smallest normal");
});

/** Expects a SafetensorsError naming `file` and containing `problem`, from both the memory and file paths. */
const expectInvalid = async (bytes: Uint8Array, problem: string) => {
  const e = assertThrows(() => decodeSafetensors(bytes, "bad.safetensors"), SafetensorsError, problem);
  assertStringIncludes(e.message, "bad.safetensors: ");
  assertEquals((e as SafetensorsError).file, "bad.safetensors");
  await withTempDir(async (dir) => {
    const path = `${dir}/bad.safetensors`;
    await Deno.writeFile(path, bytes);
    const err = await assertRejects(() => readSafetensors(path), SafetensorsError, problem);
    assertStringIncludes(err.message, `${path}: `);
    assertStringIncludes((err as SafetensorsError).problem, problem);
  });
};

const f32 = (shape: number[], offsets: [number, number]) => ({ dtype: "F32", shape, data_offsets: offsets });

Deno.test("validation: every malformed header is reported with the file and the problem", async () => {
  await expectInvalid(new Uint8Array(5), "shorter than the 8-byte header length");
  await expectInvalid(rawFile("{}", [], 200_000_000n), "exceeds the 100000000-byte limit");
  await expectInvalid(rawFile("{}", [], 3n + 2n ** 40n), "exceeds the 100000000-byte limit");
  await expectInvalid(rawFile("{}", [], 50n), "reaches beyond the end of the file");
  await expectInvalid(rawFile("{not json"), "header is not JSON");
  await expectInvalid(rawFile("[1, 2]"), "header is not a JSON object");
  const badUtf8 = rawFile("{}  ");
  badUtf8.set([0xff, 0xfe], 10);
  await expectInvalid(badUtf8, "header is not valid UTF-8");
  await expectInvalid(
    rawFile({ w: { dtype: "F8", shape: [1], data_offsets: [0, 1] } }, [0]),
    'tensor "w": unknown dtype "F8"',
  );
  await expectInvalid(
    rawFile({ w: { dtype: "F32", shape: [2, -1], data_offsets: [0, 0] } }),
    'tensor "w": shape [2,-1]',
  );
  await expectInvalid(
    rawFile({ w: { dtype: "F32", shape: [1.5], data_offsets: [0, 0] } }),
    "non-negative integers",
  );
  await expectInvalid(
    rawFile({ w: { dtype: "F32", shape: "2", data_offsets: [0, 0] } }),
    "non-negative integers",
  );
  await expectInvalid(
    rawFile({ w: f32([1], [4, 0]) }, [0, 0, 0, 0]),
    'tensor "w": data_offsets [4,0] is not [begin, end]',
  );
  await expectInvalid(rawFile({ w: f32([1], [0, 4.5]) }, [0, 0, 0, 0]), "is not [begin, end]");
  await expectInvalid(
    rawFile({ w: f32([2], [0, 8]) }, [0, 0, 0, 0]),
    'tensor "w": data_offsets [0, 8] end beyond the data buffer (4 bytes)',
  );
  await expectInvalid(
    rawFile({ w: f32([3], [0, 8]) }, Array(8).fill(0)),
    'tensor "w": shape [3] of F32 needs 12 bytes but data_offsets [0, 8] span 8',
  );
  await expectInvalid(
    rawFile({ a: f32([2], [0, 8]), b: f32([1], [4, 8]) }, Array(8).fill(0)),
    'tensors "a" and "b" overlap',
  );
  await expectInvalid(
    rawFile({ a: f32([1], [0, 4]), b: f32([1], [8, 12]) }, Array(12).fill(0)),
    'bytes [4, 8) before tensor "b"',
  );
  await expectInvalid(
    rawFile({ a: f32([1], [4, 8]) }, Array(8).fill(0)),
    'gap in the data buffer: bytes [0, 4) before tensor "a"',
  );
  await expectInvalid(
    rawFile({ a: f32([1], [0, 4]) }, Array(6).fill(0)),
    "bytes [4, 6) after the last tensor",
  );
  await expectInvalid(rawFile({ __metadata__: { step: 3 } }), '"__metadata__.step" is 3, not a string');
  await expectInvalid(
    rawFile(
      { w: { dtype: "I64", shape: [1], data_offsets: [0, 8] } },
      bytesOf(new BigInt64Array([2n ** 31n])),
    ),
    'tensor "w": I64 element 0 = 2147483648 does not fit in int32',
  );
  await expectInvalid(
    rawFile(
      { w: { dtype: "I64", shape: [1], data_offsets: [0, 8] } },
      bytesOf(new BigInt64Array([-(2n ** 31n) - 1n])),
    ),
    "does not fit in int32",
  );

  // parseHeader alone, on the prefix of a file whose size it is told.
  const ok = rawFile({ a: f32([1], [0, 4]) }, [0, 0, 128, 63]);
  assertEquals(parseHeader(ok, "ok").tensors.a, { dtype: "F32", shape: [1], offsets: [0, 4] });
  assertThrows(
    () => parseHeader(ok.subarray(0, ok.length - 4), "cut.safetensors", ok.length - 1),
    SafetensorsError,
    'cut.safetensors: tensor "a": data_offsets [0, 4] end beyond',
  );
});

Deno.test("missing files: readSafetensors rejects and loadSafetensors returns Left, both naming the path", async () => {
  const path = "/nonexistent/dir/model.safetensors";
  await assertRejects(() => readSafetensors(path), SafetensorsError, `${path}: cannot read the file`);
  await assertRejects(() => readHeader(path), SafetensorsError, path);
  const r = await loadSafetensors(path)();
  assert(E.isLeft(r));
  assertStringIncludes(r.left.message, path);
  const good = await loadSafetensors(fixture("caev2-small-same-width.safetensors"), {
    names: (n) => n === "output.loss",
  })();
  assert(E.isRight(good));
  assertEquals(Object.keys(good.right.tensors), ["output.loss"]);
});

Deno.test("names filter skips unwanted tensors without decoding them", async () => {
  // "bad" holds an I64 that does not fit int32: reading it fails, skipping it succeeds.
  const bytes = rawFile({
    bad: { dtype: "I64", shape: [1], data_offsets: [0, 8] },
    good: f32([1], [8, 12]),
  }, [...bytesOf(new BigInt64Array([2n ** 40n])), ...bytesOf(new Float32Array([2.5]))]);
  await withTempDir(async (dir) => {
    const path = `${dir}/mixed.safetensors`;
    await Deno.writeFile(path, bytes);
    await assertRejects(() => readSafetensors(path), SafetensorsError, 'tensor "bad"');
    const { tensors } = await readSafetensors(path, { names: (n) => n !== "bad" });
    assertEquals(tensors, { good: { shape: [1], data: new Float32Array([2.5]) } });
  });
});

Deno.test("atomic write: a failing write leaves no temp file and keeps the existing file", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/ckpt.safetensors`;
    await writeSafetensors(path, { w: { shape: [1], data: new Float32Array([1]) } });
    const before = await Deno.readFile(path);

    // Fails mid-write: "b" is read after "a" has been written to the temp file.
    const disposed = tf.tensor1d([1, 2]);
    disposed.dispose();
    const a = tf.tensor1d([3, 4]);
    const e = await assertRejects(
      () => writeSafetensors(path, { a, b: disposed }),
      SafetensorsError,
      `${path}: writing failed`,
    );
    assertStringIncludes(e.message, "disposed");
    a.dispose();

    // Fails up front: values do not match the shape; metadata must be strings.
    await assertRejects(
      () => writeSafetensors(path, { x: { shape: [3], data: new Float32Array(2) } }),
      SafetensorsError,
      'tensor "x" has shape [3] (3 elements) but 2 values',
    );
    await assertRejects(
      () => writeSafetensors(path, {}, { step: 3 as unknown as string }),
      SafetensorsError,
      'metadata "step" is number',
    );

    assertEquals(await Deno.readFile(path), before, "existing file untouched");
    const names = [...Deno.readDirSync(dir)].map((d) => d.name);
    assertEquals(names, ["ckpt.safetensors"], "no temp files left behind");

    await assertRejects(
      () => writeSafetensors(`${dir}/missing/sub/x.safetensors`, {}),
      SafetensorsError,
      "missing/sub/x.safetensors: writing failed",
    );
  });
});
