/**
 * Timing of tfjs work on any backend. GPU work is asynchronous: a sample runs the op `reps` times back
 * to back, then awaits `.data()` of a one-element slice of the last result (which waits for the queue
 * to drain), and subtracts the readback floor measured the same way on a trivial op. Where the backend
 * reports kernel time (`tf.time`: WebGPU with `timestamp-query`, and the CPU backends, where it is the
 * wall time of the synchronous call), that is recorded too.
 *
 * @module
 */
import { tf } from "../deps.ts";

/** Median of a non-empty list. */
export const median = (xs: readonly number[]): number => {
  if (xs.length === 0) throw new Error("median of an empty list");
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Waits until `t` has been computed, by reading back one element of it. */
export const settle = async (t: tf.Tensor): Promise<void> => {
  const probe = tf.tidy(() => tf.slice(tf.reshape(t, [-1]), [0], [Math.min(1, t.size)]));
  await probe.data();
  probe.dispose();
};

/**
 * Median time of a one-element readback after a trivial op on the current backend: what every sample
 * pays once on top of its work (on a GPU the queue round trip, ~12 ms on the H200 under Deno).
 */
export const readbackFloorMs = async (samples = 10): Promise<number> => {
  const x = tf.fill([1024], 1);
  const times: number[] = [];
  for (let i = 0; i < samples + 2; i++) {
    const t0 = performance.now();
    const y = tf.add(x, i);
    await settle(y);
    y.dispose();
    if (i >= 2) times.push(performance.now() - t0);
  }
  x.dispose();
  return median(times);
};

/** Whether `tf.time` reports real kernel times on the current backend. */
export const hasKernelTimer = (): boolean => {
  if (tf.getBackend() !== "webgpu") return true;
  return (tf.backend() as unknown as { supportTimestampQuery?: boolean }).supportTimestampQuery === true;
};

/** How to time one op. */
export interface TimingOptions {
  /** Untimed runs first (shader compilation, buffer pools). */
  readonly warmup: number;
  /** Timed samples (each of `reps` runs); fewer when `budgetMs` runs out after 3. */
  readonly steps: number;
  /** Aim for samples of about this many milliseconds of work (sets `reps`, 1 to 200). */
  readonly targetMs: number;
  /** Stop sampling once this much time is spent and at least 3 samples are in. */
  readonly budgetMs: number;
  /** The readback floor to subtract from each sample ({@link readbackFloorMs}). */
  readonly floorMs: number;
}

/** One op's timing. */
export interface Timing {
  /** Median wall time per run, readback floor subtracted, in ms. */
  readonly wallMs: number;
  /** Median kernel time per run (`tf.time().kernelMs`), or null where the backend has no timer. */
  readonly kernelMs: number | null;
  /** Runs per sample. */
  readonly reps: number;
  /** Wall time per run of each sample, in ms. */
  readonly samplesMs: readonly number[];
}

const runAndSettle = async (run: () => tf.Tensor, reps: number): Promise<number> => {
  const t0 = performance.now();
  let last: tf.Tensor | null = null;
  for (let r = 0; r < reps; r++) {
    const y = run();
    last?.dispose();
    last = y;
  }
  if (last != null) {
    await settle(last);
    last.dispose();
  }
  return performance.now() - t0;
};

/** Times `run` (which returns a fresh tensor the timer disposes) on the current backend. */
export const timeOp = async (run: () => tf.Tensor, o: TimingOptions): Promise<Timing> => {
  for (let i = 0; i < o.warmup; i++) await runAndSettle(run, 1);
  const one = Math.max(await runAndSettle(run, 1) - o.floorMs, 0.01);
  const reps = Math.max(1, Math.min(200, Math.round(o.targetMs / one)));
  const samples: number[] = [];
  const start = performance.now();
  while (samples.length < o.steps && (samples.length < 3 || performance.now() - start < o.budgetMs)) {
    samples.push(Math.max(await runAndSettle(run, reps) - o.floorMs, 0) / reps);
  }
  let kernelMs: number | null = null;
  if (hasKernelTimer()) {
    const ks: number[] = [];
    for (let i = 0; i < Math.min(samples.length, 5); i++) {
      const info = await tf.time(() => run().dispose());
      ks.push(typeof info.kernelMs === "number" ? info.kernelMs : NaN);
    }
    kernelMs = median(ks);
  }
  return { wallMs: median(samples), kernelMs, reps, samplesMs: samples };
};
