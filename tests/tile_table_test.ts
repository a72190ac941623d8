/**
 * The tile table (lib/core/kernels/tile_table.ts) without a GPU: the file format's parser and its errors,
 * the nearest-entry lookup, planMatMul under an installed table, where a table is found, and the tuner's
 * candidate lists (lib/bench/tune.ts) with the subgroup variant's lanes. tests/webgpu/tune.ts runs the tuner and the install on the adapter.
 */
import { E } from "../lib/deps.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes, assertThrows } from "../lib/core/std.ts";
import {
  checkSubgroup,
  planMatMul,
  setGemmChooser,
  subgroupLanes,
  type Tile,
} from "../lib/core/kernels/matmul.ts";
import {
  adapterFileName,
  findTileTable,
  nearestEntry,
  parseTileTable,
  readTileTable,
  tileCachePath,
  type TileEntry,
  tileMisfit,
  tileStorageBytes,
  type TileTable,
  tileTableChooser,
} from "../lib/core/kernels/tile_table.ts";
import {
  candidateChoices,
  candidateTiles,
  checkWritable,
  formatTileTable,
  FULL_SPACE,
  QUICK_SPACE,
  stage3Choices,
  tileTableOf,
} from "../lib/bench/tune.ts";
import { withTmp } from "./helpers.ts";

const T32: Tile = { bm: 32, bn: 32, bk: 16, tm: 4, tn: 4 };
const T128x64: Tile = { bm: 128, bn: 64, bk: 32, tm: 8, tn: 4 };

const entry = (
  m: number,
  n: number,
  k: number,
  batch: number,
  tile: Tile,
  splits = 1,
  trans: [boolean, boolean] = [false, false],
): TileEntry => ({
  shape: { m, n, k, batch, transA: trans[0], transB: trans[1], precision: "f32" },
  choice: { tile, splits },
  ms: 1.5,
  tflops: 2 * m * n * k * batch / 1.5e-3 / 1e12,
  defaultMs: 2,
  calls: 3,
});

const table: TileTable = tileTableOf("Test Adapter (v1, 2 units)", "test", {
  timer: "kernel",
  entries: [
    entry(3168, 2304, 768, 1, T128x64),
    entry(99, 99, 64, 384, T32, 1, [false, true]),
    entry(768, 2304, 3168, 1, T32, 4, [true, false]),
    {
      ...entry(64, 64, 64, 1, T32, 1, [true, true]),
      choice: { tile: T32, splits: 1, buffers: 2, unroll: true, subgroup: 8 },
    },
  ],
});
const tableJson = (): Record<string, unknown> => JSON.parse(formatTileTable(table));

const limits = {
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupSizeY: 256,
};

Deno.test("tile table: the written text parses back to the same table", () => {
  const r = parseTileTable(tableJson(), "t.json");
  assert(E.isRight(r), E.isLeft(r) ? r.left : "");
  assertEquals(r.right, table);
  // "{", 8 header fields, "entries": [, one line per entry, "]", "}", and the final newline.
  assertEquals(formatTileTable(table).split("\n").length, 1 + 8 + 1 + 4 + 1 + 1 + 1);
});

Deno.test("tile table: a malformed table is refused with the file, the path and what to do", () => {
  const bad = (edit: (j: Record<string, unknown>) => void): string => {
    const j = tableJson();
    edit(j);
    const r = parseTileTable(j, "tiles.json");
    assert(E.isLeft(r), "accepted a malformed table");
    assertStringIncludes(r.left, "bench --tune --force");
    return r.left;
  };
  const entries = (j: Record<string, unknown>) =>
    j.entries as Record<string, Record<string, unknown> | number>[];
  assertStringIncludes(
    bad((j) => delete j.adapter),
    "tiles.json: at adapter: expected string, got nothing (the key is missing)",
  );
  assertStringIncludes(bad((j) => (j.version = 2)), "at version: expected 1, got 2");
  assertStringIncludes(
    bad((j) => ((entries(j)[1].shape as Record<string, unknown>).m = "99")),
    "at entries[1].shape.m: expected number",
  );
  assertStringIncludes(
    bad((j) => ((entries(j)[0].shape as Record<string, unknown>).k = 0)),
    "at entries[0].shape.k: expected a positive integer, got 0",
  );
  assertStringIncludes(
    bad((j) => (((entries(j)[2].choice as Record<string, unknown>).tile as Record<string, number>).tm = 3)),
    "at entries[2].choice.tile: matmul tile",
  );
  assertStringIncludes(bad((j) => (entries(j)[0].tiel = 1)), 'at entries[0]: unknown key "tiel"');
  assertStringIncludes(
    bad((j) => ((entries(j)[1].choice as Record<string, unknown>).buffers = 3)),
    "at entries[1].choice.buffers",
  );
  // T32 is 8 threads wide: 16 lanes would span two rows of the grid.
  assertStringIncludes(
    bad((j) => ((entries(j)[3].choice as Record<string, unknown>).subgroup = 16)),
    "at entries[3].choice.subgroup: matmul subgroup 16",
  );
  assertStringIncludes(bad((j) => (entries(j)[0].ms = -1)), "at entries[0].ms: expected a number >= 0");
});

