/**
 * Measured matmul tiles: a table from product shapes to the tile, K split and f16 accumulation that ran
 * fastest on one adapter (`deno task bench --tune` measures it, lib/bench/tune.ts), installed as the
 * chooser of lib/core/kernels/matmul.ts.
 *
 * Why a table and not a rule: the best tile depends on the adapter (SM count, registers, workgroup
 * memory) and on the product's shape in ways a two-case rule cannot follow (attention's many thin
 * products, the weight gradients' long K); measuring each shape of a training step once per adapter is
 * cheap (minutes) next to a pretraining run.
 *
 * The file (JSON, {@link TileTable}): the adapter's description, the date, the Deno and tfjs versions,
 * what was tuned, and one entry per measured product shape `[batch, M, K] x [batch, K, N]` (with its
 * transposes and operand precision) giving the choice, its measured ms and TFLOP/s and the default
 * rule's ms. A product is matched to the entry of the same transposes and precision nearest in log2
 * space over (m, n, k, batch) ({@link nearestEntry}); past {@link MAX_DISTANCE} the default rule runs.
 *
 * Where the table comes from ({@link findTileTable}), first found wins:
 * 1. `CAEV2_TILE_TABLE=FILE` (an error if it cannot be read; `CAEV2_TILE_TABLE=none`: no table);
 * 2. the user cache, `$XDG_CACHE_HOME/caev2/tiles/<adapter>.json` (default `~/.cache`), where
 *    `deno task bench --tune` writes;
 * 3. a table shipped with the toolkit (lib/core/kernels/tile_tables.ts: a module, so that importing
 *    mod.ts by URL needs no file read), matched by adapter description;
 * 4. none: the default rule of matmul.ts `planMatMul`.
 *
 * A table that does not parse is an error naming the file, at start-up ({@link installTileTable} runs in
 * lib/core/runtime.ts before any work), never in the middle of training: the chooser itself only looks
 * up validated entries.
 *
 * @module
 */
import { E, t } from "../../deps.ts";
import type { BackendInfo } from "../backend.ts";
import { message } from "../fs.ts";
import { webgpuDevice } from "../webgpu_errors.ts";
import {
  checkSubgroup,
  checkTile,
  type GemmChoice,
  type GemmChooser,
  type GemmShape,
  type MatMulPrecision,
  setGemmChooser,
  type Tile,
} from "./matmul.ts";
import { shippedTileTables } from "./tile_tables.ts";

/** The `format` field of every table file. */
export const TILE_TABLE_FORMAT = "caev2-tile-table";
/** The `version` this code reads and writes. */
export const TILE_TABLE_VERSION = 1;

/** One measured product shape. */
export interface TileEntry {
  /** The product measured. */
  readonly shape: GemmShape;
  /** What ran fastest (among the candidates that matched the default plan's output). */
  readonly choice: {
    /** The workgroup tile. */
    readonly tile: Tile;
    /** K split across workgroups (1: none). */
    readonly splits: number;
    /** f16 operands only: the accumulation. */
    readonly accumulate?: "f32" | "f16";
    /** Workgroup buffers per operand (2: double buffering); unset: 1. */
    readonly buffers?: 1 | 2;
    /** The slice loop written out in the shader; unset: a loop. */
    readonly unroll?: boolean;
    /** Lanes sharing A's slices by subgroup shuffles (matmul.ts `GemmChoice.subgroup`); unset: none. */
    readonly subgroup?: number;
  };
  /** Median ms per product of the choice, by the table's `timer`. */
  readonly ms: number;
  /** `2 m n k batch / ms`, in TFLOP/s. */
  readonly tflops: number;
  /** Median ms of the default rule's plan on the same inputs, by the same timer. */
  readonly defaultMs: number;
  /** How many times one training step runs this product (when the shapes came from a step). */
  readonly calls?: number;
}

