/**
 * Benchmark results as data (JSON) and as a table for people.
 *
 * @module
 */
import type { BenchShape, GradientSet } from "./ops.ts";
import { type Anchor, anchorFor, type Machine } from "./anchors.ts";
import type { StepBenchResult } from "./step.ts";

/** One measured op. */
export interface OpResult {
  readonly name: string;
  readonly shape: string;
  readonly gradients: GradientSet;
  /** Median wall ms per run, readback floor subtracted. */
  readonly wallMs: number;
  /** Median kernel ms per run, or null where the backend has no timer. */
  readonly kernelMs: number | null;
  readonly reps: number;
  readonly samplesMs: readonly number[];
  readonly flops: number | null;
  readonly bytes: number | null;
  /** flops / wall time, in TFLOP/s. */
  readonly tflops: number | null;
  /** bytes / wall time, in GB/s. */
  readonly gbps: number | null;
  /** The same rates over kernel time. */
  readonly kernelTflops: number | null;
  readonly kernelGbps: number | null;
}

/** Where and how the benchmark ran. */
export interface BenchMeta {
  readonly date: string;
  readonly deno: string;
  readonly tfjs: string;
  readonly backend: string;
  /** WebGPU adapter: vendor, architecture, device, description, features; null elsewhere. */
  readonly adapter: Readonly<Record<string, unknown>> | null;
  readonly kernelTimer: boolean;
  readonly readbackFloorMs: number;
  readonly shape: BenchShape;
  readonly options: Readonly<Record<string, unknown>>;
}

/** A whole run: what the `--json` flag prints. */
export interface BenchReport {
  readonly kind: "ops";
  readonly meta: BenchMeta;
  readonly results: readonly OpResult[];
}

/** An {@link OpResult} with its rates computed from flops/bytes and the times. */
export const withRates = (
  r: Omit<OpResult, "tflops" | "gbps" | "kernelTflops" | "kernelGbps">,
): OpResult => {
  const rate = (work: number | null, ms: number | null, unit: number) =>
    work == null || ms == null || !(ms > 0) ? null : work / (ms * 1e-3) / unit;
  return {
    ...r,
    tflops: rate(r.flops, r.wallMs, 1e12),
    gbps: rate(r.bytes, r.wallMs, 1e9),
    kernelTflops: rate(r.flops, r.kernelMs, 1e12),
    kernelGbps: rate(r.bytes, r.kernelMs, 1e9),
  };
};

const ms = (x: number | null) => (x == null || Number.isNaN(x) ? "-" : x < 10 ? x.toFixed(3) : x.toFixed(1));
const rateText = (tf: number | null, gb: number | null) =>
  tf != null
    ? tf >= 0.1 ? `${tf.toFixed(2)} TFLOP/s` : `${(tf * 1e3).toFixed(2)} GFLOP/s`
    : gb != null
    ? `${gb.toFixed(gb >= 10 ? 1 : 2)} GB/s`
    : "";

