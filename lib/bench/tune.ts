/**
 * The autotune pass behind `deno task bench --tune`: for each matmul of one CAE v2 training step (or any
 * list of product shapes), time candidate tiles and K splits of the tiled WebGPU kernel
 * (lib/core/kernels/matmul.ts), keep the fastest whose output matches the default plan's (the default
 * itself unless a candidate beats it by 3%: timing noise should not pick among equals), and write the
 * winners as a tile table (lib/core/kernels/tile_table.ts), which every later run on the adapter uses.
 *
 * Shapes ({@link stepShapes}): one real training step (student forward and both gradient products of
 * every matmul, teacher forward) runs with a chooser that records each product the tiled kernel plans,
 * so the list is the step's, whatever the models do, with how many times each runs per step.
 *
 * Candidates ({@link candidateChoices}), in two stages so that the count stays bounded (a ViT-B step has
 * about 50 distinct products; each gets at most 30 candidates, 40 in f16):
 * 1. every tile of the space that `checkTile` accepts and the device fits (threads, workgroup size and
 *    workgroup memory from `device.limits`), with the default rule's K split;
 * 2. for the `top` fastest tiles of stage 1: the K splits of the space (where the product has few output
 *    tiles and a long K), and for f16 operands both accumulations;
 * 3. the fastest so far double-buffered, with its slice loop written out, and both; where the device has
 *    subgroups, each of these and the leader with A shared by subgroup shuffles ({@link stage3Choices}).
 * The default rule's own plan is always measured: it is the baseline and the output every candidate is
 * checked against (relative error, lib/core/compare.ts; f16 candidates against the f32 default). A
 * candidate that throws (a shader the driver refuses, an f16 variant missing) or differs is reported and
 * skipped, never chosen. The default and the winner are measured once more at the end, back to back.
 *
 * Timing: lib/bench/timing.ts `timeOp` after a warmup run; candidates are ranked by the median GPU kernel
 * time where the backend has a timer (tf.time: WebGPU timestamp queries; both passes of a split K), else
 * by the median wall time with the readback floor subtracted.
 *
 * @module
 */
import { tf, type WebGPUBackend } from "../deps.ts";
import { foldIn, key, seedOf, split } from "../core/random.ts";
import { relativeError } from "../core/compare.ts";
import { tensorsIn } from "../core/tree.ts";
import { dirOf, message, statIfExists, writeTextAtomic } from "../core/fs.ts";
import { checkDeviceErrors, webgpuDevice, withErrorScope } from "../core/webgpu_errors.ts";
import { subgroupMinSize } from "../core/webgpu_features.ts";
import {
  checkTile,
  type GemmChoice,
  type GemmShape,
  type MatMulPlan,
  type MatMulPrecision,
  planMatMul,
  registerFastMatMul,
  runMatMul,
  setGemmChooser,
  subgroupLanes,
  type Tile,
} from "../core/kernels/matmul.ts";
import type { TensorInfo } from "../core/kernels/program.ts";
import {
  activeTileTable,
  TILE_TABLE_FORMAT,
  TILE_TABLE_VERSION,
  type TileEntry,
  type TileLimits,
  tileMisfit,
  type TileTable,
  tileTableChooser,
} from "../core/kernels/tile_table.ts";
import type { PresetName } from "../models/presets.ts";
import type { BackendLimits } from "../train/footprint.ts";
import { syntheticStep, type TeacherName } from "./step.ts";
import { hasKernelTimer, readbackFloorMs, timeOp, type TimingOptions } from "./timing.ts";

// ---------------------------------------------------------------------------------------------------
// Shapes

/** A product shape and how many times one training step runs it. */
export interface ShapeCount {
  readonly shape: GemmShape;
  readonly calls: number;
}

const shapeKey = (s: GemmShape) => `${s.m},${s.n},${s.k},${s.batch},${+s.transA}${+s.transB}`;

/** Floating-point operations of one product. */
export const flopsOf = (s: GemmShape): number => 2 * s.m * s.n * s.k * s.batch;

/**
 * Records every product the tiled kernel plans while `run` runs (a chooser that answers "default" and
 * notes the shape), distinct shapes in order of first appearance. The tiled kernel must be registered.
 */