/** A tile table as written to and read from a file. */
export interface TileTable {
  /** Always {@link TILE_TABLE_FORMAT}. */
  readonly format: typeof TILE_TABLE_FORMAT;
  /** Always {@link TILE_TABLE_VERSION}. */
  readonly version: typeof TILE_TABLE_VERSION;
  /** The adapter's description (lib/core/backend.ts `BackendInfo.adapter`) the table was measured on. */
  readonly adapter: string;
  /** ISO date of the measurement. */
  readonly date: string;
  /** Deno's version at the measurement. */
  readonly deno: string;
  /** tfjs-core's version at the measurement. */
  readonly tfjs: string;
  /** What was tuned, in words (e.g. "base, batch 256, teacher clip-b16, f32"). */
  readonly tuned: string;
  /** What the ms are: GPU kernel time (WebGPU timestamp queries) or wall time (readback floor subtracted). */
  readonly timer: "kernel" | "wall";
  /** One entry per measured product. */
  readonly entries: readonly TileEntry[];
}

// ---------------------------------------------------------------------------------------------------
// Parsing

/** An object codec that refuses keys it does not name (docs/design.md, principle 6). */
const closed = <P extends t.Props, O extends t.Props>(name: string, props: P, optional: O) => {
  const required = t.type(props), partial = t.partial(optional);
  const allowed = [...Object.keys(props), ...Object.keys(optional)];
  type A = t.TypeOf<typeof required> & t.TypeOf<typeof partial>;
  return new t.Type<A, unknown, unknown>(
    name,
    (u): u is A => required.is(u) && partial.is(u),
    (u, c) => {
      if (typeof u === "object" && u !== null && !Array.isArray(u)) {
        const extra = Object.keys(u).find((k) => !allowed.includes(k));
        if (extra !== undefined) {
          return t.failure(u, c, `unknown key "${extra}" (allowed: ${allowed.join(", ")})`);
        }
      }
      // Both halves against the same context, so that error paths name the keys only.
      const r = required.validate(u, c), o = partial.validate(u, c);
      const errors = [...(E.isLeft(r) ? r.left : []), ...(E.isLeft(o) ? o.left : [])];
      return errors.length > 0 || E.isLeft(r) || E.isLeft(o)
        ? t.failures(errors)
        : t.success({ ...r.right, ...o.right } as A);
    },
    t.identity,
  );
};

const Precision = t.keyof({ f32: null, f16: null }, '"f32" or "f16"');
const TileC = closed("a tile { bm, bn, bk, tm, tn }", {
  bm: t.number,
  bn: t.number,
  bk: t.number,
  tm: t.number,
  tn: t.number,
}, {});
const ShapeC = closed("a shape { m, n, k, batch, transA, transB, precision }", {
  m: t.number,
  n: t.number,
  k: t.number,
  batch: t.number,
  transA: t.boolean,
  transB: t.boolean,
  precision: Precision,
}, {});
const EntryC = closed("an entry { shape, choice, ms, tflops, defaultMs, calls? }", {
  shape: ShapeC,
  choice: closed("a choice { tile, splits, accumulate?, buffers?, unroll?, subgroup? }", {
    tile: TileC,
    splits: t.number,
  }, {
    accumulate: Precision,
    buffers: t.union([t.literal(1), t.literal(2)]),
    unroll: t.boolean,
    subgroup: t.number,
  }),
  ms: t.number,
  tflops: t.number,
  defaultMs: t.number,
}, { calls: t.number });
const TableC = closed("a tile table", {
  format: t.literal(TILE_TABLE_FORMAT),
  version: t.literal(TILE_TABLE_VERSION),
  adapter: t.string,
  date: t.string,
  deno: t.string,
  tfjs: t.string,
  tuned: t.string,
  timer: t.keyof({ kernel: null, wall: null }, '"kernel" or "wall"'),
  entries: t.array(EntryC),
}, {});

/** `entries[3].choice.tile.bm` from an io-ts context. */
const pathOf = (c: t.Context): string =>
  c.slice(1).reduce(
    (s, e) => /^\d+$/.test(e.key) ? `${s}[${e.key}]` : s === "" ? e.key : `${s}.${e.key}`,
    "",
  );

const show = (v: unknown): string => {
  const s = v === undefined ? "nothing (the key is missing)" : JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
};

const report = (errors: t.Errors): string[] => [
  ...new Set(errors.map((e) => {
    const at = pathOf(e.context) || "the top level";
    if (e.message !== undefined) return `at ${at}: ${e.message}`;
    return `at ${at}: expected ${e.context[e.context.length - 1].type.name}, got ${show(e.value)}`;
  })),
];

