/**
 * The data loaders: a stream of shuffled epochs cut into batches, with decoding and augmentation in
 * parallel Workers so the accelerator is not starved.
 *
 * Determinism: sample `i` of epoch `e` gets the key `foldIn(foldIn(dataKey, e), i)`, split into its
 * augmentation key and its mask key; the epoch order is `permutation(foldIn(dataKey, e), n)` (image
 * folders, synthetic data) or, for WebDataset shards, a shard permutation and a streaming shuffle buffer
 * driven by the two halves of `split(foldIn(dataKey, e))`. Work is cut into chunks of consecutive
 * samples, and results are taken in chunk order, so the batches are the same for any number of workers
 * (0 = inline), and a loader started at a batch's `position` yields exactly what the uninterrupted one
 * yields after that batch.
 *
 * Files that cannot be used (corrupt, truncated, unsupported) are skipped: each is named in a warning
 * the first time, counted in `stats`, and the batch is filled from the next samples. Batches never span
 * epochs; with `dropLast` (the default, as the official DataLoader) an epoch's incomplete last batch is
 * dropped. So a data set that cannot make one batch would be read epoch after epoch without a batch: it is
 * refused instead, from its size before reading when the size is known ({@link checkBatchFits}), else when
 * a whole epoch has made no batch (too few images, or too few that could be used), naming the counts.
 * Workers are capped at {@link maxWorkers}, with a warning.
 *
 * Splits: pretraining reads the training split, and {@link evalLoader} either split. The held-out split
 * is the folder's `val/`, or else every 10th image (folders), a tenth of the samples by key hash
 * (shards), or `ceil(size / 10)` further synthetic images.
 *
 * @module
 */
import type { Key } from "../lib/core/random.ts";
import { foldIn, key as seedKey, permutation, sampler, split } from "../lib/core/random.ts";
import type { DataPosition, HostBatch, HostEvalBatch } from "./batch.ts";
import { listFolder } from "./folder.ts";
import { type DataSource, DEFAULT_SYNTHETIC_SIZE, formatDataSource } from "./source.ts";
import { syntheticLabel } from "./synthetic.ts";
import { resolveShards, shardSamples, type WdsSample } from "./wds.ts";
import {
  type Job,
  type JobResult,
  type JobSample,
  type JobSpec,
  processJob,
  type SampleRef,
} from "./work.ts";
import type { WorkerReply } from "./worker.ts";

/** Pretraining loader settings. */
export interface LoaderConfig {
  readonly source: DataSource;
  readonly batchSize: number;
  /** Side of the square views in pixels. */
  readonly imageSize: number;
  /** Patch side in pixels; divides imageSize. */
  readonly patchSize: number;
  /** Masked patches per image, exactly. */
  readonly numMasked: number;
  readonly masking: "block" | "random";
  /** Smallest block of block masking (official default 16). */
  readonly minBlockPatches?: number;
  /** Decoding Workers; 0 runs inline. Default: cores - 1, at least 1, at most 8. */
  readonly workers?: number;
  /** Batches prepared ahead of the one being consumed (default 2). */
  readonly prefetch?: number;
  /** false: the evaluation transform instead of jitter/flip/random crop (default true). */
  readonly augment?: boolean;
  /** Shuffle each epoch (default true). */
  readonly shuffle?: boolean;
  /** Drop each epoch's incomplete last batch (default true, as the official DataLoader). */
  readonly dropLast?: boolean;
  /** Stop after this many epochs in all (default: never; the caller stops and closes). */
  readonly epochs?: number;
  /** Samples held by the WebDataset shuffle buffer (default 1000). */
  readonly shuffleBuffer?: number;
  /**
   * Data-parallel training: this process is rank `rank` of `size`, `batchSize` is its share, and the global
   * batch is `size * batchSize` consecutive samples of the one-process order; this rank decodes only rows
   * `rank * batchSize .. (rank + 1) * batchSize` of each. Equal to one process's global batch as long as no
   * sample is skipped (a skipped sample is replaced by this rank's next one, so the ranks' shares drift from
   * the one-process batch until the next epoch). Positions are global batch ends, the same on every rank.
   */
  readonly shard?: { readonly rank: number; readonly size: number };
}

