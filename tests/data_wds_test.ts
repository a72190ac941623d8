/**
 * WebDataset shards: tar streams built here in code (ustar headers, a pax long name), grouped into
 * samples by key, labels from `.cls`; corrupt images, samples without an image and a truncated shard are
 * skipped, counted and named; member names are only ever strings.
 */
import { evalLoader, type Loader, pretrainLoader } from "../data/loader.ts";
import { readTar } from "../data/tar.ts";
import { expandBraces, resolveShards } from "../data/wds.ts";
import { key } from "../lib/core/random.ts";
import { encodeJpeg, encodePng } from "../lib/deps.ts";
import { assert, assertEquals, assertNotEquals, assertStringIncludes } from "../lib/core/std.ts";

const enc = new TextEncoder();

/** One 512-byte ustar header. */
const header = (name: string, size: number, type = "0"): Uint8Array => {
  const h = new Uint8Array(512);
  const put = (s: string, at: number) => h.set(enc.encode(s), at);
  put(name, 0);
  put("0000644\0", 100);
  put("0000000\0", 108);
  put("0000000\0", 116);
  put(size.toString(8).padStart(11, "0") + "\0", 124);
  put("00000000000\0", 136);
  put("        ", 148);
  put(type, 156);
  put("ustar\0", 257);
  put("00", 263);
  const sum = h.reduce((a, b) => a + b, 0);
  put(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  return h;
};

const pad = (n: number) => new Uint8Array((512 - (n % 512)) % 512);

/** A tar archive of `members`; names over 100 bytes get a pax `path` record. */
const tar = (members: [string, Uint8Array][]): Uint8Array => {
  const parts: Uint8Array[] = [];
  for (const [name, data] of members) {
    if (enc.encode(name).length > 100) {
      const body = ` path=${name}\n`;
      let len = body.length + 2;
      while (String(len).length + body.length !== len) len++;
      const rec = enc.encode(`${len}${body}`);
      parts.push(header("PaxHeader", rec.length, "x"), rec, pad(rec.length));
    }
    parts.push(header(name.slice(0, 100), data.length), data, pad(data.length));
  }
  parts.push(new Uint8Array(1024));
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};

const image = (v: number) => {
  const d = new Uint8ClampedArray(20 * 12 * 4);
  for (let i = 0; i < 20 * 12; i++) d.set([v, 255 - v, (i * 5) % 256, 255], i * 4);
  return new ImageData(d, 20, 12);
};

const streamOf = (b: Uint8Array) => new Blob([b.slice()]).stream();

const take = async <T>(l: Loader<T>, n: number): Promise<T[]> => {
  const out: T[] = [];
  for await (const b of l) {
    out.push(b);
    if (out.length === n) break;
  }
  await l.close();
  return out;
};

const quietly = async <T>(f: () => Promise<T>): Promise<[T, string[]]> => {
  const warn = console.warn;
  const seen: string[] = [];
  console.warn = (...a: unknown[]) => seen.push(a.join(" "));
  try {
    return [await f(), seen];
  } finally {
    console.warn = warn;
  }
};

/** Two shards: 9 good samples; a corrupt JPEG, a sample with no image; shard 1 cut short at the end. */
const writeShards = async (dir: string) => {
  const jpg = async (v: number) => new Uint8Array(await encodeJpeg(image(v)));
  const png = async (v: number) => new Uint8Array(await encodePng(image(v)));
  const cls = (c: number) => enc.encode(`${c}\n`);
  const long = "x".repeat(120);
  const shard0 = tar([
    ["s0/000.jpg", await jpg(10)],
    ["s0/000.cls", cls(0)],
    ["s0/001.cls", cls(1)],
    ["s0/001.png", await png(20)],
    ["s0/002.jpg", Uint8Array.from({ length: 200 }, (_, i) => (i * 13) % 256)],
    ["s0/002.cls", cls(2)],
    ["s0/003.json", enc.encode("{}")],
    ["../../evil/004.jpg", await jpg(40)],
    ["../../evil/004.cls", cls(4)],
    [`${long}/005.jpg`, await jpg(50)],
    [`${long}/005.cls`, cls(5)],
    ["s0/006.jpg", await jpg(60)],
  ]);
  const shard1 = tar([
    ["s1/100.jpg", await jpg(70)],
    ["s1/100.cls", cls(7)],
    ["s1/101.png", await png(80)],
    ["s1/101.cls", cls(8)],
    ["s1/102.jpg", await jpg(90)],
    ["s1/102.cls", cls(9)],
    ["s1/103.jpg", await jpg(100)],
    ["s1/103.cls", cls(3)],
  ]);
  await Deno.writeFile(`${dir}/shard-000.tar`, shard0);
  // A last member 104.jpg cut short: that sample is lost, the shard's problem reported.
  const last = await jpg(110);
  const cut = [
    shard1.subarray(0, shard1.length - 1024),
    header("s1/104.jpg", last.length),
    last.subarray(0, 100),
  ];
  await Deno.writeFile(`${dir}/shard-001.tar`, new Uint8Array(cut.flatMap((p) => Array.from(p))));
};

Deno.test("brace patterns and shard lists expand as braceexpand does", async () => {
  assertEquals(expandBraces("a-{000..003}.tar"), ["a-000.tar", "a-001.tar", "a-002.tar", "a-003.tar"]);
  assertEquals(expandBraces("{x,y}/{8..10}"), ["x/8", "x/9", "x/10", "y/8", "y/9", "y/10"]);
  assertEquals(await resolveShards("a.tar::b-{0..1}.tar"), ["a.tar", "b-0.tar", "b-1.tar"]);
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/list.txt`, "# shards\none.tar\n/abs/two.tar\n\n");
    assertEquals(await resolveShards(`${dir}/list.txt`), [`${dir}/one.tar`, "/abs/two.tar"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readTar streams members, long pax names, and reports a cut-short archive", async () => {
  const long = "d/".repeat(70) + "f.txt";
  const t = tar([["a.txt", enc.encode("hello")], [long, enc.encode("x".repeat(700))]]);
  const got = [];
  for await (const e of readTar(streamOf(t), "t.tar")) got.push(e);
  assertEquals(got.map((e) => (e.kind === "file" ? [e.name, e.data.length] : e.message)), [["a.txt", 5], [
    long,
    700,
  ]]);
  const cut = [];
  for await (const e of readTar(streamOf(t.slice(0, 512 + 512 + 512 + 300)), "t.tar")) cut.push(e);
  assertEquals(cut[0].kind, "file");
  assert(cut[cut.length - 1].kind === "problem");
  const bad = t.slice();
  bad[130] ^= 1; // the size field: the checksum no longer matches
  const r = [];
  for await (const e of readTar(streamOf(bad), "bad.tar")) r.push(e);
  assertEquals(r.map((e) => e.kind), ["problem"]);
});

Deno.test("wds loader: samples by key, labels from .cls, bad samples and a cut shard skipped and named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeShards(dir);
    const pattern = `${dir}/shard-{000..001}.tar`;
    const evalCfg = { source: { kind: "wds" as const, pattern }, batchSize: 100, imageSize: 16, workers: 0 };
    const trainLoader = evalLoader(evalCfg, "train"), valLoader = evalLoader(evalCfg, "val");
    const [[train, val], warnings] = await quietly(
      async () => [await take(trainLoader, 10), await take(valLoader, 10)],
    );
    // Each split's loader reads every shard: both meet the cut shard; the two bad samples fall in one or
    // the other.
    assertEquals(trainLoader.stats.skipped + valLoader.stats.skipped, 4);
    assertEquals(trainLoader.stats.decoded + valLoader.stats.decoded, 9);
    assertEquals(
      [...new Set([...trainLoader.stats.skippedFiles, ...valLoader.stats.skippedFiles])].sort(),
      [`${dir}/shard-000.tar:s0/002.jpg`, `${dir}/shard-000.tar:s0/003`, `${dir}/shard-001.tar`],
    );
    const labels = [...train, ...val].flatMap((b) => Array.from(b.labels)).sort();
    assertEquals(labels, [-1, 0, 1, 3, 4, 5, 7, 8, 9]);
    const text = warnings.join("\n");
    assertStringIncludes(text, `shard-000.tar:s0/002.jpg: not a JPEG or PNG`);
    assertStringIncludes(text, `shard-000.tar:s0/003: no image member (found .json`);
    assertStringIncludes(text, `shard-001.tar: truncated tar (member "s1/104.jpg" cut short)`);
    // Member names were never paths: nothing appeared outside the temporary folder.
    assert(!(await Deno.stat(`${dir}/../../evil`).catch(() => undefined)));

    const cfg = {
      source: { kind: "wds" as const, pattern },
      batchSize: 2,
      imageSize: 16,
      patchSize: 4,
      numMasked: 5,
      masking: "random" as const,
      workers: 0,
      shuffleBuffer: 3,
    };
    const [all] = await quietly(() => take(pretrainLoader(cfg, key(1)), 6));
    const [again] = await quietly(() => take(pretrainLoader(cfg, key(1)), 6));
    assertEquals(again, all);
    const [other] = await quietly(() => take(pretrainLoader(cfg, key(2)), 6));
    assertNotEquals(other.map((b) => Array.from(b.labels)), all.map((b) => Array.from(b.labels)));
    // Resume mid-epoch and across the epoch boundary: the shuffle buffer is replayed, not restarted.
    for (const at of [0, 2, 3]) {
      const [resumed] = await quietly(() => take(pretrainLoader(cfg, key(1), all[at].position), 6 - at - 1));
      assertEquals(resumed, all.slice(at + 1), `resume after batch ${at}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