export const recordShapes = async (run: () => Promise<void>): Promise<ShapeCount[]> => {
  const seen = new Map<string, { shape: GemmShape; calls: number }>();
  setGemmChooser((s) => {
    const k = shapeKey(s);
    const e = seen.get(k);
    if (e) e.calls++;
    else seen.set(k, { shape: s, calls: 1 });
    return undefined;
  });
  try {
    await run();
  } finally {
    reinstallChooser();
  }
  return [...seen.values()];
};

/** What {@link stepShapes} runs: the student preset, images per step, the teacher. */
export interface StepShapesConfig {
  readonly model: PresetName;
  readonly batch: number;
  readonly teacher: TeacherName;
  /** What the backend holds: a step estimated not to fit is refused before any tensor is made. */
  readonly limits?: BackendLimits;
}

/**
 * The matmuls of one CAE v2 training step (teacher forward, student forward and backward, AdamW), found
 * by running one step on synthetic data on the current backend with the tiled kernel registered.
 */
export const stepShapes = async (cfg: StepShapesConfig): Promise<ShapeCount[]> => {
  const run = syntheticStep(cfg);
  registerFastMatMul();
  try {
    return await recordShapes(async () => {
      const r = run.step(run.state, [run.batch]);
      await r.metrics.data();
      tf.dispose([r.metrics, ...tensorsIn(r.state)]);
    });
  } finally {
    tf.dispose(tensorsIn(run.state));
    run.dispose();
  }
};

// ---------------------------------------------------------------------------------------------------
// Candidates

/** What the tuner tries. */
export interface TuneSpace {
  readonly tiles: readonly Tile[];
  /** K splits tried in stage 2 (where the product has few output tiles and a long K). */
  readonly splits: readonly number[];
  /** f16 operands: accumulations tried in stage 2. */
  readonly accumulate: readonly ("f32" | "f16")[];
  /** Workgroup buffers per operand; with 2, stage 3 tries the leader double-buffered. Unset: 1 only. */
  readonly buffers?: readonly (1 | 2)[];
  /** Stage 3 tries the leader with its slice loop written out (and double-buffered too, with `buffers`). */
  readonly unroll?: boolean;
  /**
   * Stage 3 tries the leader and each of its stage-3 variants again with A shared by subgroup shuffles
   * (matmul.ts `GemmChoice.subgroup`), where the device has subgroups.
   */
  readonly subgroup?: boolean;
  /** How many of stage 1's fastest tiles stage 2 varies. */
  readonly top: number;
}

const tile = (bm: number, bn: number, bk: number, tm: number, tn: number): Tile => ({ bm, bn, bk, tm, tn });

/**
 * The full space: 17 tiles from 128 x 256 and 256 x 128 (8 x 16 per thread, 256 threads) down to 32 x 32
 * (4 x 4, 64 threads), slices 8 to 32 deep where `checkTile` allows them, K split in 1 to 16.
 */
export const FULL_SPACE: TuneSpace = {
  tiles: [
    tile(128, 128, 8, 8, 8),
    tile(128, 128, 16, 8, 8),
    tile(128, 128, 32, 8, 8),
    // Larger register blocks (8 x 16 per thread): more arithmetic per workgroup-memory read, for the
    // long products of the linear layers, if the registers hold (the tuner measures whether they spill).
    tile(128, 256, 16, 8, 16),
    tile(256, 128, 16, 16, 8),
    tile(128, 64, 16, 8, 4),
    tile(128, 64, 32, 8, 4),
    tile(64, 128, 16, 4, 8),
    tile(64, 128, 32, 4, 8),
    tile(64, 64, 16, 4, 4),
    tile(64, 64, 32, 4, 4),
    tile(64, 64, 16, 8, 8),
    tile(64, 32, 16, 4, 4),
    tile(32, 64, 16, 4, 4),
    tile(32, 32, 8, 4, 4),
    tile(32, 32, 16, 4, 4),
    tile(32, 32, 32, 4, 4),
  ],
  splits: [1, 2, 4, 8, 16],
  accumulate: ["f32", "f16"],
  buffers: [1, 2],
  unroll: true,
  subgroup: true,
  top: 2,
};