/** Evaluation loader settings. */
export interface EvalLoaderConfig {
  readonly source: DataSource;
  readonly batchSize: number;
  readonly imageSize: number;
  readonly workers?: number;
  readonly prefetch?: number;
}

/** Live counters of a loader, for the run summary. */
export interface LoaderStats {
  /** Samples skipped (a file skipped in two epochs counts twice). */
  skipped: number;
  /** The distinct names of skipped files and shards (the first 1000). */
  skippedFiles: string[];
  /** How many distinct files and shards were skipped (a file skipped in two epochs counts once). */
  skippedDistinct: number;
  /** Images decoded or rendered successfully. */
  decoded: number;
}

/** A loader: an async iterator of batches, plus `close()` (stops the Workers) and its counters. */
export type Loader<T> = AsyncIterableIterator<T> & {
  close(): Promise<void>;
  readonly stats: LoaderStats;
};

type Split = "train" | "val";

/** One sample of an epoch, before it gets its key. */
interface EpochSample {
  readonly index: number;
  readonly label: number;
  readonly ref: SampleRef;
}

/** A source resolved to one split. */
interface Dataset {
  /** Samples per epoch, when known without reading the data. */
  readonly size: number | undefined;
  /** Epoch `e` in order from sample `start`. */
  epoch(
    start: number,
    shuffle: boolean,
    epochKey: Key,
    onProblem: (name: string, msg: string) => void,
  ): AsyncIterable<EpochSample>;
}

/** Samples of an indexed dataset in epoch order. */
async function* indexedEpoch(
  n: number,
  start: number,
  shuffle: boolean,
  epochKey: Key,
  at: (j: number) => { label: number; ref: SampleRef },
): AsyncGenerator<EpochSample> {
  const order = shuffle ? permutation(epochKey, n) : undefined;
  for (let i = start; i < n; i++) yield { index: i, ...at(order ? order[i] : i) };
}

const resolveDataset = async (
  source: DataSource,
  splitName: Split,
  renderSize: number,
  shuffleBuffer: number,
): Promise<Dataset> => {
  switch (source.kind) {
    case "synthetic": {
      const size = source.size ?? DEFAULT_SYNTHETIC_SIZE;
      // The held-out images are fresh ones after the training range.
      const [offset, n] = splitName === "train" ? [0, size] : [size, Math.ceil(size / 10)];
      const seed = seedKey(source.seed ?? 0);
      return {
        size: n,
        epoch: (start, shuffle, k) =>
          indexedEpoch(n, start, shuffle, k, (j) => ({
            label: syntheticLabel(offset + j),
            ref: { kind: "synthetic", seed, index: offset + j, size: renderSize },
          })),
      };
    }
    case "folder": {
      const { items } = await listFolder(source.path, splitName);
      return {
        size: items.length,
        epoch: (start, shuffle, k) =>
          indexedEpoch(items.length, start, shuffle, k, (j) => ({
            label: items[j].label,
            ref: { kind: "file", path: items[j].path, name: items[j].name },
          })),
      };
    }
    case "wds": {
      const shards = await resolveShards(source.pattern);
      return {
        size: undefined,
        epoch: (start, shuffle, k, onProblem) =>
          wdsEpoch(shards, splitName, start, shuffle, k, shuffleBuffer, onProblem, source.pattern),
      };
    }
  }
};

