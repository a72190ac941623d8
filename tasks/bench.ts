/**
 * `deno task bench [--model tiny|small|base] [--batch N] [--backend webgpu|wasm|cpu] [--steps N]
 *  [--warmup N] [--teacher clip-b16|micro] [--kernels fused|stock] [--no-phases] [--no-profile] [--remat]
 *  [--json] [--out FILE]`
 *
 * Full pretraining steps on synthetic tensors (lib/bench/step.ts): images/s of `trainStep`, ms per phase
 * (teacher, student forward, student backward, update), peak memory (live tensor bytes as tfjs counts them
 * and distinct data bytes, over the timed steps, lib/core/memory.ts), a kernel profile of one step
 * (tf.profile, aggregated by kernel name) and the ratio to PyTorch (BENCHMARKS.md, lib/bench/anchors.ts).
 * `--kernels fused` (default on webgpu) registers this project's WebGPU kernels (lib/core/kernels);
 * `stock` runs plain tfjs.
 *
 * `deno task bench --ops [--model ...] [--batch N] [--backend ...] [--steps N] [--warmup N] [--only a,b]
 *  [--matmul-size N] [--reduce-size N] [--no-stock] [--kernels fused|stock] [--json] [--out FILE]`
 *
 * Op-level microbenchmarks at the shapes of one CAE v2 step (lib/bench/ops.ts): median ms per op after
 * warmup, readback floor subtracted, kernel ms where the backend has a timer, and TFLOP/s or GB/s.
 *
 * `deno task bench --check --backend webgpu`: the fused kernels against their plain-tfjs references at
 * model shapes (lib/bench/kernel_check.ts); exit status 1 if any differs beyond its tolerance.
 * `--gemm-big` / `--gemm-small` override the default rule's matmul tiles (lib/core/kernels/matmul.ts); with
 * either, no tile table is installed.
 *
 * `deno task bench --tune [--model tiny|small|base] [--batch N[,N...]] [--teacher clip-b16|micro]
 *  [--precision f32|f16] [--tune-quick] [--max-shapes N] [--out FILE] [--force]`
 *
 * The autotune pass (lib/bench/tune.ts, docs/tuning.md): runs one training step of the model at each batch
 * to find its matmul shapes, times candidate tiles and K splits of the tiled WebGPU matmul for each, keeps
 * the fastest whose output matches the default plan's, and writes the tile table
 * (lib/core/kernels/tile_table.ts) to this adapter's user cache file
 * (`$XDG_CACHE_HOME/caev2/tiles/<adapter>.json`, default `~/.cache`), or `--out FILE`; an existing file is
 * overwritten only with `--force`. `--tune-quick`: 5 tiles and 3 splits per shape, fewer samples;
 * `--max-shapes N`: only the N shapes with the most arithmetic per step. Every other mode (and every task,
 * through lib/core/runtime.ts) uses the adapter's table when there is one.
 *
 * On an H200 device machine (figures in BENCHMARKS.md): `bash tools/device/prepare.sh` here (Deno, this
 * task bundled, the Vulkan loaders; re-run after every change), then one `run` per stage of
 * `tools/device/h200.sh check|tune|step|loss` with `carry: [".tools/device", ".gl"]`: every
 * kernel against its reference at model shapes, the matmul's TFLOP/s, tile tables for ViT-B batch 256, and
 * ViT-B / ViT-T batch-256 steps and 300-step runs in f32 and f16, each with an `nvidia-smi` sampler for the peak GPU memory
 * (`smoke` runs the plumbing on any adapter, lavapipe included, in seconds).
 *
 * @module
 */