/** `--tune-quick`: 5 tiles at 16-deep slices, 3 splits, the best tile only in stage 2. */
export const QUICK_SPACE: TuneSpace = {
  tiles: [
    tile(128, 128, 16, 8, 8),
    tile(128, 64, 16, 8, 4),
    tile(64, 128, 16, 4, 8),
    tile(64, 64, 16, 4, 4),
    tile(32, 32, 16, 4, 4),
  ],
  splits: [1, 4, 16],
  accumulate: ["f32", "f16"],
  buffers: [1, 2],
  unroll: true,
  subgroup: true,
  top: 1,
};

/** matmul.ts's TARGET_WORKGROUPS: fewer output tiles than this leave the H200's SMs idle. */
const FEW_TILES = 264;
/** K splits are tried only down to chunks this long (shorter chunks are all overhead). */
const MIN_CHUNK = 128;

/** A tile as text: `128x64x16/8x4`. */
export const tileName = (t: Tile): string => `${t.bm}x${t.bn}x${t.bk}/${t.tm}x${t.tn}`;

/** A planned choice as text: `128x64x16/8x4 split 4` (f16 accumulation appended). */
export const choiceName = (
  p: {
    tile: Tile;
    splits: number;
    accumulate?: string;
    buffers?: 1 | 2;
    unroll?: boolean;
    subgroup?: number;
  },
  precision = "f32",
) =>
  `${tileName(p.tile)}${p.splits > 1 ? ` split ${p.splits}` : ""}${
    precision === "f16" ? ` acc ${p.accumulate ?? "f32"}` : ""
  }${p.buffers === 2 ? " double-buffered" : ""}${p.unroll ? " unrolled" : ""}${
    p.subgroup ? ` subgroup ${p.subgroup}` : ""
  }`;

/** The stage-1 tiles of `space` for `s`, and why the others were left out. */
export const candidateTiles = (
  s: GemmShape,
  space: TuneSpace,
  limits: TileLimits,
): { tiles: Tile[]; rejected: string[] } => {
  const tiles: Tile[] = [], rejected: string[] = [];
  for (const t of space.tiles) {
    try {
      checkTile(t);
    } catch (e) {
      rejected.push(`${tileName(t)}: ${message(e)}`);
      continue;
    }
    const why = tileMisfit(t, limits, s.precision);
    if (why !== undefined) rejected.push(`${tileName(t)}: ${why}`);
    else tiles.push(t);
  }
  return { tiles, rejected };
};

/** Stage 2 for one tile: the space's K splits where they apply, times the accumulations (f16 only). */
export const candidateChoices = (s: GemmShape, t: Tile, space: TuneSpace): GemmChoice[] => {
  const outTiles = Math.ceil(s.m / t.bm) * Math.ceil(s.n / t.bn) * s.batch;
  const splits = outTiles < FEW_TILES
    ? space.splits.filter((p) => p === 1 || s.k / p >= MIN_CHUNK)
    : space.splits.filter((p) => p === 1);
  const accs = s.precision === "f16" ? space.accumulate : ["f32" as const];
  return splits.flatMap((p) => accs.map((accumulate) => ({ tile: t, splits: p, accumulate })));
};

/**
 * Stage 3: the leader of stages 1 and 2 double-buffered, with its slice loop written out, and both, as far
 * as the space tries them and the device has the workgroup memory; then, where the device has subgroups
 * (`minSubgroup`: its smallest subgroup size), the leader and each of those with A shared by subgroup
 * shuffles (at most seven candidates more per shape; these change how the kernel moves data, waits and
 * loops, not which tile suits the shape).
 */
export const stage3Choices = (
  s: GemmShape,
  leader: GemmChoice,
  space: TuneSpace,
  limits?: TileLimits,
  minSubgroup?: number,
): GemmChoice[] => {
  const doubled = (space.buffers ?? []).includes(2) &&
    (limits === undefined || tileMisfit(leader.tile, limits, s.precision, 2) === undefined);
  const out: GemmChoice[] = [];
  if (doubled && leader.buffers !== 2) out.push({ ...leader, buffers: 2 });
  if (space.unroll && !leader.unroll) {
    out.push({ ...leader, unroll: true });
    if (doubled && leader.buffers !== 2) out.push({ ...leader, buffers: 2, unroll: true });
  }
  const lanes = space.subgroup && !leader.subgroup ? subgroupLanes(leader.tile, minSubgroup) : 0;
  return lanes > 0 ? [...out, ...[leader, ...out].map((c) => ({ ...c, subgroup: lanes }))] : out;
};