async function* wdsEpoch(
  shards: readonly string[],
  splitName: Split,
  start: number,
  shuffle: boolean,
  epochKey: Key,
  bufferSize: number,
  onProblem: (name: string, msg: string) => void,
  pattern: string,
): AsyncGenerator<EpochSample> {
  const [shardKey, bufferKey] = split(epochKey);
  const order = shuffle ? Array.from(permutation(shardKey, shards.length), (j) => shards[j]) : shards;
  const inSplit = (s: WdsSample) => (s.hash % 10 === 9) === (splitName === "val");
  async function* all(): AsyncGenerator<WdsSample> {
    for (const shard of order) {
      for await (const s of shardSamples(shard, (m) => onProblem(shard, m))) if (inSplit(s)) yield s;
    }
  }
  // webdataset's shuffle buffer: fill, then emit a random element and put the next sample in its place.
  async function* shuffled(): AsyncGenerator<WdsSample> {
    const rand = sampler(bufferKey);
    const buf: WdsSample[] = [];
    for await (const s of all()) {
      if (buf.length < bufferSize) {
        buf.push(s);
        continue;
      }
      const j = Math.floor(rand.next() * buf.length);
      const out = buf[j];
      buf[j] = s;
      yield out;
    }
    while (buf.length > 0) {
      const j = Math.floor(rand.next() * buf.length);
      const out = buf[j];
      buf[j] = buf[buf.length - 1];
      buf.pop();
      yield out;
    }
  }
  let i = 0;
  for await (const s of shuffle ? shuffled() : all()) {
    if (i >= start) {
      yield {
        index: i,
        label: s.label,
        ref: s.image
          ? { kind: "bytes", bytes: s.image.slice(), name: s.name }
          : { kind: "missing", name: s.name, message: s.problem ?? `${s.name}: no image` },
      };
    }
    i++;
  }
  if (i === 0) {
    throw new Error(`data: wds:${pattern} holds no samples for the ${splitName} split; check the shards`);
  }
}

/** Default Worker count: the cores left after the main thread, between 1 and 8. */
export const defaultWorkers = (): number =>
  Math.max(1, Math.min(8, (navigator.hardwareConcurrency ?? 2) - 1));

/**
 * The most decoding Workers a loader starts: twice the CPU cores (files are read with blocking calls in
 * the Workers, so a few more than the cores can hide file latency; decoding itself cannot use more).
 * Each Worker loads its own decoders: about 37 MiB and 0.8 s of CPU to start (2-core dev machine, 8
 * Workers ready in 7 s, 32 in 27 s), so `--workers 1000` meant some 37 GiB and minutes before the first
 * batch, which looked like a hang.
 */
export const maxWorkers = (): number => 2 * Math.max(1, navigator.hardwareConcurrency ?? 2);

/**
 * The Worker count a loader uses for `requested` (undefined: {@link defaultWorkers}): at most
 * {@link maxWorkers}, with a warning naming the request and the cap when it is lowered. Loaders apply it
 * themselves (and print the warning); callers may use it to report the count up front.
 *
 * @example
 * ```ts
 * import { maxWorkers, resolveWorkers } from "./loader.ts";
 * const r = resolveWorkers(1000);
 * if (r.workers !== maxWorkers() || !r.warning?.includes("1000")) throw new Error();
 * if (resolveWorkers(0).workers !== 0 || resolveWorkers(0).warning !== undefined) throw new Error();
 * ```
 */
export const resolveWorkers = (requested: number | undefined): { workers: number; warning?: string } => {
  if (requested === undefined) return { workers: defaultWorkers() };
  const cap = maxWorkers();
  if (requested <= cap) return { workers: requested };
  return {
    workers: cap,
    warning:
      `data: --workers ${requested} lowered to ${cap} (twice the ${
        cap / 2
      } CPU cores): each Worker loads its own decoders (about 37 MiB and 0.8 s of CPU to start), and more ` +
      "Workers than that only compete for the cores",
  };
};