/** What the structure alone does not say: positive integer sizes, supported tiles, finite timings. */
const semanticErrors = (table: TileTable): string[] => {
  const errs: string[] = [];
  const posInt = (v: number) => Number.isInteger(v) && v > 0;
  table.entries.forEach((e, i) => {
    const at = `at entries[${i}]`;
    for (const d of ["m", "n", "k", "batch"] as const) {
      if (!posInt(e.shape[d])) errs.push(`${at}.shape.${d}: expected a positive integer, got ${e.shape[d]}`);
    }
    try {
      checkTile(e.choice.tile);
    } catch (err) {
      errs.push(`${at}.choice.tile: ${message(err)}`);
    }
    if (e.choice.subgroup !== undefined && e.choice.subgroup !== 0) {
      try {
        checkSubgroup(e.choice.tile, e.choice.subgroup);
      } catch (err) {
        errs.push(`${at}.choice.subgroup: ${message(err)}`);
      }
    }
    if (!posInt(e.choice.splits)) {
      errs.push(`${at}.choice.splits: expected a positive integer, got ${e.choice.splits}`);
    }
    if (e.choice.accumulate === "f16" && e.shape.precision !== "f16") {
      errs.push(`${at}.choice.accumulate: "f16" accumulation needs precision "f16"`);
    }
    for (const f of ["ms", "tflops", "defaultMs"] as const) {
      if (!(Number.isFinite(e[f]) && e[f] >= 0)) errs.push(`${at}.${f}: expected a number >= 0, got ${e[f]}`);
    }
    if (e.calls !== undefined && !posInt(e.calls)) {
      errs.push(`${at}.calls: expected a positive integer, got ${e.calls}`);
    }
  });
  return errs;
};

/**
 * Validates a parsed table file. Left: one line per problem, each prefixed with `where` (the file name),
 * then what to do.
 */
export const parseTileTable = (value: unknown, where: string): E.Either<string, TileTable> => {
  const r = TableC.decode(value);
  const errs = E.isLeft(r) ? report(r.left) : semanticErrors(r.right as TileTable);
  if (errs.length === 0) return E.right(value as TileTable);
  const shown = errs.slice(0, 8).map((e) => `${where}: ${e}`);
  if (errs.length > 8) shown.push(`${where}: ... and ${errs.length - 8} more`);
  return E.left(
    `${shown.join("\n")}\n${where}: not a valid tile table; fix or delete it, or measure a new one with ` +
      "`deno task bench --tune --force`",
  );
};

/** Reads and validates a table file; throws an Error naming the file when it is missing or invalid. */
export const readTileTable = async (path: string): Promise<TileTable> => {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`tile table ${path}: cannot read it (${message(e)})`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Error(
      `tile table ${path}: not valid JSON (${message(e)}); delete it or measure a new one with ` +
        "`deno task bench --tune --force`",
    );
  }
  const r = parseTileTable(value, path);
  if (E.isLeft(r)) throw new Error(`tile table ${r.left}`);
  return r.right;
};

// ---------------------------------------------------------------------------------------------------
// Lookup

/**
 * How far (log2 units, Euclidean over m, n, k, batch) the nearest entry may be from a product for its
 * choice to be used: a factor 4 in one dimension, or about 2.7 in two. Farther, the measurement says
 * little about the product and the default rule (set by hand for the H200's shapes) is the better guess.
 */
export const MAX_DISTANCE = 2;

/** Distance between two product shapes in log2 space over (m, n, k, batch). */
export const shapeDistance = (a: GemmShape, b: GemmShape): number =>
  Math.hypot(
    Math.log2(a.m / b.m),
    Math.log2(a.n / b.n),
    Math.log2(a.k / b.k),
    Math.log2(a.batch / b.batch),
  );

/**
 * The entry nearest to `s` among those with the same transposes and precision, or undefined when there
 * is none within `maxDistance`. Ties go to the earlier entry.
 */