// ---------------------------------------------------------------------------------------------------
// Measuring

/** One candidate's outcome. */
export interface CandidateResult {
  /** As planned (splits resolved by planMatMul). */
  readonly choice: {
    readonly tile: Tile;
    readonly splits: number;
    readonly accumulate: "f32" | "f16";
    readonly buffers: 1 | 2;
    readonly unroll: boolean;
    readonly subgroup: number;
  };
  /** Median ms by the tune's timer (kernel time where the backend has one, else wall); undefined: failed. */
  readonly ms?: number;
  /** Median wall ms per product (readback floor subtracted). */
  readonly wallMs?: number;
  /** Relative error against the f32 default plan. */
  readonly relErr?: number;
  /** Why it was not accepted. */
  readonly error?: string;
}

/** One shape's outcome. */
export interface ShapeOutcome {
  readonly shape: GemmShape;
  readonly calls?: number;
  /** The default rule's plan, measured (undefined when the tiled kernel does not take the product). */
  readonly defaultResult?: CandidateResult;
  readonly candidates: readonly CandidateResult[];
  /** Tiles left out before running (unsupported, or too big for the device). */
  readonly rejected: readonly string[];
  /** The table entry: the fastest correct candidate (the default plan when nothing beats it). */
  readonly entry?: TileEntry;
}

/** How the tuner runs. */
export interface TuneOptions {
  readonly space: TuneSpace;
  readonly timing: Omit<TimingOptions, "floorMs">;
  /** Largest accepted relative error against the f32 default plan (default: 1e-4 f32, 1e-2 f16). */
  readonly tolerance?: number;
  /**
   * How much faster than the default plan a candidate must be to replace it (default 0.03: 3%), so that
   * timing noise does not turn the table into a random draw among equals.
   */
  readonly margin?: number;
  /** Device limits (default: the WebGPU device's). */
  readonly limits?: TileLimits;
  /** Progress lines (one per shape). */
  readonly log?: (line: string) => void;
  /**
   * The device's smallest subgroup size, for stage 3's subgroup candidates (default: the WebGPU device's
   * `subgroupMinSize` where it has `subgroups`; none elsewhere).
   */
  readonly minSubgroup?: number;
  /**
   * Called after each shape with the result so far and the number of shapes (`deno task bench --tune`
   * writes the partial table, so that a tune cut short keeps what it measured).
   */
  readonly onShape?: (sofar: TuneResult, total: number) => Promise<void> | void;
  /** Runs a plan (default: matmul.ts `runMatMul`); tests inject a failing one. */
  readonly execute?: typeof runMatMul;
}

/** Full tuning: a few samples of ~20 ms after one warmup run. */
export const FULL_TIMING: TuneOptions["timing"] = { warmup: 1, steps: 5, targetMs: 20, budgetMs: 2000 };
/** `--tune-quick` and tests. */
export const QUICK_TIMING: TuneOptions["timing"] = { warmup: 1, steps: 3, targetMs: 5, budgetMs: 500 };

/** Operand shapes of a product: A `[batch, m, k]` (`[batch, k, m]` transposed), B likewise; 2-D at batch 1. */
export const operandShapes = (s: GemmShape): { a: number[]; b: number[] } => {
  const lead = s.batch === 1 ? [] : [s.batch];
  return {
    a: [...lead, ...(s.transA ? [s.k, s.m] : [s.m, s.k])],
    b: [...lead, ...(s.transB ? [s.n, s.k] : [s.k, s.n])],
  };
};

const info = (x: tf.Tensor): TensorInfo => ({ dataId: x.dataId, shape: x.shape, dtype: x.dtype });