/**
 * Why a data set of `size` images (undefined: not known before reading, as for WebDataset shards) cannot
 * make batches of `batchSize`, or undefined when it can. With the incomplete last batch of each epoch
 * dropped (as the official loader does), a data set smaller than one batch never makes one: the loader
 * would read epoch after epoch without end. Callers check this before creating anything (a run
 * directory); the loader checks it again before reading.
 *
 * @example
 * ```ts
 * import { checkBatchFits } from "./loader.ts";
 * const msg = checkBatchFits({ kind: "synthetic", size: 2 }, 2, 4);
 * if (!msg?.includes("2 images") || checkBatchFits({ kind: "synthetic", size: 8 }, 8, 4) !== undefined) {
 *   throw new Error();
 * }
 * ```
 */
export const checkBatchFits = (
  source: DataSource,
  size: number | undefined,
  batchSize: number,
): string | undefined => {
  if (!(Number.isSafeInteger(batchSize) && batchSize > 0)) {
    return `the batch size ${batchSize} (--batch-size) is not a whole number from 1 to ${Number.MAX_SAFE_INTEGER}`;
  }
  if (size === undefined || size >= batchSize) return undefined;
  return `${
    formatDataSource(source)
  } has ${size} images in its training split, fewer than one batch of ${batchSize} ` +
    `(--batch-size); each epoch's incomplete last batch is dropped, so no batch could ever be made: use a ` +
    `batch size of at most ${size}, or more images`;
};

/** Runs chunks somewhere and returns their results. */
interface Pool {
  run(job: Job, transfer: ArrayBuffer[]): Promise<JobResult>;
  close(): void;
}

const inlinePool = (): Pool => ({
  run: (job) => {
    try {
      return Promise.resolve(processJob(job));
    } catch (e) {
      return Promise.reject(e);
    }
  },
  close: () => {},
});

const workerPool = (n: number): Pool => {
  const url = new URL("./worker.ts", import.meta.url).href;
  const workers = Array.from({ length: n }, () => new Worker(url, { type: "module" }));
  const load = new Array<number>(n).fill(0);
  const pending = new Map<
    number,
    { resolve: (r: JobResult) => void; reject: (e: Error) => void; worker: number }
  >();
  let broken: string | undefined;
  const failWorker = (w: number, msg: string) => {
    broken = msg;
    for (const [id, p] of pending) {
      if (p.worker === w) {
        pending.delete(id);
        p.reject(new Error(msg));
      }
    }
  };
  workers.forEach((w, wi) => {
    w.onmessage = (e: MessageEvent<WorkerReply>) => {
      const r = e.data;
      const id = r.ok ? r.result.id : r.id;
      const p = pending.get(id);
      if (!p) return;
      pending.delete(id);
      load[wi]--;
      if (r.ok) p.resolve(r.result);
      else p.reject(new Error(`data worker: ${r.error}`));
    };
    w.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      failWorker(wi, `data worker ${wi} stopped: ${e.message}`);
    };
    w.onmessageerror = () => failWorker(wi, `data worker ${wi}: a message could not be deserialised`);
  });
  return {
    run: (job, transfer) => {
      if (broken) return Promise.reject(new Error(broken));
      const wi = load.indexOf(Math.min(...load));
      load[wi]++;
      return new Promise<JobResult>((resolve, reject) => {
        pending.set(job.id, { resolve, reject, worker: wi });
        workers[wi].postMessage(job, transfer);
      });
    },
    close: () => {
      for (const w of workers) w.terminate();
      for (const p of pending.values()) p.reject(new Error("data loader closed"));
      pending.clear();
    },
  };
};

/** What the engine needs to know; shared by the pretraining and evaluation loaders. */
interface EngineOptions<T> {
  readonly source: DataSource;
  readonly split: Split;
  readonly spec: JobSpec;
  readonly dataKey: Key;
  readonly start: DataPosition;
  readonly epochs: number;
  readonly shuffle: boolean;
  readonly batchSize: number;
  readonly dropLast: boolean;
  readonly workers: number;
  readonly prefetch: number;
  readonly shuffleBuffer: number;
  /** See {@link LoaderConfig.shard}. */
  readonly shard?: { readonly rank: number; readonly size: number };
  readonly makeBatch: (parts: readonly Part[], size: number, position: DataPosition) => T;
}

