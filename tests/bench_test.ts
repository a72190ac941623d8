import { tf } from "../lib/deps.ts";
import { benchShape, opCases } from "../lib/bench/ops.ts";
import { median, readbackFloorMs, timeOp } from "../lib/bench/timing.ts";
import {
  type BenchReport,
  formatStepReport,
  formatTable,
  stepReport,
  withRates,
} from "../lib/bench/report.ts";
import { runStepBench } from "../lib/bench/step.ts";
import { anchorFor } from "../lib/bench/anchors.ts";
import { aggregateKernels } from "../lib/bench/profile.ts";
import { registerDeviceGradients } from "../lib/core/gradients.ts";
import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertGreater,
  assertStringIncludes,
} from "../lib/core/std.ts";

Deno.test("median of odd and even lists", () => {
  assertEquals(median([3, 1, 2]), 2);
  assertEquals(median([4, 1, 3, 2]), 2.5);
});

Deno.test("bench shapes follow the presets: ViT-B/16 at 224 masking 98 leaves 99 tokens", () => {
  const b = benchShape("base", 32);
  assertEquals([b.tokens, b.dim, b.heads, b.hidden], [99, 768, 12, 3072]);
  assertEquals(b.batch * b.tokens, 3168); // the [3168, 3072] of BENCHMARKS.md's reference figures
  assertEquals(benchShape("tiny", 8).tokens, 196 - 30 + 1);
  assertEquals(benchShape("small", 8).tokens, 196 - 49 + 1);
});

Deno.test("rates: 2 n^3 flops in 1 ms and bytes in 1 ms", () => {
  const r = withRates({
    name: "m",
    shape: "",
    gradients: "device",
    wallMs: 1,
    kernelMs: 0.5,
    reps: 1,
    samplesMs: [1],
    flops: 2 * 4096 ** 3,
    bytes: 1e9,
  });
  assertAlmostEquals(r.tflops!, 137.4, 0.1);
  assertAlmostEquals(r.kernelTflops!, 274.9, 0.1);
  assertAlmostEquals(r.gbps!, 1000, 1e-9);
  assertEquals(withRates({ ...r, kernelMs: null }).kernelGbps, null);
});

Deno.test({
  name: "every op case runs on cpu at a tiny shape, leaks no tensor, and the report prints",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await tf.setBackend("cpu");
    registerDeviceGradients();
    const shape = benchShape("tiny", 1, { matmulSize: 64, reduceSize: 5000 });
    const cases = opCases(shape, { stock: true });
    const names = cases.map((c) => c.name);
    for (const n of ["matmul-square", "attn-qk", "softmax", "gelu-erf", "layernorm", "grad-sum-sq[stock]"]) {
      assert(names.includes(n), `missing case ${n}`);
    }
    assertEquals(new Set(names).size, names.length, "unique names");
    const before = tf.memory().numTensors;
    for (const c of cases) {
      const { run, dispose } = c.setup();
      const y = run();
      assert((await y.data()).every(Number.isFinite), `${c.name} gives finite values`);
      y.dispose();
      dispose();
    }
    assertEquals(tf.memory().numTensors, before, "op cases dispose what they make");

    const floorMs = await readbackFloorMs(3);
    const { run, dispose } = cases[0].setup();
    const t = await timeOp(run, { warmup: 1, steps: 3, targetMs: 5, budgetMs: 1000, floorMs });
    dispose();
    assertEquals(tf.memory().numTensors, before, "timing disposes every run's output");
    assertGreater(t.wallMs, 0);
    assertEquals(t.samplesMs.length, 3);
    const report: BenchReport = {
      kind: "ops",
      meta: {
        date: "",
        deno: Deno.version.deno,
        tfjs: tf.version_core,
        backend: "cpu",
        adapter: null,
        kernelTimer: true,
        readbackFloorMs: floorMs,
        shape,
        options: {},
      },
      results: [
        withRates({
          ...t,
          name: cases[0].name,
          shape: cases[0].shape,
          gradients: "device",
          flops: cases[0].flops ?? null,
          bytes: null,
        }),
      ],
    };
    const table = formatTable(report);
    assertStringIncludes(table, "| matmul-square");
    assertStringIncludes(table, "FLOP/s");
    assertEquals(JSON.parse(JSON.stringify(report)).results[0].name, "matmul-square");
  },
});

Deno.test({
  name: "full-step benchmark: micro model and teacher on cpu, phases, profile, report with anchors",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await tf.setBackend("cpu");
    registerDeviceGradients();
    const before = tf.memory().numTensors;
    const r = await runStepBench({
      model: "micro",
      batch: 1,
      steps: 1,
      warmup: 1,
      teacher: "micro",
      phases: true,
      profile: true,
    });
    assertEquals(tf.memory().numTensors, before, "the benchmark disposes everything it made");
    assert(Number.isFinite(r.lastLoss) && r.lastLoss > 0, `loss ${r.lastLoss}`);
    assertGreater(r.imagesPerSec, 0);
    assert(r.phases !== null && r.phases.teacherMs >= 0 && r.phases.updateMs >= 0);
    assert(r.profile !== null && r.profile.kernelCalls > 100, "profile has kernels");
    assert(r.profile!.byName.some((k) => k.name === "BatchMatMul"), "matmuls profiled");
    assertGreater(r.memory.peakTensorBytes!, 0);
    const report = stepReport({
      date: "",
      deno: Deno.version.deno,
      tfjs: tf.version_core,
      backend: "cpu",
      machine: "cpu2",
      adapter: null,
      kernelTimer: true,
      options: {},
    }, r);
    assertEquals(report.anchor, null, "no PyTorch figure for micro");
    const text = formatStepReport(report);
    assertStringIncludes(text, "img/s");
    assertStringIncludes(text, "| BatchMatMul |");
  },
});

Deno.test("anchors: the PyTorch reference rows and the ratio to PyTorch", () => {
  assertEquals(anchorFor("h200", "base", 256)?.pytorchImagesPerSec, 375);
  assertEquals(anchorFor("h200", "tiny", 256)?.targetImagesPerSec, 400);
  assertEquals(anchorFor("cpu2", "tiny", 8)?.pytorchImagesPerSec, 1.96);
  assertEquals(anchorFor("h200", "base", 64), undefined);
  const agg = aggregateKernels([
    { name: "A", ms: 3, shapes: "[1]" },
    { name: "B", ms: 1, shapes: "[2]" },
    { name: "A", ms: 1, shapes: "[3]" },
  ]);
  assertEquals(agg.byName.map((k) => [k.name, k.calls, k.ms]), [["A", 2, 4], ["B", 1, 1]]);
  assertAlmostEquals(agg.byName[0].share, 0.8, 1e-12);
});