const resolved = (p: MatMulPlan): CandidateResult["choice"] => ({
  tile: p.tile,
  splits: p.splits,
  accumulate: p.accumulate,
  buffers: p.buffers,
  unroll: p.unroll,
  subgroup: p.subgroup,
});
const planKey = (c: CandidateResult["choice"]) =>
  `${tileName(c.tile)}:${c.splits}:${c.accumulate}:${c.buffers}:${c.unroll}:${c.subgroup}`;

/** Puts back the chooser of the installed table (or none), after the tuner borrowed the hook. */
const reinstallChooser = () => {
  const active = activeTileTable();
  setGemmChooser(active ? tileTableChooser(active.table) : undefined);
};

const round = (x: number, digits = 4) => Number(x.toPrecision(digits));

/** Tunes one product shape on the current WebGPU backend. */
export const tuneShape = async (
  s: GemmShape,
  opts: TuneOptions & { readonly floorMs: number; readonly calls?: number },
): Promise<ShapeOutcome> => {
  const backend = tf.backend() as WebGPUBackend;
  const limits = opts.limits ?? webgpuDevice()?.limits;
  if (limits === undefined) throw new Error("tune: needs the webgpu backend");
  const tolerance = opts.tolerance ?? (s.precision === "f16" ? 1e-2 : 1e-4);
  const { a: aShape, b: bShape } = operandShapes(s);
  const [ka, kb] = split(foldIn(key(2027), s.m * 31 + s.n * 17 + s.k));
  const a = tf.randomNormal(aShape, 0, 1, "float32", seedOf(ka));
  const b = tf.randomNormal(bShape, 0, 1, "float32", seedOf(kb));
  const timing: TimingOptions = { ...opts.timing, floorMs: opts.floorMs };
  const plan = (choice: GemmChoice | undefined, precision: MatMulPrecision) =>
    planMatMul(aShape, bShape, s.transA, s.transB, choice, precision);
  const execute = opts.execute ?? runMatMul;
  const run = (p: MatMulPlan) => () =>
    tf.engine().makeTensorFromTensorInfo(execute(backend, info(a), info(b), p));
  const base = { shape: s, calls: opts.calls };
  try {
    const refPlan = plan(undefined, "f32");
    const defPlan = plan(undefined, s.precision);
    if (refPlan === null || defPlan === null) {
      return { ...base, candidates: [], rejected: ["not taken by the tiled kernel (stock kernel runs)"] };
    }
    const reference = await withErrorScope(async () => {
      const y = run(refPlan)();
      const d = await y.data();
      y.dispose();
      return d;
    });
    const measure = async (p: MatMulPlan): Promise<CandidateResult> => {
      const choice = resolved(p);
      try {
        const relErr = await withErrorScope(async () => {
          const y = run(p)();
          try {
            return relativeError(await y.data(), reference);
          } finally {
            y.dispose();
          }
        });
        checkDeviceErrors();
        if (!(relErr <= tolerance)) {
          return {
            choice,
            relErr,
            error: `output differs from the default plan's (${relErr.toExponential(2)})`,
          };
        }
        const t = await withErrorScope(() => timeOp(run(p), timing));
        // Kernel time where there is a timer: wall time of small products is mostly dispatch and readback,
        // the same for every tile, and its noise would pick the winner.
        const kernel = t.kernelMs !== null && Number.isFinite(t.kernelMs) && t.kernelMs > 0;
        return { choice, relErr, ms: kernel ? t.kernelMs! : t.wallMs, wallMs: t.wallMs };
      } catch (e) {
        return { choice, error: message(e).split("\n")[0] };
      }
    };
    const first = await measure(defPlan);
    const done = new Map<string, CandidateResult>([[planKey(first.choice), first]]);
    const plans = new Map<string, MatMulPlan>([[planKey(first.choice), defPlan]]);
    const tryChoice = async (c: GemmChoice): Promise<CandidateResult | undefined> => {
      const p = plan(c, s.precision);
      if (p === null) return undefined;
      const k = planKey(resolved(p));
      if (!done.has(k)) {
        done.set(k, await measure(p));
        plans.set(k, p);
      }
      return done.get(k);
    };
    // Stage 1: every tile with the default K split rule (and f32 accumulation).
    const { tiles, rejected } = candidateTiles(s, opts.space, limits);
    const stage1: { tile: Tile; ms: number }[] = [];
    for (const t of tiles) {
      const r = await tryChoice({ tile: t, accumulate: "f32" });
      if (r?.ms !== undefined) stage1.push({ tile: t, ms: r.ms });
    }
    // Stage 2: splits (and accumulations) for the fastest tiles.
    stage1.sort((x, y) => x.ms - y.ms);
    for (const { tile: t } of stage1.slice(0, opts.space.top)) {
      for (const c of candidateChoices(s, t, opts.space)) await tryChoice(c);
    }
    const fastestOf = (rs: CandidateResult[]) =>
      rs.filter((c) => c.ms !== undefined).reduce<CandidateResult | undefined>(
        (x, y) => (x === undefined || y.ms! < x.ms! ? y : x),
        undefined,
      );
    const before3 = fastestOf([...done.values()]);
    const minSubgroup = opts.minSubgroup ?? subgroupMinSize(webgpuDevice());
    for (const c of before3 ? stage3Choices(s, before3.choice, opts.space, limits, minSubgroup) : []) {
      await tryChoice(c);
    }
    // A second look at the default and the winner, one after the other: the load of a shared machine
    // drifts over the minutes a shape takes, and each keeps the better of its two medians.
    const leader = fastestOf([...done.values()]);
    if (leader !== undefined && first.ms !== undefined && planKey(leader.choice) !== planKey(first.choice)) {
      for (const k of [planKey(first.choice), planKey(leader.choice)]) {
        const again = await measure(plans.get(k)!);
        const before = done.get(k)!;
        if (again.ms !== undefined && again.ms < before.ms!) done.set(k, { ...before, ms: again.ms });
      }
    }
    const candidates = [...done.values()];
    const defaultResult = done.get(planKey(first.choice))!;
    const margin = opts.margin ?? 0.03;
    const fastest = fastestOf(candidates);
    const best = fastest !== undefined && defaultResult.ms !== undefined &&
        fastest.ms! > defaultResult.ms * (1 - margin)
      ? defaultResult
      : fastest;
    const entry: TileEntry | undefined = best === undefined || defaultResult.ms === undefined ? undefined : {
      shape: s,
      choice: {
        tile: best.choice.tile,
        splits: best.choice.splits,
        ...(s.precision === "f16" ? { accumulate: best.choice.accumulate } : {}),
        ...(best.choice.buffers === 2 ? { buffers: 2 as const } : {}),
        ...(best.choice.unroll ? { unroll: true } : {}),
        ...(best.choice.subgroup > 0 ? { subgroup: best.choice.subgroup } : {}),
      },
      ms: round(best.ms!),
      tflops: round(flopsOf(s) / (best.ms! * 1e-3) / 1e12),
      defaultMs: round(defaultResult.ms),
      ...(opts.calls !== undefined ? { calls: opts.calls } : {}),
    };
    return { ...base, defaultResult, candidates, rejected, entry };
  } finally {
    tf.dispose([a, b]);
  }
};