/** A run of `count` results of one chunk, starting at `from`. */
interface Part {
  readonly result: JobResult;
  readonly from: number;
  readonly count: number;
}

type Chunk =
  | { readonly kind: "chunk"; readonly epoch: number; readonly samples: JobSample[] }
  | { readonly kind: "end"; readonly epoch: number };
type Done =
  | { readonly kind: "chunk"; readonly epoch: number; readonly result: JobResult }
  | { readonly kind: "end"; readonly epoch: number };

const MAX_LISTED = 1000;

const engine = <T>(o: EngineOptions<T>): Loader<T> => {
  const stats: LoaderStats = { skipped: 0, skippedFiles: [], skippedDistinct: 0, decoded: 0 };
  const warned = new Set<string>();
  const skip = (name: string, message: string) => {
    stats.skipped++;
    if (warned.has(name)) return;
    // Exact up to 100,000 names; past that a name skipped again is counted again.
    stats.skippedDistinct++;
    if (warned.size < 100_000) warned.add(name);
    if (stats.skippedFiles.length < MAX_LISTED) stats.skippedFiles.push(name);
    console.warn(`data: skipped ${message}`);
  };
  let pool: Pool | undefined;
  let chunkSource: AsyncGenerator<Chunk> | undefined;
  let closed = false;
  const shutdown = async () => {
    closed = true;
    pool?.close();
    pool = undefined;
    await chunkSource?.return(undefined).catch(() => undefined);
  };

  const chunkSize = o.workers > 0 ? Math.max(1, Math.ceil(o.batchSize / o.workers)) : o.batchSize;
  const maxInflight = o.workers > 0
    ? Math.max(o.workers, Math.ceil((o.prefetch * o.batchSize) / chunkSize))
    : 1;

  // Data-parallel: this rank's rows of each global batch of `size * batchSize` samples.
  const global = o.shard ? o.shard.size * o.batchSize : o.batchSize;
  const mine = (index: number) => {
    if (!o.shard) return true;
    const row = index % global;
    return row >= o.shard.rank * o.batchSize && row < (o.shard.rank + 1) * o.batchSize;
  };
  // Where the stream resumes after a batch: past its last sample, or past its global batch (every rank).
  const after = (taken: readonly Part[], epoch: number): DataPosition => {
    const last = lastIndexOf(taken);
    return { epoch, index: o.shard ? (Math.floor(last / global) + 1) * global : last + 1 };
  };

  async function* chunks(dataset: Dataset): AsyncGenerator<Chunk> {
    for (let e = o.start.epoch; e < o.epochs; e++) {
      const epochKey = foldIn(o.dataKey, e);
      let buf: JobSample[] = [];
      const from = e === o.start.epoch ? o.start.index : 0;
      // Data-parallel: this rank's rows wait until the stream shows their global batch complete (one
      // process would drop an incomplete last global batch with dropLast, so every rank must).
      let held: JobSample[] = [];
      const pending: JobSample[] = [];
      for await (const s of dataset.epoch(from, o.shuffle, epochKey, skip)) {
        const sample = { index: s.index, key: foldIn(epochKey, s.index), label: s.label, ref: s.ref };
        if (!o.shard) pending.push(sample);
        else {
          if (mine(s.index)) held.push(sample);
          if (s.index % global === global - 1) {
            pending.push(...held);
            held = [];
          }
        }
        while (pending.length > 0) {
          buf.push(pending.shift()!);
          if (buf.length === chunkSize) {
            yield { kind: "chunk", epoch: e, samples: buf };
            buf = [];
          }
        }
      }
      if (!o.dropLast) buf.push(...held);
      held = [];
      if (buf.length > 0) yield { kind: "chunk", epoch: e, samples: buf };
      yield { kind: "end", epoch: e };
    }
  }

  const take = (parts: Part[], n: number): Part[] => {
    const out: Part[] = [];
    let need = n;
    while (need > 0) {
      const p = parts[0];
      const c = Math.min(need, p.count);
      out.push({ result: p.result, from: p.from, count: c });
      if (c === p.count) parts.shift();
      else parts[0] = { result: p.result, from: p.from + c, count: p.count - c };
      need -= c;
    }
    return out;
  };

  async function* batches(): AsyncGenerator<T> {
    const dataset = await resolveDataset(o.source, o.split, o.spec.imageSize, o.shuffleBuffer);
    if (closed) return;
    if (o.dropLast) {
      const unfit = checkBatchFits(o.source, dataset.size, global);
      if (unfit !== undefined) throw new Error(`data: ${unfit}`);
    }
    pool = o.workers > 0 ? workerPool(o.workers) : inlinePool();
    chunkSource = chunks(dataset);
    const queue: Promise<Done>[] = [];
    let exhausted = false;
    let nextId = 0;
    const topUp = async () => {
      while (!exhausted && queue.length < maxInflight && chunkSource && pool) {
        const r = await chunkSource.next();
        if (r.done || !pool) {
          exhausted = true;
          break;
        }
        const c = r.value;
        if (c.kind === "end") {
          queue.push(Promise.resolve(c));
          continue;
        }
        const job: Job = { id: nextId++, spec: o.spec, samples: c.samples };
        const transfer = c.samples.flatMap((
          s,
        ) => (s.ref.kind === "bytes" ? [s.ref.bytes.buffer as ArrayBuffer] : []));
        const p = pool.run(job, transfer).then((result): Done => ({ kind: "chunk", epoch: c.epoch, result }));
        p.catch(() => {}); // awaited in order below; this only marks an early rejection as handled
        queue.push(p);
      }
    };
    try {
      let parts: Part[] = [];
      let pendingCount = 0;
      // This epoch's tally: a whole epoch that makes no batch (too few usable images) would be followed by
      // identical ones forever, reading every file again each time, so it ends the stream with an error.
      let epochBatches = 0, epochUsable = 0, epochFailed = 0;
      for (;;) {
        await topUp();
        const head = queue.shift();
        if (!head) return;
        const done = await head;
        if (done.kind === "end") {
          if (pendingCount > 0 && !o.dropLast) {
            const taken = take(parts, pendingCount);
            yield o.makeBatch(taken, pendingCount, after(taken, done.epoch));
            epochBatches++;
          }
          const whole = done.epoch !== o.start.epoch || o.start.index === 0;
          if (o.dropLast && whole && epochBatches === 0) {
            throw new Error(`data: ${emptyEpoch(o.source, epochUsable, epochFailed, o.batchSize)}`);
          }
          parts = [];
          pendingCount = 0;
          epochBatches = epochUsable = epochFailed = 0;
          continue;
        }
        const r = done.result;
        for (const f of r.failures) skip(f.name, f.message);
        stats.decoded += r.count;
        epochUsable += r.count;
        epochFailed += r.failures.length;
        if (r.count > 0) {
          parts.push({ result: r, from: 0, count: r.count });
          pendingCount += r.count;
        }
        while (pendingCount >= o.batchSize) {
          const taken = take(parts, o.batchSize);
          pendingCount -= o.batchSize;
          yield o.makeBatch(taken, o.batchSize, after(taken, done.epoch));
          epochBatches++;
        }
      }
    } finally {
      await shutdown();
    }
  }

  const it = batches();
  return Object.assign(it, {
    close: async () => {
      await shutdown();
      await it.return(undefined).catch(() => undefined);
    },
    stats,
  });
};