import { tf } from "../lib/deps.ts";
import { parseArgs } from "../lib/core/std.ts";
import { registerDeviceGradients, restoreStockGradients } from "../lib/core/gradients.ts";
import { backendNames, describeBackend, isBackendName, selectBackend } from "../lib/core/backend.ts";
import { benchShape, type OpCase, opCases } from "../lib/bench/ops.ts";
import { hasKernelTimer, readbackFloorMs, timeOp } from "../lib/bench/timing.ts";
import { type BenchReport, formatTable, type OpResult, withRates } from "../lib/bench/report.ts";
import { type PresetName, presetNames } from "../lib/models/presets.ts";
import { runStepBench, type TeacherName } from "../lib/bench/step.ts";
import { backendLimits } from "../lib/train/footprint.ts";
import { capGpuPool } from "../lib/core/gpu_pool.ts";
import { formatStepReport, stepReport } from "../lib/bench/report.ts";
import { registerKernels, restoreStockKernels } from "../lib/core/kernels/dispatch.ts";
import { type Precision, precisionNames, precisionProblem, setPrecision } from "../lib/core/precision.ts";
import { gemmReady, setGemmThreads } from "../lib/core/kernels/gemm_pool.ts";
import { type MatMulPrecision, setGemmTiles, type Tile } from "../lib/core/kernels/matmul.ts";
import { installTileTable, tileCachePath } from "../lib/core/kernels/tile_table.ts";
import {
  checkWritable,
  flopsOf,
  FULL_SPACE,
  FULL_TIMING,
  QUICK_SPACE,
  QUICK_TIMING,
  type ShapeCount,
  stepShapes,
  tileTableOf,
  tuneShapes,
  writeTileTable,
} from "../lib/bench/tune.ts";
import {
  checkAdamw,
  checkGelu,
  checkHalfPack,
  checkHeadAttention,
  checkLayerNorm,
  checkMatMul,
  checkMatMulActGrad,
  checkMatMulBias,
  checkMatMulF16,
  checkMatMulGrad,
  checkMlpEpilogue,
  checkReduceAndTile,
  checkResidualEpilogue,
  type CheckResult,
  formatChecks,
  modelHeadAttentionCases,
  modelMatMulBiasCases,
  modelMatMulCases,
  smallHeadAttentionCases,
  smallMatMulBiasCases,
  smallMatMulCases,
} from "../lib/bench/kernel_check.ts";

const usage = "usage: deno task bench [--model tiny|small|base] [--batch N] [--backend webgpu|wasm|cpu] " +
  "[--steps N] [--warmup N] [--teacher clip-b16|micro] [--kernels fused|stock] [--no-phases] [--no-profile] " +
  "[--remat] [--gpu-pool-mib N] " +
  "[--gemm-big bm,bn,bk,tm,tn] [--gemm-small ...] [--threads N] [--json] [--out FILE]\n" +
  "       deno task bench --ops [same] [--only a,b] [--matmul-size N] [--reduce-size N] [--no-stock]\n" +
  "       deno task bench --check --backend webgpu [--out FILE]\n" +
  "       deno task bench --tune [--model ...] [--batch N[,N...]] [--teacher ...] [--precision f32|f16] " +
  "[--tune-quick] [--max-shapes N] [--out FILE] [--force]";
const strings = [
  "model",
  "batch",
  "backend",
  "steps",
  "warmup",
  "only",
  "matmul-size",
  "reduce-size",
  "out",
  "target-ms",
  "teacher",
  "kernels",
  "gemm-big",
  "gemm-small",
  "threads",
  "gpu-pool-mib",
  "precision",
  "max-shapes",
];
const booleans = [
  "ops",
  "json",
  "stock",
  "help",
  "phases",
  "profile",
  "check",
  "remat",
  "tune",
  "tune-quick",
  "force",
];
const fail = (msg: string): never => {
  console.error(`bench: ${msg}\n${usage}`);
  Deno.exit(2);
};
// `negatable` (std parseArgs: `--no-stock`) is not in lib/core/std.ts's ParseOptions, hence the variable.
const parseOptions = {
  string: strings,
  boolean: booleans,
  negatable: ["stock", "phases", "profile"],
  default: { stock: true, phases: true, profile: true },
  unknown: (arg: string) => arg.startsWith("-") ? fail(`unknown flag ${arg}`) : true,
};
const args = parseArgs(Deno.args, parseOptions);
if (args.help) {
  console.log(usage);
  Deno.exit(0);
}
const int = (flag: string, fallback: number): number => {
  const v = args[flag];
  if (v == null) return fallback;
  const n = Number(v);
  return Number.isInteger(n) && n > 0
    ? n
    : fail(`--${flag} takes a positive integer, got ${JSON.stringify(v)}`);
};
const model = (args.model as string | undefined) ?? "base";
if (!presetNames.includes(model as PresetName)) {
  fail(`--model ${model}: expected one of ${presetNames.join(", ")}`);
}
const backendArg = (args.backend as string | undefined) ?? "webgpu";
const backend = isBackendName(backendArg) ? backendArg : fail(
  `--backend ${backendArg}: expected ${backendNames.slice(0, -1).join(", ")} or ${backendNames.at(-1)}`,
);
const kernels = (args.kernels as string | undefined) ?? "fused";
if (!["fused", "stock"].includes(kernels)) fail(`--kernels ${kernels}: expected fused or stock`);
const teacher = (args.teacher as string | undefined) ?? "clip-b16";
if (!["clip-b16", "micro"].includes(teacher)) fail(`--teacher ${teacher}: expected clip-b16 or micro`);