/** A product shape in words: `[12,99,64] x [12,99,64]^T (m 99 n 99 k 64, batch 12)`. */
export const shapeName = (s: GemmShape): string => {
  const { a, b } = operandShapes(s);
  return `[${a}]${s.transA ? "^T" : ""} x [${b}]${s.transB ? "^T" : ""}`;
};

/** The progress line of one shape. */
export const formatOutcome = (o: ShapeOutcome, i: number, n: number): string => {
  const calls = o.calls !== undefined ? ` (${o.calls}/step)` : "";
  const head = `tune ${i + 1}/${n} ${shapeName(o.shape)}${calls}`;
  const failed = o.candidates.filter((c) => c.error !== undefined).length;
  const counts = `${o.candidates.length} candidates${failed ? `, ${failed} failed` : ""}`;
  if (o.entry === undefined || o.defaultResult?.ms === undefined) {
    return `${head}: no table entry (${o.defaultResult?.error ?? o.rejected.join("; ")}); ${counts}`;
  }
  const e = o.entry, d = o.defaultResult;
  const speedup = e.defaultMs / Math.max(e.ms, 1e-6);
  return `${head}: ${choiceName(e.choice, o.shape.precision)} ${e.ms.toFixed(3)} ms ${
    e.tflops.toPrecision(3)
  } TFLOP/s, ${speedup.toFixed(2)}x the default (${choiceName(d.choice, o.shape.precision)} ${
    e.defaultMs.toFixed(3)
  } ms); ${counts}`;
};