export const nearestEntry = (
  entries: readonly TileEntry[],
  s: GemmShape,
  maxDistance = MAX_DISTANCE,
): TileEntry | undefined => {
  let best: TileEntry | undefined, bestD = Infinity;
  for (const e of entries) {
    const x = e.shape;
    if (x.transA !== s.transA || x.transB !== s.transB || x.precision !== s.precision) continue;
    const d = shapeDistance(x, s);
    if (d < bestD) [best, bestD] = [e, d];
  }
  return bestD <= maxDistance ? best : undefined;
};

const shapeKey = (s: GemmShape) => `${s.m},${s.n},${s.k},${s.batch},${+s.transA}${+s.transB},${s.precision}`;

/** The table as a chooser for {@link setGemmChooser}: the nearest entry's choice (memoised per shape). */
export const tileTableChooser = (table: TileTable, maxDistance = MAX_DISTANCE): GemmChooser => {
  const memo = new Map<string, GemmChoice | undefined>();
  return (s) => {
    const k = shapeKey(s);
    if (memo.has(k)) return memo.get(k);
    const c = nearestEntry(table.entries, s, maxDistance)?.choice;
    memo.set(k, c);
    return c;
  };
};

// ---------------------------------------------------------------------------------------------------
// Device limits

/** The device limits a tile must fit (GPUSupportedLimits' names). */
export interface TileLimits {
  readonly maxComputeWorkgroupStorageSize: number;
  readonly maxComputeInvocationsPerWorkgroup: number;
  readonly maxComputeWorkgroupSizeX: number;
  readonly maxComputeWorkgroupSizeY: number;
}

/**
 * Workgroup memory of a tile's kernel in bytes: BK-deep slices of A and B (f16 operands: half), `buffers`
 * of each (double buffering: 2).
 */
export const tileStorageBytes = (tile: Tile, precision: MatMulPrecision, buffers: 1 | 2 = 1): number =>
  buffers * tile.bk * (tile.bm + tile.bn) * (precision === "f16" ? 2 : 4) + (precision === "f16" ? 4 : 0);

/** Why `tile` does not fit the device, or undefined when it does. */
export const tileMisfit = (
  tile: Tile,
  limits: TileLimits,
  precision: MatMulPrecision,
  buffers: 1 | 2 = 1,
): string | undefined => {
  const x = tile.bn / tile.tn, y = tile.bm / tile.tm, bytes = tileStorageBytes(tile, precision, buffers);
  if (x * y > limits.maxComputeInvocationsPerWorkgroup) {
    return `${x * y} threads > maxComputeInvocationsPerWorkgroup ${limits.maxComputeInvocationsPerWorkgroup}`;
  }
  if (x > limits.maxComputeWorkgroupSizeX || y > limits.maxComputeWorkgroupSizeY) {
    return `workgroup ${x} x ${y} > maxComputeWorkgroupSize ${limits.maxComputeWorkgroupSizeX} x ${limits.maxComputeWorkgroupSizeY}`;
  }
  if (bytes > limits.maxComputeWorkgroupStorageSize) {
    return `${bytes} bytes of workgroup memory > maxComputeWorkgroupStorageSize ${limits.maxComputeWorkgroupStorageSize}`;
  }
  return undefined;
};

// ---------------------------------------------------------------------------------------------------
// Finding and installing

/** The environment variable naming a table file (or `none`). */
export const TILE_TABLE_ENV = "CAEV2_TILE_TABLE";

/** An adapter description as a file name: `llvmpipe (LLVM 15.0.6, 256 bits)` -> `llvmpipe-llvm-15.0.6-256-bits`. */
export const adapterFileName = (adapter: string): string =>
  adapter.toLowerCase().replace(/[^a-z0-9._]+/g, "-").replace(/^[-.]+|-+$/g, "") || "unknown-adapter";

/** An environment variable, or undefined when unset or when reading it is not permitted (no prompt). */
export const envIfAllowed = (name: string): string | undefined => {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") return undefined;
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
};

/**
 * Where `deno task bench --tune` writes and {@link findTileTable} looks for this adapter's table:
 * `$XDG_CACHE_HOME/caev2/tiles/<adapter>.json`, default `$HOME/.cache/...` (`%LOCALAPPDATA%` on Windows);
 * undefined when neither variable is set (or readable).
 */