Deno.test("tile table: reading a file names it when it is missing, not JSON, or not a table", async () => {
  await withTmp("caev2-tiles-", async (dir) => {
    await assertRejects(
      () => readTileTable(`${dir}/nope.json`),
      Error,
      `tile table ${dir}/nope.json: cannot read`,
    );
    await Deno.writeTextFile(`${dir}/a.json`, "{ not json");
    await assertRejects(
      () => readTileTable(`${dir}/a.json`),
      Error,
      `tile table ${dir}/a.json: not valid JSON`,
    );
    await Deno.writeTextFile(`${dir}/b.json`, JSON.stringify({ ...tableJson(), entries: [{}] }));
    await assertRejects(() => readTileTable(`${dir}/b.json`), Error, `${dir}/b.json: at entries[0].shape`);
    await Deno.writeTextFile(`${dir}/c.json`, formatTileTable(table));
    assertEquals(await readTileTable(`${dir}/c.json`), table);
  });
});

Deno.test("tile table: lookup takes the nearest entry of the same transposes and precision", () => {
  const s = (
    m: number,
    n: number,
    k: number,
    batch = 1,
    ta = false,
    tb = false,
    precision = "f32" as const,
  ) => ({
    m,
    n,
    k,
    batch,
    transA: ta,
    transB: tb,
    precision,
  });
  const e = table.entries;
  assertEquals(nearestEntry(e, s(3168, 2304, 768)), e[0], "exact");
  assertEquals(nearestEntry(e, s(4000, 2304, 768)), e[0], "near");
  assertEquals(nearestEntry(e, s(167, 167, 64, 384, false, true)), e[1], "attention, farther but within");
  assertEquals(nearestEntry(e, s(167, 167, 16, 384, false, true)), undefined, "head size 16: too far");
  assertEquals(nearestEntry(e, s(3168, 2304, 768, 1, false, true)), undefined, "other transposes");
  assertEquals(
    nearestEntry(e, s(3168, 2304, 768, 1, false, false, "f16" as never)),
    undefined,
    "other precision",
  );
  assertEquals(nearestEntry(e, s(3168 * 8, 2304, 768)), undefined, "a factor 8 in m: too far");
  assertEquals(nearestEntry(e, s(3168 * 8, 2304, 768), 4), e[0], "unless allowed");
  // Two candidates: the nearer wins.
  const two = [entry(100, 100, 100, 1, T32), entry(400, 400, 400, 1, T128x64)];
  assertEquals(nearestEntry(two, s(180, 180, 180)), two[0]);
  assertEquals(nearestEntry(two, s(220, 220, 220)), two[1]);
});

Deno.test("planMatMul follows an installed table and the default rule without one", () => {
  try {
    setGemmChooser(tileTableChooser(table));
    const linear = planMatMul([3168, 768], [768, 2304], false, false)!;
    assertEquals(linear.tile, T128x64);
    assertEquals(linear.splits, 1);
    const dw = planMatMul([3168, 768], [3168, 2304], true, false)!;
    assertEquals([dw.tile, dw.splits], [T32, 4]);
    const far = planMatMul([50432, 768], [768, 2304], false, false)!;
    assertEquals(far.tile.bm, 128, "too far from every entry: the default rule");
    assertEquals(far.tile.bn, 128);
    setGemmChooser(undefined);
    assertEquals(planMatMul([3168, 768], [768, 2304], false, false)!.tile.bn, 128, "default rule again");
  } finally {
    setGemmChooser(undefined);
  }
});