/** The report as a plain-text table (markdown-compatible). */
export const formatTable = (rep: BenchReport): string => {
  const { meta } = rep;
  const a = meta.adapter;
  const head = [
    `backend ${meta.backend}${
      a ? ` (${[a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(" ")})` : ""
    }, ` +
    `tfjs ${meta.tfjs}, deno ${meta.deno}, kernel timer ${meta.kernelTimer ? "yes" : "no"}, ` +
    `readback floor ${ms(meta.readbackFloorMs)} ms`,
    `shapes: ${meta.shape.model} B=${meta.shape.batch} N=${meta.shape.tokens} D=${meta.shape.dim} ` +
    `H=${meta.shape.heads} hidden=${meta.shape.hidden}`,
    "",
  ];
  const rows = rep.results.map((r) => [
    r.name,
    r.shape,
    ms(r.wallMs),
    rateText(r.tflops, r.gbps),
    ms(r.kernelMs),
    rateText(r.kernelTflops, r.kernelGbps),
    String(r.reps),
  ]);
  const header = ["op", "shape", "wall ms", "wall rate", "kernel ms", "kernel rate", "reps"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  return [
    ...head,
    line(header),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map(line),
  ].join("\n");
};

// ---------------------------------------------------------------------------------------------------
// Full training steps

/** A full-step run: what `deno task bench --model ...` prints with `--json`. */
export interface StepReport {
  readonly kind: "step";
  readonly meta: Omit<BenchMeta, "shape" | "readbackFloorMs"> & { readonly machine: Machine };
  readonly result: StepBenchResult;
  /** The PyTorch reference row (BENCHMARKS.md) for this machine, preset and batch, if any. */
  readonly anchor: Anchor | null;
  /** imagesPerSec / PyTorch's, or null without an anchor. */
  readonly ratioToPytorch: number | null;
}

/** Builds the report of a step run. */
export const stepReport = (
  meta: StepReport["meta"],
  result: StepBenchResult,
): StepReport => {
  const anchor = anchorFor(meta.machine, result.model, result.batch) ?? null;
  return {
    kind: "step",
    meta,
    result,
    anchor,
    ratioToPytorch: anchor ? result.imagesPerSec / anchor.pytorchImagesPerSec : null,
  };
};

const GiB = (n: number | null | undefined) => (n == null ? "-" : `${(n / 2 ** 30).toFixed(2)} GiB`);
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

/** The step report for people: throughput, phases, memory, the top kernels. */
export const formatStepReport = (rep: StepReport, top = 15): string => {
  const { meta, result: r, anchor } = rep;
  const a = meta.adapter;
  const lines = [
    `${meta.date} backend ${meta.backend}${
      a ? ` (${[a.vendor, a.device, a.description].filter(Boolean).join(" ")})` : ""
    }, tfjs ${meta.tfjs}, deno ${meta.deno}, options ${JSON.stringify(meta.options)}`,
    `model ${r.model} (${(r.studentParams / 1e6).toFixed(1)} M params), teacher ${r.teacher} (${
      (r.teacherParams / 1e6).toFixed(1)
    } M), batch ${r.batch}, ${r.tokens} encoder tokens/image, ${r.numMasked} masked`,
    `step ${ms(r.stepMs)} ms (median of ${r.stepSamplesMs.length}; first ${ms(r.firstStepMs)} ms) = ${
      r.imagesPerSec.toFixed(2)
    } img/s` +
    (anchor
      ? `; PyTorch ${anchor.pytorchImagesPerSec} img/s -> ratio ${rep.ratioToPytorch!.toFixed(3)}` +
        (anchor.targetImagesPerSec ? `; target ${anchor.targetImagesPerSec} img/s` : "")
      : ""),
  ];
  if (r.phases) {
    const p = r.phases;
    lines.push(
      `phases (ms, each alone): teacher ${ms(p.teacherMs)} | student fwd ${ms(p.studentForwardMs)} | ` +
        `student bwd ${ms(p.studentBackwardMs)} | update ${ms(p.updateMs)} | sum ${ms(p.sumMs)}`,
    );
  }
  lines.push(
    `memory: peak live tensors ${GiB(r.memory.peakTensorBytes)} (distinct data ${
      GiB(r.memory.peakBufferBytes)
    }; estimated before the run ${GiB(r.memory.estimatedPeakBytes)}), GPU buffers held ${
      GiB(r.memory.gpuAllocatedBytes)
    } (at most ${GiB(r.memory.gpuPeakBytes)})` +
      (anchor?.pytorchPeakBytes ? ` (PyTorch peak ${GiB(anchor.pytorchPeakBytes)})` : ""),
  );
  if (r.profile) {
    const p = r.profile;
    lines.push(
      `profile of one step: ${p.kernelCalls} kernels, ${ms(p.totalKernelMs)} ms kernel time, ${
        ms(p.wallMs)
      } ms wall while profiling`,
      "",
      "| kernel | calls | ms | share |",
      "| --- | --- | --- | --- |",
      ...p.byName.slice(0, top).map((k) => `| ${k.name} | ${k.calls} | ${ms(k.ms)} | ${pct(k.share)} |`),
      "",
      "| kernel and input shapes | calls | ms | share |",
      "| --- | --- | --- | --- |",
      ...p.byShape.slice(0, top).map((k) => `| ${k.name} | ${k.calls} | ${ms(k.ms)} | ${pct(k.share)} |`),
    );
  }
  return lines.join("\n");
};