/** What {@link tuneShapes} found. */
export interface TuneResult {
  readonly outcomes: readonly ShapeOutcome[];
  readonly entries: readonly TileEntry[];
  /** Matmul ms of one step (sum of ms x calls over the tuned shapes): the default rule's and the table's. */
  readonly stepDefaultMs: number;
  readonly stepTunedMs: number;
  /** What `ms` means: GPU kernel time (tf.time, WebGPU timestamp queries) or wall time. */
  readonly timer: "kernel" | "wall";
}

/**
 * Tunes every shape (at `precision`) on the current WebGPU backend with the chooser hook borrowed (the
 * default rule is the baseline, whatever table is installed; the installed one is put back afterwards).
 */
export const tuneShapes = async (
  shapes: readonly ShapeCount[],
  precision: MatMulPrecision,
  opts: TuneOptions,
): Promise<TuneResult> => {
  if (tf.getBackend() !== "webgpu") throw new Error("tune: needs the webgpu backend");
  const log = opts.log ?? (() => {});
  const floorMs = await readbackFloorMs(5);
  const outcomes: ShapeOutcome[] = [];
  setGemmChooser(undefined);
  try {
    for (const [i, { shape, calls }] of shapes.entries()) {
      const o = await tuneShape({ ...shape, precision }, { ...opts, floorMs, calls });
      outcomes.push(o);
      log(formatOutcome(o, i, shapes.length));
      if (opts.onShape !== undefined) {
        // The table so far, for the caller to keep (with the chooser back, as outside the tuner).
        reinstallChooser();
        await opts.onShape(tuneResultOf(outcomes), shapes.length);
        setGemmChooser(undefined);
      }
    }
  } finally {
    reinstallChooser();
  }
  return tuneResultOf(outcomes);
};

/** The result of the shapes tuned so far. */
const tuneResultOf = (outcomes: readonly ShapeOutcome[]): TuneResult => {
  const entries = outcomes.flatMap((o) => o.entry ? [o.entry] : []);
  const sum = (f: (e: TileEntry) => number) => entries.reduce((s, e) => s + f(e) * (e.calls ?? 1), 0);
  return {
    outcomes: [...outcomes],
    entries,
    stepDefaultMs: sum((e) => e.defaultMs),
    stepTunedMs: sum((e) => e.ms),
    timer: hasKernelTimer() ? "kernel" : "wall",
  };
};

/** The table file of a tune. */
export const tileTableOf = (
  adapter: string,
  tuned: string,
  r: Pick<TuneResult, "entries" | "timer">,
): TileTable => ({
  format: TILE_TABLE_FORMAT,
  version: TILE_TABLE_VERSION,
  adapter,
  date: new Date().toISOString(),
  deno: Deno.version.deno,
  tfjs: tf.version_core,
  tuned,
  timer: r.timer,
  entries: r.entries,
});

/** A table as text: the header fields one per line, then one line per entry (diffable, pasteable). */
export const formatTileTable = (table: TileTable): string => {
  const { entries, ...head } = table;
  const lines = Object.entries(head).map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)},`);
  const rows = entries.map((e, i) => `    ${JSON.stringify(e)}${i + 1 < entries.length ? "," : ""}`);
  return `{\n${lines.join("\n")}\n  "entries": [\n${rows.join("\n")}\n  ]\n}\n`;
};

/** Refuses (with what to do) when `path` exists and `force` is not set. */
export const checkWritable = async (path: string, force: boolean): Promise<void> => {
  if (!force && await statIfExists(path) !== undefined) {
    throw new Error(`${path} exists; pass --force to overwrite it (or --out FILE to write elsewhere)`);
  }
};

/** Writes a table (atomically, creating its folder), refusing to overwrite without `force`. */
export const writeTileTable = async (path: string, table: TileTable, force: boolean): Promise<void> => {
  await checkWritable(path, force);
  await Deno.mkdir(dirOf(path), { recursive: true });
  await writeTextAtomic(path, formatTileTable(table));
};
