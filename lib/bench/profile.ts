/**
 * Kernel profile of one piece of tfjs work: `tf.profile` kernel records aggregated by kernel name (and the
 * heaviest name + input-shape pairs), so a report can say what dominates a training step.
 *
 * On WebGPU with `timestamp-query` the kernel times are GPU times of each kernel's compute pass (tfjs
 * puts every timed kernel in its own pass, so a profiled step runs slower than a plain one: use it for
 * shares, not for throughput). On the cpu and wasm backends they are the wall time of each synchronous
 * kernel call.
 *
 * @module
 */
import { tf } from "../deps.ts";

/** Time spent in one kernel name. */
export interface KernelRow {
  /** tfjs kernel name (e.g. "BatchMatMul") or a name + input shapes for the detailed list. */
  readonly name: string;
  readonly calls: number;
  /** Sum of kernel ms. */
  readonly ms: number;
  /** Share of the total kernel time, 0..1. */
  readonly share: number;
}

/** What {@link profileKernels} measured. */
export interface KernelProfile {
  /** Sum of all kernel times, ms. */
  readonly totalKernelMs: number;
  /** Wall ms of the profiled call (kernel timing included: slower than an unprofiled run). */
  readonly wallMs: number;
  readonly kernelCalls: number;
  /** Peak live tensor bytes during the call (tfjs engine bookkeeping, all backends). */
  readonly peakBytes: number;
  /** By kernel name, heaviest first. */
  readonly byName: readonly KernelRow[];
  /** By kernel name and input shapes, the `top` heaviest. */
  readonly byShape: readonly KernelRow[];
}

/** One kernel record as tf.profile gives it (the fields this module reads). */
export interface KernelRecord {
  readonly name: string;
  readonly kernelTimeMs: number | { error: string } | Promise<number | { error: string }>;
  readonly inputShapes?: readonly (readonly number[] | null | undefined)[];
}

const rows = (m: Map<string, { calls: number; ms: number }>, total: number): KernelRow[] =>
  [...m.entries()]
    .map(([name, v]) => ({ name, calls: v.calls, ms: v.ms, share: total > 0 ? v.ms / total : 0 }))
    .sort((a, b) => b.ms - a.ms);

/** Aggregates kernel records (times already resolved to numbers; errors count as 0). */
export const aggregateKernels = (
  kernels: readonly { name: string; ms: number; shapes: string }[],
  top = 25,
): Pick<KernelProfile, "totalKernelMs" | "kernelCalls" | "byName" | "byShape"> => {
  const byName = new Map<string, { calls: number; ms: number }>();
  const byShape = new Map<string, { calls: number; ms: number }>();
  let total = 0;
  for (const k of kernels) {
    total += k.ms;
    for (const [m, key] of [[byName, k.name], [byShape, `${k.name} ${k.shapes}`]] as const) {
      const e = m.get(key) ?? { calls: 0, ms: 0 };
      e.calls += 1;
      e.ms += k.ms;
      m.set(key, e);
    }
  }
  return {
    totalKernelMs: total,
    kernelCalls: kernels.length,
    byName: rows(byName, total),
    byShape: rows(byShape, total).slice(0, top),
  };
};

const shapesOf = (s: KernelRecord["inputShapes"]) => {
  const all = (s ?? []).map((x) => (x == null ? "-" : `[${x.join(",")}]`));
  return all.length <= 4 ? all.join(" ") : `${all.slice(0, 4).join(" ")} ... (${all.length} inputs)`;
};

/**
 * Runs `f` under `tf.profile` and aggregates its kernels. `f` returns the tensors to keep (the caller
 * owns them and any other tensors `f` created outside a tidy).
 */
export const profileKernels = async (
  f: () => tf.Tensor | tf.Tensor[],
  top = 25,
): Promise<KernelProfile> => {
  const t0 = performance.now();
  const info = await tf.profile(f);
  const wallMs = performance.now() - t0;
  const kernels: { name: string; ms: number; shapes: string }[] = [];
  const backend = tf.getBackend();
  for (const k of info.kernels as unknown as KernelRecord[]) {
    // A custom-gradient op (lib/core/autodiff.ts customOp) is profiled as a pseudo-kernel named by its
    // scope whose time is its inner kernels' time, which are listed too: leave it out, or time counts twice.
    if (tf.getKernel(k.name, backend) === undefined) continue;
    const t = await k.kernelTimeMs;
    kernels.push({ name: k.name, ms: typeof t === "number" ? t : 0, shapes: shapesOf(k.inputShapes) });
  }
  return { ...aggregateKernels(kernels, top), wallMs, peakBytes: info.peakBytes };
};