/** Why a whole epoch made no batch: too few images, or too few that could be used. */
const emptyEpoch = (source: DataSource, usable: number, failed: number, batchSize: number): string => {
  const what = failed === 0
    ? `${usable} images`
    : `${usable} usable images (${failed} could not be used: named in the warnings above)`;
  const fix = failed === 0
    ? `use a batch size of at most ${Math.max(usable, 1)}, or more images`
    : usable === 0
    ? "fix or replace the files, or check that --data names the right data"
    : "fix or replace the unusable files, or use a smaller batch size";
  return `a whole epoch of ${
    formatDataSource(source)
  } gave ${what}, fewer than one batch of ${batchSize} (--batch-size); ` +
    `each epoch's incomplete last batch is dropped, so no batch could ever be made: ${fix}`;
};

const lastIndexOf = (parts: readonly Part[]): number => {
  const p = parts[parts.length - 1];
  return p.result.indices[p.from + p.count - 1];
};

/** Concatenates the `[count, ...]` slices of `parts` of one field, each row `row` long. */
const gather = <A extends Float32Array | Uint8Array | Int32Array>(
  parts: readonly Part[],
  field: (r: JobResult) => A,
  row: number,
  make: (n: number) => A,
  n: number,
): A => {
  const p0 = parts[0];
  const f0 = field(p0.result);
  // A whole chunk that is exactly the batch: hand its buffer over without copying.
  if (parts.length === 1 && p0.from === 0 && p0.count === p0.result.count) return f0;
  const out = make(n * row);
  let o = 0;
  for (const p of parts) {
    out.set(field(p.result).subarray(p.from * row, (p.from + p.count) * row), o);
    o += p.count * row;
  }
  return out;
};