Deno.test("tile table: found from CAEV2_TILE_TABLE, the user cache, the shipped tables, or not at all", async () => {
  await withTmp("caev2-tiles-", async (dir) => {
    const adapter = table.adapter;
    const envOf = (vars: Record<string, string>) => (k: string) => vars[k];
    assertEquals(adapterFileName(adapter), "test-adapter-v1-2-units");
    assertEquals(adapterFileName("llvmpipe (LLVM 15.0.6, 256 bits)"), "llvmpipe-llvm-15.0.6-256-bits");
    assertEquals(adapterFileName("///"), "unknown-adapter");
    const cache = tileCachePath(adapter, envOf({ XDG_CACHE_HOME: `${dir}/cache`, HOME: "/home/x" }));
    assertEquals(cache, `${dir}/cache/caev2/tiles/test-adapter-v1-2-units.json`);
    assertEquals(
      tileCachePath(adapter, envOf({ HOME: "/home/x" })),
      "/home/x/.cache/caev2/tiles/test-adapter-v1-2-units.json",
    );
    assertEquals(tileCachePath(adapter, envOf({})), undefined);

    const none = envOf({ XDG_CACHE_HOME: `${dir}/cache` });
    assertEquals(await findTileTable(adapter, none, []), undefined, "nothing anywhere");
    const shipped = await findTileTable(adapter, none, [{ ...tableJson(), adapter: "other" }, tableJson()]);
    assertEquals(shipped?.table, table);
    assertStringIncludes(shipped!.source, "shipped");

    await Deno.mkdir(`${dir}/cache/caev2/tiles`, { recursive: true });
    await Deno.writeTextFile(cache!, formatTileTable(table));
    const cached = await findTileTable(adapter, none, []);
    assertEquals(cached?.source, cache);

    await Deno.writeTextFile(`${dir}/mine.json`, formatTileTable({ ...table, tuned: "mine" }));
    const named = await findTileTable(adapter, envOf({ CAEV2_TILE_TABLE: `${dir}/mine.json` }), []);
    assertEquals([named?.table.tuned, named?.source], ["mine", `CAEV2_TILE_TABLE=${dir}/mine.json`]);
    assertEquals(await findTileTable(adapter, envOf({ CAEV2_TILE_TABLE: "none" }), []), null);
    await assertRejects(
      () => findTileTable(adapter, envOf({ CAEV2_TILE_TABLE: `${dir}/missing.json` }), []),
      Error,
      `tile table ${dir}/missing.json: cannot read it`,
    );
    await Deno.writeTextFile(cache!, "[]");
    await assertRejects(() => findTileTable(adapter, none, []), Error, `${cache}: at the top level`);
  });
});

Deno.test("tile limits: threads, workgroup size and workgroup memory", () => {
  assertEquals(tileMisfit(T32, limits, "f32"), undefined);
  assertStringIncludes(tileMisfit({ bm: 128, bn: 128, bk: 32, tm: 8, tn: 8 }, limits, "f32")!, "32768 bytes");
  assertEquals(tileStorageBytes({ bm: 128, bn: 128, bk: 32, tm: 8, tn: 8 }, "f32"), 32768);
  assertEquals(
    tileStorageBytes({ bm: 128, bn: 128, bk: 32, tm: 8, tn: 8 }, "f32", 2),
    65536,
    "double-buffered",
  );
  assertStringIncludes(
    tileMisfit(T32, { ...limits, maxComputeWorkgroupStorageSize: 6000 }, "f32", 2)!,
    "8192 bytes",
  );
  assertEquals(
    tileStorageBytes({ bm: 128, bn: 128, bk: 32, tm: 8, tn: 8 }, "f16"),
    16388,
    "half, and a flag",
  );
  assertStringIncludes(
    tileMisfit(T32, { ...limits, maxComputeInvocationsPerWorkgroup: 32 }, "f32")!,
    "64 threads",
  );
});

