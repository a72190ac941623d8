/**
 * Benchmark results as data (JSON) and as a table for people.
 *
 * @module
 */
import type { BenchShape, GradientSet } from "./ops.ts";

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