/** The Worker count for a loader's setting, warning when it is capped (see {@link resolveWorkers}). */
const workersOf = (requested: number | undefined): number => {
  const r = resolveWorkers(requested);
  if (r.warning) console.warn(r.warning);
  return r.workers;
};

const checkCommon = (
  fn: string,
  c: { batchSize: number; imageSize: number; workers?: number; prefetch?: number },
) => {
  const posInt = (v: number) => Number.isInteger(v) && v > 0;
  // Safe integers only: 99999999999999999999 parses to 1e20, an integer to JavaScript, and a batch that
  // size was waited for forever.
  if (!(Number.isSafeInteger(c.batchSize) && c.batchSize > 0)) {
    throw new Error(
      `${fn}: batchSize must be a whole number from 1 to ${Number.MAX_SAFE_INTEGER}, got ${c.batchSize}`,
    );
  }
  if (!posInt(c.imageSize)) {
    throw new Error(`${fn}: imageSize must be a positive integer, got ${c.imageSize}`);
  }
  if (c.workers !== undefined && !(Number.isInteger(c.workers) && c.workers >= 0)) {
    throw new Error(`${fn}: workers must be an integer >= 0, got ${c.workers}`);
  }
  if (c.prefetch !== undefined && !posInt(c.prefetch)) {
    throw new Error(`${fn}: prefetch must be a positive integer, got ${c.prefetch}`);
  }
};

/**
 * The pretraining loader: batches of two views and a mask per image, from `start` (default: the
 * beginning) on. Settings are checked here; a missing or empty source rejects the first `next()` with a
 * message naming it.
 *
 * @example
 * ```ts
 * import { pretrainLoader } from "./loader.ts";
 * import { key } from "../lib/core/random.ts";
 * const loader = pretrainLoader(
 *   { source: { kind: "synthetic", size: 8 }, batchSize: 4, imageSize: 32, patchSize: 8, numMasked: 6,
 *     masking: "random", workers: 0 },
 *   key(0),
 * );
 * const { value } = await loader.next();
 * await loader.close();
 * if (!value || value.studentImages.length !== 4 * 32 * 32 * 3 || value.mask.length !== 4 * 16) throw new Error();
 * ```
 */
export const pretrainLoader = (
  cfg: LoaderConfig,
  dataKey: Key,
  start: DataPosition = { epoch: 0, index: 0 },
): Loader<
  HostBatch
