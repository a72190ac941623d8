/**
 * `deno task bench --ops [--model tiny|small|base] [--batch N] [--backend webgpu|wasm|cpu] [--steps N]
 *  [--warmup N] [--only a,b] [--matmul-size N] [--reduce-size N] [--no-stock] [--json] [--out FILE]`
 *
 * Op-level microbenchmarks at the shapes of one CAE v2 step (lib/bench/ops.ts): median ms per op after
 * warmup, readback floor subtracted, kernel ms where the backend has a timer, and TFLOP/s or GB/s. The
 * full training-step benchmark (`--model` without `--ops`) arrives with phase 2.
 *
 * On the H200 device machine (see /work/shared/ANCHORS.md). Once, here:
 *
 * ```sh
 * npm install --prefix .tools deno@2.9.6
 * xz -T2 -6 -c .tools/node_modules/@deno/linux-x64-glibc/deno > .tools/deno.xz
 * deno bundle --platform deno tasks/bench.ts -o .tools/bench.js   # re-run after every change
 * # .gl: the Vulkan loader debs, /work/.library/device/README.md ("apt-get download libvulkan1 ...")
 * ```
 *
 * then `run` with `carry: [".tools/deno.xz", ".tools/bench.js", ".gl"]` and the command:
 *
 * ```sh
 * for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; xz -dc .tools/deno.xz > /tmp/deno && chmod +x /tmp/deno &&
 * export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json &&
 * /tmp/deno run -A --no-config .tools/bench.js --ops --backend webgpu --out $OUT/ops-base-b32.json 2>&1 | tee $OUT/ops.log
 * ```
 *
 * @module
 */
import { tf } from "../lib/deps.ts";
import { parseArgs } from "../lib/core/std.ts";
import { registerDeviceGradients, restoreStockGradients } from "../lib/core/gradients.ts";
import { type BackendName, describeBackend, selectBackend } from "../lib/core/backend.ts";
import { benchShape, type OpCase, opCases } from "../lib/bench/ops.ts";
import { hasKernelTimer, readbackFloorMs, timeOp } from "../lib/bench/timing.ts";
import { type BenchReport, formatTable, type OpResult, withRates } from "../lib/bench/report.ts";
import { type PresetName, presetNames } from "../lib/models/presets.ts";

const usage =
  "usage: deno task bench --ops [--model tiny|small|base] [--batch N] [--backend webgpu|wasm|cpu] " +
  "[--steps N] [--warmup N] [--only a,b] [--matmul-size N] [--reduce-size N] [--no-stock] [--json] [--out FILE]";
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
];
const booleans = ["ops", "json", "stock", "help"];
const fail = (msg: string): never => {
  console.error(`bench: ${msg}\n${usage}`);
  Deno.exit(2);
};
// `negatable` (std parseArgs: `--no-stock`) is not in lib/core/std.ts's ParseOptions, hence the variable.
const parseOptions = {
  string: strings,
  boolean: booleans,
  negatable: ["stock"],
  default: { stock: true },
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
if (!args.ops) {
  fail(
    "the full training-step benchmark lands with the model wiring (phase 2); use --ops for the op benchmarks",
  );
}
const backend = (args.backend as string | undefined) ?? "webgpu";
if (!["webgpu", "wasm", "cpu"].includes(backend)) fail(`--backend ${backend}: expected webgpu, wasm or cpu`);

const backendInfo = await selectBackend(backend as BackendName).catch((e: Error) => fail(e.message));
console.error(describeBackend(backendInfo));
registerDeviceGradients();

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
    options: { ...options, only: only ?? null, stock: args.stock },
  },
  results,
};
const json = JSON.stringify(report, null, 2);
if (args.out) await Deno.writeTextFile(args.out as string, json + "\n");
console.log(args.json ? json : formatTable(report));