// wasm: threads of the packed matmul (lib/core/kernels/gemm_pool.ts); 0 leaves products to tfjs's own kernels.
if (args.threads != null) {
  const n = Number(args.threads);
  if (!Number.isInteger(n) || n < 0) {
    fail(`--threads takes an integer >= 0, got ${JSON.stringify(args.threads)}`);
  }
  setGemmThreads(n);
}
const backendInfo = await selectBackend(backend).catch((e: Error) => fail(e.message));
// WebGPU: cap the pool of free buffers (lib/core/gpu_pool.ts; CAEV2_GPU_POOL_MIB does the same).
if (args["gpu-pool-mib"] != null) {
  const mib = Number(args["gpu-pool-mib"]);
  if (!(mib >= 0)) fail(`--gpu-pool-mib takes a number >= 0, got ${JSON.stringify(args["gpu-pool-mib"])}`);
  if (!capGpuPool(mib * 2 ** 20)) fail("--gpu-pool-mib applies to the webgpu backend only");
}
if (backend === "wasm") await gemmReady(); // measure with every matmul thread up from the first step
console.error(describeBackend(backendInfo));
registerDeviceGradients();
if (kernels === "fused") registerKernels();
else restoreStockKernels();
const tileFlag = (flag: string): Tile | undefined => {
  const v = args[flag] as string | undefined;
  if (v == null) return undefined;
  const [bm, bn, bk, tm, tn] = v.split(",").map(Number);
  return { bm, bn, bk, tm, tn };
};
try {
  setGemmTiles({ big: tileFlag("gemm-big"), small: tileFlag("gemm-small") });
} catch (e) {
  fail((e as Error).message);
}
// --precision: the step, --ops and --check run in it (lib/core/precision.ts); --tune tunes that precision.
const precisionArg = (args.precision as string | undefined) ?? "f32";
if (!(precisionNames as readonly string[]).includes(precisionArg)) {
  fail(`--precision ${precisionArg}: expected ${precisionNames.join(" or ")}`);
}
const precisionRefused = precisionProblem(
  precisionArg as Precision,
  backendInfo,
  kernels as "fused" | "stock",
);
if (precisionRefused !== undefined) fail(precisionRefused);
// The tuner plans each candidate at the precision it tunes; every other mode runs its steps in it.
if (!args.tune) setPrecision(precisionArg as Precision);