> => {
  checkCommon("pretrainLoader", cfg);
  const S = cfg.imageSize, P = cfg.patchSize;
  if (!(Number.isInteger(P) && P > 0 && S % P === 0)) {
    throw new Error(`pretrainLoader: patchSize ${P} must be a positive integer dividing imageSize ${S}`);
  }
  const L = (S / P) ** 2;
  if (!(Number.isInteger(cfg.numMasked) && cfg.numMasked >= 0 && cfg.numMasked <= L)) {
    throw new Error(
      `pretrainLoader: numMasked must be an integer in 0..${L} (the patch count), got ${cfg.numMasked}`,
    );
  }
  if (
    !(Number.isInteger(start.epoch) && start.epoch >= 0 && Number.isInteger(start.index) && start.index >= 0)
  ) {
    throw new Error(
      `pretrainLoader: start position must be non-negative integers, got ${JSON.stringify(start)}`,
    );
  }
  const px = S * S * 3;
  return engine<HostBatch>({
    source: cfg.source,
    split: "train",
    spec: {
      mode: "pretrain",
      imageSize: S,
      patchSize: P,
      numMasked: cfg.numMasked,
      masking: cfg.masking,
      minBlockPatches: cfg.minBlockPatches ?? 16,
      augment: cfg.augment ?? true,
    },
    dataKey,
    start,
    epochs: cfg.epochs ?? Infinity,
    shuffle: cfg.shuffle ?? true,
    batchSize: cfg.batchSize,
    dropLast: cfg.dropLast ?? true,
    workers: workersOf(cfg.workers),
    prefetch: cfg.prefetch ?? 2,
    shuffleBuffer: cfg.shuffleBuffer ?? 1000,
    shard: cfg.shard,
    makeBatch: (parts, n, position) => ({
      size: n,
      height: S,
      width: S,
      studentImages: gather(parts, (r) => r.student, px, (m) => new Float32Array(m), n),
      teacherImages: gather(parts, (r) => r.teacher, px, (m) => new Float32Array(m), n),
      mask: gather(parts, (r) => r.mask, L, (m) => new Uint8Array(m), n),
      labels: gather(parts, (r) => r.labels, 1, (m) => new Int32Array(m), n),
      position,
    }),
  });
};

/**
 * The evaluation loader: one ordered pass over a split, evaluation-transformed images and labels, the
 * last batch possibly smaller. For linear probing (train split for fitting, val for measuring).
 */
export const evalLoader = (cfg: EvalLoaderConfig, splitName: Split): Loader<HostEvalBatch> => {
  checkCommon("evalLoader", cfg);
  const S = cfg.imageSize, px = S * S * 3;
  return engine<HostEvalBatch>({
    source: cfg.source,
    split: splitName,
    spec: {
      mode: "eval",
      imageSize: S,
      patchSize: 1,
      numMasked: 0,
      masking: "random",
      minBlockPatches: 1,
      augment: false,
    },
    dataKey: seedKey(0),
    start: { epoch: 0, index: 0 },
    epochs: 1,
    shuffle: false,
    batchSize: cfg.batchSize,
    dropLast: false,
    workers: workersOf(cfg.workers),
    prefetch: cfg.prefetch ?? 2,
    shuffleBuffer: 1,
    makeBatch: (parts, n) => ({
      size: n,
      height: S,
      width: S,
      images: gather(parts, (r) => r.student, px, (m) => new Float32Array(m), n),
      labels: gather(parts, (r) => r.labels, 1, (m) => new Int32Array(m), n),
    }),
  });
};

/**
 * Images per epoch of a source's split, when known without reading the data (synthetic and folders);
 * undefined for WebDataset shards. Rejects when a folder is missing or empty.
 */
export const datasetSize = async (
  source: DataSource,
  splitName: Split = "train",
): Promise<number | undefined> => (await resolveDataset(source, splitName, 8, 1)).size;

/** A one-line description of a source for logs, e.g. "folder:/data/imagenet (1281167 train images)". */
export const describeSource = async (source: DataSource): Promise<string> => {
  const n = await datasetSize(source).catch(() => undefined);
  return n === undefined ? formatDataSource(source) : `${formatDataSource(source)} (${n} train images)`;
};