export const tileCachePath = (
  adapter: string,
  env: (name: string) => string | undefined = envIfAllowed,
): string | undefined => {
  const windows = Deno.build.os === "windows";
  const xdg = env("XDG_CACHE_HOME");
  const home = windows ? env("LOCALAPPDATA") : env("HOME");
  const base = xdg?.startsWith("/") ? xdg : home ? (windows ? home : `${home}/.cache`) : undefined;
  return base === undefined ? undefined : `${base}/caev2/tiles/${adapterFileName(adapter)}.json`;
};

/** A table and where it came from, in words. */
export interface FoundTable {
  /** The table. */
  readonly table: TileTable;
  /** Where it came from, in words (the variable, the cache file, or "shipped"). */
  readonly source: string;
}

const readable = (path: string): boolean => {
  try {
    return Deno.permissions.querySync({ name: "read", path }).state === "granted";
  } catch {
    return false;
  }
};

/**
 * The table for `adapter` (the order of the module doc), null when `CAEV2_TILE_TABLE=none`, undefined
 * when there is none. Throws (naming the file) when the named or cached file cannot be read or is invalid.
 */
export const findTileTable = async (
  adapter: string,
  env: (name: string) => string | undefined = envIfAllowed,
  shipped: readonly unknown[] = shippedTileTables,
): Promise<FoundTable | null | undefined> => {
  const named = env(TILE_TABLE_ENV);
  if (named === "none") return null;
  if (named !== undefined && named !== "") {
    return { table: await readTileTable(named), source: `${TILE_TABLE_ENV}=${named}` };
  }
  const cached = tileCachePath(adapter, env);
  if (cached !== undefined && readable(cached)) {
    let present = true;
    try {
      await Deno.stat(cached);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw new Error(`tile table ${cached}: ${message(e)}`);
      present = false;
    }
    if (present) return { table: await readTileTable(cached), source: cached };
  }
  for (const [i, value] of shipped.entries()) {
    const where = `lib/core/kernels/tile_tables.ts, table ${i}`;
    const r = parseTileTable(value, where);
    if (E.isLeft(r)) throw new Error(`shipped tile table ${r.left}`);
    if (r.right.adapter === adapter) return { table: r.right, source: `shipped (${where})` };
  }
  return undefined;
};

let active: FoundTable | undefined;

/** The table {@link installTileTable} installed last, if any. */
export const activeTileTable = (): FoundTable | undefined => active;

/**
 * Installs the tile table for the active WebGPU adapter (found by {@link findTileTable}) as the chooser
 * of lib/core/kernels/matmul.ts, or removes any chooser when there is none or the backend is not WebGPU.
 * Returns one line saying which table is in use (for logs; nothing is printed here), or undefined off
 * WebGPU. Throws, naming the file, when a table is unreadable, invalid, or has a tile this device cannot
 * run.
 */
export const installTileTable = async (info: BackendInfo): Promise<string | undefined> => {
  setGemmChooser(undefined);
  active = undefined;
  if (info.name !== "webgpu") return undefined;
  const adapter = info.adapter ?? "unknown adapter";
  const found = await findTileTable(adapter);
  if (found === null) return `tile table: none (${TILE_TABLE_ENV}=none), default tile rule`;
  if (found === undefined) {
    return "default matmul tiles (no tuned table for this adapter; deno task bench --tune measures one)";
  }
  const limits = webgpuDevice()?.limits;
  if (limits !== undefined) {
    for (const [i, e] of found.table.entries.entries()) {
      const why = tileMisfit(e.choice.tile, limits, e.shape.precision, e.choice.buffers);
      if (why !== undefined) {
        throw new Error(
          `tile table ${found.source}: at entries[${i}].choice.tile: does not fit this device (${why}); ` +
            `the table was measured on "${found.table.adapter}"`,
        );
      }
    }
  }
  setGemmChooser(tileTableChooser(found.table));
  active = found;
  const other = found.table.adapter === adapter
    ? ""
    : `, measured on "${found.table.adapter}", not this adapter`;
  return `tile table: ${found.source} (${found.table.entries.length} shapes, ${
    found.table.date.slice(0, 10)
  }${other})`;
};