Deno.test("tune candidates: supported tiles that fit, K splits only for few tiles and a long K", () => {
  const shape = (m: number, n: number, k: number, batch = 1) => ({
    m,
    n,
    k,
    batch,
    transA: false,
    transB: false,
    precision: "f32" as const,
  });
  const { tiles, rejected } = candidateTiles(shape(768, 2304, 25344), FULL_SPACE, limits);
  assertEquals(tiles.length + rejected.length, FULL_SPACE.tiles.length);
  assert(rejected.every((r) => r.includes("maxComputeWorkgroupStorageSize")), rejected.join("\n"));
  assertEquals(tiles.length, 12, "the three 32-deep tiles of 192 rows and more exceed 16 KiB");
  const bad = candidateTiles(shape(64, 64, 64), { ...QUICK_SPACE, tiles: [{ ...T32, bk: 4 }] }, limits);
  assertStringIncludes(bad.rejected[0], "unsupported");
  const dw = candidateChoices(shape(768, 2304, 25344), T128x64, FULL_SPACE);
  assertEquals(dw.map((c) => c.splits), [1, 2, 4, 8, 16]);
  assertEquals(candidateChoices(shape(768, 2304, 512), T128x64, FULL_SPACE).map((c) => c.splits), [1, 2, 4]);
  assertEquals(candidateChoices(shape(25344, 2304, 768), T128x64, FULL_SPACE).map((c) => c.splits), [1]);
  const f16 = candidateChoices({ ...shape(99, 99, 64, 384), precision: "f16" }, T32, QUICK_SPACE);
  assertEquals(f16.map((c) => c.accumulate), ["f32", "f16"]);
  // Stage 3: the leader double-buffered, unrolled, and both; double buffering only where the device has the
  // workgroup memory (12 KiB a buffer of 128 x 64 x 16, 16 KiB the limit) and the space asks for it.
  const leader = { tile: T32, splits: 4 };
  assertEquals(stage3Choices(shape(64, 64, 4096), leader, FULL_SPACE, limits), [
    { ...leader, buffers: 2 },
    { ...leader, unroll: true },
    { ...leader, buffers: 2, unroll: true },
  ]);
  const big = { tile: { ...T128x64, bk: 16 } };
  assertEquals(stage3Choices(shape(64, 64, 4096), big, FULL_SPACE, limits), [{ ...big, unroll: true }]);
  assertEquals(
    stage3Choices(shape(64, 64, 4096), leader, { ...FULL_SPACE, buffers: [1], unroll: false }),
    [],
  );
  // Where the device has subgroups: the leader and each of those again with A shared by shuffles, at the
  // lanes the tile and the device's smallest subgroup allow (T32: 8 threads a row; the device: 32 or 4).
  const three = stage3Choices(shape(64, 64, 4096), leader, FULL_SPACE, limits);
  assertEquals(stage3Choices(shape(64, 64, 4096), leader, FULL_SPACE, limits, 32), [
    ...three,
    ...[leader, ...three].map((c) => ({ ...c, subgroup: 8 })),
  ]);
  assertEquals(
    stage3Choices(shape(64, 64, 4096), leader, FULL_SPACE, limits, 4).slice(3).map((c) => c.subgroup),
    [4, 4, 4, 4],
  );
  assertEquals(
    stage3Choices(shape(64, 64, 4096), leader, { ...FULL_SPACE, subgroup: false }, limits, 32),
    three,
  );
  assertEquals(
    stage3Choices(shape(64, 64, 4096), { ...leader, subgroup: 8 }, FULL_SPACE, limits, 32).length,
    3,
  );
});

Deno.test("subgroup lanes: a power of two dividing the grid's width and BK, at most the smallest subgroup", () => {
  const T128: Tile = { bm: 128, bn: 128, bk: 16, tm: 8, tn: 8 };
  assertEquals(subgroupLanes(T128, 32), 16);
  assertEquals(subgroupLanes(T128, 8), 8);
  assertEquals(subgroupLanes(T128, 12), 8);
  assertEquals(subgroupLanes({ ...T128, bk: 8 }, 64), 8);
  assertEquals(subgroupLanes({ bm: 64, bn: 32, bk: 16, tm: 4, tn: 8 }, 32), 4);
  assertEquals(subgroupLanes(T128, 1), 0);
  assertEquals(subgroupLanes(T128, undefined), 0);
  checkSubgroup(T128, 16);
  assertThrows(() => checkSubgroup(T128, 32), Error, "grid's width 16");
  assertThrows(() => checkSubgroup(T128, 6), Error, "power of two");
});

Deno.test("tune: an existing table is not overwritten without --force", async () => {
  await withTmp("caev2-tiles-", async (dir) => {
    await checkWritable(`${dir}/t.json`, false);
    await Deno.writeTextFile(`${dir}/t.json`, "{}");
    await assertRejects(() => checkWritable(`${dir}/t.json`, false), Error, "pass --force");
    await checkWritable(`${dir}/t.json`, true);
  });
});