if (args.tune) {
  // The autotune pass (lib/bench/tune.ts). No table is installed first: the default rule is the baseline,
  // and an invalid table in the cache must not stop the tune that replaces it.
  if (backend !== "webgpu") fail("--tune needs --backend webgpu");
  if (kernels !== "fused") fail("--tune tunes the fused matmul: drop --kernels stock");
  const precision = precisionArg as MatMulPrecision;
  const batches = String(args.batch ?? "32").split(",").map((v) => {
    const n = Number(v);
    return Number.isInteger(n) && n > 0
      ? n
      : fail(`--batch takes positive integers, got ${JSON.stringify(v)}`);
  });
  const adapter = backendInfo.adapter ?? "unknown adapter";
  const out = (args.out as string | undefined) ?? tileCachePath(adapter) ??
    fail("no cache folder ($XDG_CACHE_HOME and $HOME are unset): pass --out FILE");
  await checkWritable(out, args.force as boolean).catch((e: Error) => fail(e.message));
  const quick = args["tune-quick"] as boolean;
  let shapes: ShapeCount[] = [];
  for (const b of batches) {
    const t0 = performance.now();
    const found = await stepShapes({
      model: model as PresetName,
      batch: b,
      teacher: teacher as TeacherName,
      limits: backendLimits(backendInfo),
    }).catch((e: Error) => fail(e.message));
    console.error(
      `tune: ${model} batch ${b}, teacher ${teacher}: ${found.length} distinct matmuls in one step ` +
        `(${found.reduce((s, c) => s + c.calls, 0)} calls; ${
          ((performance.now() - t0) / 1000).toFixed(1)
        } s)`,
    );
    shapes.push(...found);
  }
  // Most arithmetic per step first, so that --max-shapes keeps what matters.
  shapes.sort((x, y) => flopsOf(y.shape) * y.calls - flopsOf(x.shape) * x.calls);
  if (args["max-shapes"] != null) shapes = shapes.slice(0, int("max-shapes", shapes.length));
  console.error(
    `tune: ${shapes.length} shapes, ${quick ? "quick" : "full"} search, ranked by ${
      hasKernelTimer() ? "GPU kernel time (timestamp queries)" : "wall time"
    }`,
  );
  const t0 = performance.now();
  const tuned = `${model}, batch ${batches.join(",")}, teacher ${teacher}, ${precision}` +
    `${quick ? ", quick" : ""}${args["max-shapes"] != null ? `, ${shapes.length} largest shapes` : ""}`;
  const r = await tuneShapes(shapes, precision, {
    space: quick ? QUICK_SPACE : FULL_SPACE,
    timing: quick ? QUICK_TIMING : FULL_TIMING,
    log: (m) => console.error(m),
    // The table so far after each shape (checked writable above; each write atomic), so that a tune cut
    // short (a time limit, Ctrl-C) leaves the shapes it measured, and says it is partial.
    onShape: async (sofar, total) => {
      if (sofar.outcomes.length === total) return;
      const partial = `${tuned}; partial: ${sofar.outcomes.length} of ${total} shapes`;
      await writeTileTable(out, tileTableOf(adapter, partial, sofar), true);
    },
  }).catch((e: Error) => fail(e.message));
  await writeTileTable(out, tileTableOf(adapter, tuned, r), true).catch((e: Error) => fail(e.message));
  const failed = r.outcomes.length - r.entries.length;
  console.log(
    `tune: ${r.entries.length} of ${r.outcomes.length} shapes tuned in ${
      ((performance.now() - t0) / 1000).toFixed(0)
    } s${failed ? ` (${failed} without an entry)` : ""}; one step's calls of the tuned shapes take ${
      r.stepDefaultMs.toFixed(2)
    } ms (${r.timer} time) with the default rule, ${r.stepTunedMs.toFixed(2)} ms with the table (${
      (r.stepDefaultMs / Math.max(r.stepTunedMs, 1e-9)).toFixed(2)
    }x)\ntune: wrote ${out}`,
  );
  Deno.exit(0);
}

// The adapter's measured tile table, as every task installs it (lib/core/runtime.ts); not with tiles
// forced by --gemm-big / --gemm-small, which are then what is measured.
if (kernels === "fused" && args["gemm-big"] == null && args["gemm-small"] == null) {
  const note = await installTileTable(backendInfo).catch((e: Error) => {
    console.error(`bench: ${e.message}`); // a table to fix, not a flag: no usage text
    return Deno.exit(1);
  });
  if (note !== undefined) console.error(note);
}

