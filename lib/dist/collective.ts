/**
 * The collective operations data-parallel training needs, as a small interface that any engine can
 * implement: Open MPI through FFI (lib/dist/mpi.ts), or {@link single} for one process (and for tests).
 *
 * Every operation works on host memory (typed arrays): gradients are read back from the device, summed
 * across ranks, and uploaded again. Sums are of float32 values in float32, in the engine's order.
 *
 * @module
 */

/** One process's view of the job. */
export interface Collective {
  /** This process's rank, 0 .. size - 1. Rank 0 alone writes the run directory. */
  readonly rank: number;
  /** Processes in the job. */
  readonly size: number;
  /** This process's rank among those on its machine (which device it should use). */
  readonly localRank: number;
  /** The engine, for messages ("mpi (Open MPI 4.1.4)", "single process"). */
  readonly name: string;
  /** Sums `data` element-wise over every rank, in place: each rank ends with the same sums. */
  allReduceSum(data: Float32Array): Promise<void>;
  /** Copies `data` of rank `root` into every rank's `data` (same length everywhere), in place. */
  broadcast(data: Uint8Array | Float32Array | Int32Array, root: number): Promise<void>;
  /** Returns once every rank has called it. */
  barrier(): Promise<void>;
  /**
   * Ends the whole job at once, every rank, with `code` (a rank that fails must not leave the others
   * waiting in a collective). Does not return.
   */
  abort(code: number, reason: string): never;
  /** Leaves the job cleanly (after the last collective). */
  finalize(): void;
}

/** The collective of a job of one process: every operation is the identity. */
export const single = (): Collective => ({
  rank: 0,
  size: 1,
  localRank: 0,
  name: "single process",
  allReduceSum: () => Promise.resolve(),
  broadcast: () => Promise.resolve(),
  barrier: () => Promise.resolve(),
  abort: (code, reason) => {
    console.error(reason);
    Deno.exit(code);
  },
  finalize: () => {},
});

/**
 * Sums `parts` (each a float32 array, e.g. one per gradient tensor) over every rank, in buckets of about
 * `bucketBytes`: the parts of a bucket are packed into one buffer, summed in one collective, and copied
 * back, so a model of hundreds of tensors costs tens of collectives rather than hundreds. The buckets'
 * collectives are all started before the first is awaited (MPI's blocking call runs on another thread
 * per call, lib/dist/mpi.ts). In place.
 */
export const allReduceParts = async (
  c: Collective,
  parts: readonly Float32Array[],
  bucketBytes = 32 * 2 ** 20,
): Promise<void> => {
  if (c.size === 1) return;
  const buckets: Float32Array[][] = [];
  let current: Float32Array[] = [], bytes = 0;
  for (const p of parts) {
    current.push(p);
    bytes += p.byteLength;
    if (bytes >= bucketBytes) {
      buckets.push(current);
      current = [];
      bytes = 0;
    }
  }
  if (current.length > 0) buckets.push(current);
  await Promise.all(buckets.map(async (bucket) => {
    const n = bucket.reduce((a, p) => a + p.length, 0);
    const packed = new Float32Array(n);
    let o = 0;
    for (const p of bucket) {
      packed.set(p, o);
      o += p.length;
    }
    await c.allReduceSum(packed);
    o = 0;
    for (const p of bucket) {
      p.set(packed.subarray(o, o + p.length));
      o += p.length;
    }
  }));
};