if (args.check) {
  // Kernel correctness at model shapes against the plain-tfjs references (lib/bench/kernel_check.ts).
  if (backend !== "webgpu") fail("--check needs --backend webgpu");
  const rs: CheckResult[] = [];
  const step = async (what: string, f: () => Promise<CheckResult[]>) => {
    const t0 = performance.now();
    const r = await f();
    rs.push(...r);
    // Each group's lines as it finishes (a run cut short by a time limit still shows what it checked).
    console.error(`${formatChecks(r)}\ncheck ${what}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  };
  await step("matmul", () => checkMatMul([...smallMatMulCases, ...modelMatMulCases]));
  await step("matmul grad", () => checkMatMulGrad());
  // Double-buffered tiles with written-out slice loops (a tile table's choices): the same products and tolerance.
  await step(
    "matmul double-buffered",
    () => checkMatMul([...smallMatMulCases, ...modelMatMulCases], 1e-5, "doubled"),
  );
  // A shared by subgroup shuffles, where the device has subgroups (nothing checked, and said so, elsewhere).
  await step("matmul subgroup", async () => {
    const r = await checkMatMul([...smallMatMulCases, ...modelMatMulCases], 1e-5, "subgroup");
    if (r.length === 0) console.error("check matmul subgroup: skipped, the device has no subgroups");
    return r;
  });
  // The bias epilogue of the linear layers (f32, and f16 where the adapter has shader-f16).
  await step("matmul+bias", () => checkMatMulBias([...smallMatMulBiasCases, ...modelMatMulBiasCases]));
  // The teacher's MLP (and inference): bias and QuickGELU / GELU in the epilogue; ViT-B/16 at batch 32, ViT-T.
  await step(
    "matmul+bias+act",
    () =>
      checkMlpEpilogue([{ rows: 32 * 197, dim: 768, hidden: 3072 }, {
        rows: 8 * 197,
        dim: 192,
        hidden: 768,
      }]),
  );
  await step(
    "layernorm",
    async () => [...await checkLayerNorm([32, 99, 768]), ...await checkLayerNorm([8, 167, 192])],
  );
  await step(
    "gelu",
    async () => [...await checkGelu([3168, 3072], false), ...await checkGelu([32, 197, 3072], true)],
  );
  await step("adamw", () => checkAdamw());
  // The teacher's residual adds in the epilogues of its attention output and second MLP layer (CLIP-B/16).
  await step(
    "matmul+bias+residual",
    () =>
      checkResidualEpilogue([{ rows: 32 * 197, dim: 768, out: 768 }, {
        rows: 32 * 197,
        dim: 3072,
        out: 768,
      }]),
  );
  // The MLP's backward: the activation's gradient in the epilogue of the product that makes its dy.
  await step(
    "matmul+act' epilogue",
    () =>
      checkMatMulActGrad([{ rows: 32 * 99, dim: 768, hidden: 3072 }, {
        rows: 64 * 99,
        dim: 192,
        hidden: 768,
      }]),
  );
  // Attention on heads in place (CaeHeadMatMul): bit for bit the transposes + attentionCore it replaces.
  await step(
    "head attention",
    () => checkHeadAttention([...smallHeadAttentionCases, ...modelHeadAttentionCases]),
  );
  if ((backendInfo.features ?? []).includes("shader-f16")) {
    // --precision f16's kernels: f16 products at the model's shapes (both accumulations), packed saves.
    await step("matmul f16", () => checkMatMulF16([...smallMatMulCases, ...modelMatMulCases]));
    await step("f16 pack", () => checkHalfPack([32, 99, 3072]));
    await step("head attention f16", async () => {
      setPrecision("f16");
      try {
        return await checkHeadAttention([...smallHeadAttentionCases, ...modelHeadAttentionCases]);
      } finally {
        setPrecision(precisionArg as Precision);
      }
    });
  } else console.error("check: no shader-f16 on this adapter; the f16 kernels are not checked");
  await step("reduce/tile", () => checkReduceAndTile(10_000_000));
  restoreStockKernels();
  console.log(formatChecks(rs));
  const failed = rs.filter((r) => !r.ok).length;
  console.log(failed === 0 ? `all ${rs.length} checks passed` : `${failed} of ${rs.length} checks FAILED`);
  if (args.out) await Deno.writeTextFile(args.out as string, JSON.stringify(rs, null, 2) + "\n");
  Deno.exit(failed === 0 ? 0 : 1);
}

const gpu = (navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
const adapterInfo = async (): Promise<Record<string, unknown> | null> => {
  if (backend !== "webgpu" || gpu == null) return null;
  const a = await gpu.requestAdapter() as
    | { info?: Record<string, unknown>; features?: Iterable<string> }
    | null;
  if (a == null) return null;
  const i = a.info ?? {};
  return {
    vendor: i.vendor,
    architecture: i.architecture,
    device: i.device,
    description: i.description,
    features: [...(a.features ?? [])].sort(),
  };
};

if (!args.ops) {
  const result = await runStepBench({
    model: model as PresetName,
    batch: int("batch", backend === "webgpu" ? 32 : 8),
    steps: int("steps", 3),
    warmup: int("warmup", 2),
    teacher: teacher as TeacherName,
    phases: args.phases as boolean,
    profile: args.profile as boolean,
    remat: args.remat as boolean,
    limits: backendLimits(backendInfo),
    log: (m) => console.error(m),
  }).catch((e: Error) => fail(e.message));
  const report = stepReport({
    date: new Date().toISOString(),
    deno: Deno.version.deno,
    tfjs: tf.version_core,
    backend,
    machine: backend === "webgpu" && !backendInfo.fallbackAdapter ? "h200" : "cpu2",
    adapter: await adapterInfo(),
    kernelTimer: hasKernelTimer(),
    options: {
      kernels,
      precision: precisionArg,
      steps: int("steps", 3),
      warmup: int("warmup", 2),
      teacher,
      remat: args.remat as boolean,
    },
  }, result);
  const json = JSON.stringify(report, null, 2);
  if (args.out) await Deno.writeTextFile(args.out as string, json + "\n");
  console.log(args.json ? json : formatStepReport(report));
  Deno.exit(0);
}

const shape = benchShape(model as PresetName, int("batch", 32), {
  matmulSize: int("matmul-size", 4096),
  reduceSize: int("reduce-size", 10_000_000),
});
const only = (args.only as string | undefined)?.split(",").map((s) => s.trim()).filter(Boolean);
const cases = opCases(shape, { stock: args.stock as boolean }).filter((c) =>
  only == null || only.some((o) => c.name === o || c.name.startsWith(`${o}[`))
);
if (cases.length === 0) fail(`--only ${args.only}: no such op`);
const log = (msg: string) => console.error(msg);

const floorMs = await readbackFloorMs();
log(`bench: backend ${backend}, readback floor ${floorMs.toFixed(2)} ms, ${cases.length} ops`);
const options = {
  warmup: int("warmup", 2),
  steps: int("steps", 10),
  targetMs: int("target-ms", 100),
  budgetMs: 8000,
  floorMs,
};

const measure = async (c: OpCase): Promise<OpResult> => {
  const gradients = c.gradients ?? "device";
  if (gradients === "stock") restoreStockGradients();
  const { run, dispose } = c.setup();
  try {
    const t = await timeOp(run, options);
    return withRates({
      name: c.name,
      shape: c.shape,
      gradients,
      ...t,
      flops: c.flops ?? null,
      bytes: c.bytes ?? null,
    });
  } finally {
    dispose();
    registerDeviceGradients();
  }
};

const results: OpResult[] = [];
for (const c of cases) {
  const t0 = performance.now();
  const r = await measure(c);
  results.push(r);
  log(
    `  ${c.name}: ${r.wallMs.toFixed(3)} ms wall, ${r.kernelMs?.toFixed(3) ?? "-"} ms kernel ` +
      `(${r.reps} reps x ${r.samplesMs.length}, ${((performance.now() - t0) / 1000).toFixed(1)} s)`,
  );
}

const report: BenchReport = {
  kind: "ops",
  meta: {
    date: new Date().toISOString(),
    deno: Deno.version.deno,
    tfjs: tf.version_core,
    backend,
    adapter: await adapterInfo(),
    kernelTimer: hasKernelTimer(),
    readbackFloorMs: floorMs,
    shape,
    options: { ...options, only: only ?? null, stock: args.stock, kernels, precision: precisionArg },
  },
  results,
};
const json = JSON.stringify(report, null, 2);
if (args.out) await Deno.writeTextFile(args.out as string, json + "\n");
console.log(args.json ? json : formatTable(report));
