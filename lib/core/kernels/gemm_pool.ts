/**
 * Runs the packed SIMD matrix product of lib/core/kernels/gemm_simd.ts on all cores: the operands are packed
 * into one shared `WebAssembly.Memory`, and the calling thread and `threads - 1` workers each compute a
 * share with the same module on that memory: a share of the rows of C for one product, whole products of a
 * batch.
 *
 * Why workers of `node:worker_threads`: tfjs-backend-wasm's own threaded build cannot start under Deno
 * (`ERR_WORKER_PATH`), and a Deno Web Worker blocked in `Atomics.wait` keeps the process from exiting even
 * after `terminate()` (Deno 2.9.6, measured). A `node:worker_threads` worker can be `unref()`ed, so a
 * program that is done exits while its workers sleep. The worker source is inline (`eval: true`), so the
 * pool needs no file beside the module (it works imported by URL and bundled).
 *
 * Handshake, per worker slot of 32 int32 in the control block at the start of the memory (layout below): the
 * caller writes the arguments, then a new sequence number (`Atomics.notify`); the worker runs `gemm` over
 * its products, writes the sequence number to its done word and notifies. A round trip costs ~20 us (dev
 * machine), against ~200 ms for a teacher's linear layer.
 *
 * @module
 */
import { Worker } from "node:worker_threads";
import { gemmModuleBytes, relaxedSimdAvailable, type Tile } from "./gemm_simd.ts";

/** 64 KiB pages the shared memory may grow to (1 GiB); larger products are refused (the caller falls back). */
const MAX_PAGES = 16384;
/** Bytes reserved for the control block (512 worker slots). */
const CONTROL_BYTES = 65536;
/** The register tile: 4 rows x 8 columns, k unrolled 4 times, A broadcast by shuffles (see gemm_simd.ts). */
const TILE: Tile = { rows: 4, vectors: 2, unroll: 4, shuffle: true };
const R = TILE.rows, NB = 4 * TILE.vectors;
/** Cache blocking: K blocks of 256 (a 4 x 256 A and a 256 x 8 B micro-panel: 4 + 8 KiB in L1), 16 groups of rows. */
const KC = 256, MG = 16;
/** How long the caller waits for a worker's share before giving up (a share takes well under a second). */
const WORKER_TIMEOUT_MS = 300_000;
/** Products of less work (G M K N multiply-adds) than this run on the calling thread alone. */
const MIN_SPLIT_WORK = 1 << 24;

// Control slot layout (int32 each): 0 sequence number, 1..9 the gemm arguments, 10..14 the batch range
// [from, to) and the byte strides of A, B and C between products, 15 done, 16 state (0 starting, 1 ready,
// 2 exited). A slot is given to a new worker only once its last one has exited: a stopped worker can wake
// late, and if its slot were already reused it would take (and answer for) its successor's work.
const SLOT = 32, SEQ = 0, ARGS = 1, BATCH = 10, DONE = 15, READY = 16, EXITED = 2;
/** Slots in the control block. */
const SLOTS = CONTROL_BYTES / 4 / SLOT;

const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
parentPort.once("message", ({ memory, bytes, slot }) => {
  const gemm = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } }).exports.gemm;
  const ctl = new Int32Array(memory.buffer, 0, ${CONTROL_BYTES / 4});
  const base = slot * ${SLOT};
  Atomics.store(ctl, base + ${READY}, 1);
  Atomics.notify(ctl, base + ${READY});
  let seq = 0;
  for (;;) {
    Atomics.wait(ctl, base + ${SEQ}, seq);
    seq = Atomics.load(ctl, base + ${SEQ});
    if (seq < 0) {
      // Stopped: say so (the caller reuses the slot, and terminates this thread, only after this store).
      Atomics.store(ctl, base + ${READY}, ${EXITED});
      return;
    }
    const a = base + ${ARGS}, b = base + ${BATCH};
    for (let g = ctl[b]; g < ctl[b + 1]; g++) {
      gemm(ctl[a] + g * ctl[b + 2], ctl[a + 1] + g * ctl[b + 3], ctl[a + 2] + g * ctl[b + 4], ctl[a + 3],
        ctl[a + 4], ctl[a + 5], ctl[a + 6], ctl[a + 7], ctl[a + 8]);
    }
    Atomics.store(ctl, base + ${DONE}, seq);
    Atomics.notify(ctl, base + ${DONE});
  }
});
`;

type GemmFn = (...args: number[]) => void;

interface Pool {
  readonly memory: WebAssembly.Memory;
  /** The module's bytes, compiled by each worker. */
  readonly bytes: Uint8Array;
  readonly gemm: GemmFn;
  /** The running workers and their control slots. */
  readonly workers: { readonly worker: Worker; readonly slot: number }[];
  /** The worker each slot was last given to. */
  readonly owners: Map<number, Worker>;
  /** Stopped workers not yet terminated (terminate() cannot end a thread blocked in Atomics.wait). */
  readonly retired: { readonly worker: Worker; readonly slot: number }[];
  seq: number;
}

let pool: Pool | undefined;
let wantedThreads = Math.max(1, Math.min(8, navigator.hardwareConcurrency ?? 1));

/**
 * Sets how many threads the products use (the caller and `n - 1` workers; default: the number of logical
 * cores, at most 8); 0 turns the packed kernel off (lib/core/kernels/matmul_wasm.ts then leaves all
 * products to tfjs's own kernels: XNNPACK for rank 2, a scalar loop for batched ones). Takes effect for the next product; workers already started are stopped.
 */
export const setGemmThreads = (n: number): void => {
  if (!Number.isInteger(n) || n < 0) throw new Error(`gemm threads must be an integer >= 0, got ${n}`);
  wantedThreads = n;
  stopWorkers();
};

/** The number of threads products will use. */
export const gemmThreads = (): number => wantedThreads;

const stopWorkers = () => {
  if (pool === undefined) return;
  const ctl = new Int32Array(pool.memory.buffer, 0, CONTROL_BYTES / 4);
  // The worker leaves its wait loop, marks its slot exited, and is terminated by the next getPool.
  for (const member of pool.workers) {
    Atomics.store(ctl, member.slot * SLOT + SEQ, -1);
    Atomics.notify(ctl, member.slot * SLOT + SEQ);
    pool.retired.push(member);
  }
  pool.workers.length = 0;
};

let validated: boolean | undefined;

/** True where the packed kernel is on and can run (WebAssembly SIMD and shared memory). */
export const gemmAvailable = (): boolean => {
  if (wantedThreads === 0) return false;
  if (validated === undefined) {
    try {
      validated = typeof SharedArrayBuffer === "function" &&
        WebAssembly.validate(gemmModuleBytes(false, MAX_PAGES, TILE) as BufferSource);
    } catch {
      validated = false;
    }
  }
  return validated;
};

const getPool = (): Pool => {
  if (pool === undefined) {
    const memory = new WebAssembly.Memory({ initial: 1, maximum: MAX_PAGES, shared: true });
    const bytes = gemmModuleBytes(relaxedSimdAvailable(), MAX_PAGES, TILE);
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes as BufferSource), {
      env: { memory },
    });
    pool = {
      memory,
      bytes,
      gemm: instance.exports.gemm as GemmFn,
      workers: [],
      owners: new Map(),
      retired: [],
      seq: 0,
    };
  }
  const p = pool;
  const ctl = new Int32Array(p.memory.buffer, 0, CONTROL_BYTES / 4);
  const free = (slot: number) => !p.owners.has(slot) || Atomics.load(ctl, slot * SLOT + READY) === EXITED;
  for (let i = p.retired.length - 1; i >= 0; i--) {
    if (Atomics.load(ctl, p.retired[i].slot * SLOT + READY) !== EXITED) continue;
    p.retired[i].worker.terminate();
    p.retired.splice(i, 1);
  }
  let slot = 0;
  while (p.workers.length < wantedThreads - 1) {
    while (slot < SLOTS && !free(slot)) slot++;
    if (slot === SLOTS) break; // every slot still held by a worker on its way out: run with fewer threads
    ctl.fill(0, slot * SLOT, (slot + 1) * SLOT);
    const w = new Worker(WORKER_SOURCE, { eval: true });
    w.unref();
    // A worker that dies (an exception, out of memory) gets no more shares and frees its slot; only while the
    // slot is still its own (a stopped worker's exit event can come after its successor started).
    const mine = slot;
    w.on("exit", () => void (p.owners.get(mine) === w && Atomics.store(ctl, mine * SLOT + READY, EXITED)));
    p.owners.set(slot, w);
    w.postMessage({ memory: p.memory, bytes: p.bytes, slot });
    p.workers.push({ worker: w, slot });
  }
  return p;
};

/**
 * Starts the workers (if not yet) and resolves once all of them can take work, with the number of threads
 * products will then use. Products never wait for workers: until a worker is up, its share runs on the
 * caller. Benchmarks await this so that the first measured product already runs on every thread.
 */
export const gemmReady = async (): Promise<number> => {
  if (!gemmAvailable()) return 0;
  const p = getPool();
  const ctl = new Int32Array(p.memory.buffer, 0, CONTROL_BYTES / 4);
  for (const { slot } of p.workers) {
    const at = slot * SLOT + READY;
    const deadline = performance.now() + 30_000;
    while (Atomics.load(ctl, at) !== 1) {
      if (performance.now() > deadline) throw new Error(`gemm worker ${slot} did not start within 30 s`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  return 1 + p.workers.length;
};

/** One operand: row-major `[rows, cols]`, or stored `[cols, rows]` when `transposed` (tfjs's attrs). */
export interface GemmOperand {
  readonly data: Float32Array;
  readonly transposed: boolean;
}

const ceil = (n: number, to: number) => Math.ceil(n / to) * to;

/** A `[M, K]` (or `[K, M]` transposed) into 4-row micro-panels `[m4 / 4, kp, 4]` at float offset `off`. */
const packA = (
  h: Float32Array,
  off: number,
  a: GemmOperand,
  at: number,
  M: number,
  K: number,
  kp: number,
) => {
  const src = a.data.subarray(at, at + M * K);
  if (!a.transposed) {
    for (let g = 0; g * R < M; g++) {
      let d = off + g * kp * R;
      const i = g * R;
      if (i + 3 < M) {
        const o0 = i * K, o1 = o0 + K, o2 = o1 + K, o3 = o2 + K;
        for (let k = 0; k < K; k++, d += 4) {
          h[d] = src[o0 + k];
          h[d + 1] = src[o1 + k];
          h[d + 2] = src[o2 + k];
          h[d + 3] = src[o3 + k];
        }
      } else {
        for (let k = 0; k < K; k++, d += 4) {
          for (let r = 0; r < R; r++) h[d + r] = i + r < M ? src[(i + r) * K + k] : 0;
        }
      }
    }
  } else {
    for (let k = 0; k < K; k++) {
      const s = k * M;
      for (let g = 0; g * R < M; g++) {
        const d = off + (g * kp + k) * R, i = g * R;
        if (i + 3 < M) {
          h[d] = src[s + i];
          h[d + 1] = src[s + i + 1];
          h[d + 2] = src[s + i + 2];
          h[d + 3] = src[s + i + 3];
        } else for (let r = 0; r < R; r++) h[d + r] = i + r < M ? src[s + i + r] : 0;
      }
    }
  }
};

/** B `[K, N]` (or `[N, K]` transposed) into 8-column micro-panels `[n8 / 8, kp, 8]` at float offset `off`. */
const packB = (
  h: Float32Array,
  off: number,
  b: GemmOperand,
  at: number,
  K: number,
  N: number,
  kp: number,
) => {
  const src = b.data.subarray(at, at + K * N);
  for (let p = 0; p * NB < N; p++) {
    const j = p * NB, full = j + NB <= N;
    let d = off + p * kp * NB;
    if (!b.transposed) {
      for (let k = 0; k < K; k++, d += NB) {
        const s = k * N + j;
        if (full) { for (let c = 0; c < NB; c++) h[d + c] = src[s + c]; }
        else for (let c = 0; c < NB; c++) h[d + c] = j + c < N ? src[s + c] : 0;
      }
    } else {
      for (let c = 0; c < NB; c++) {
        if (j + c >= N) {
          for (let k = 0; k < K; k++) h[d + k * NB + c] = 0;
          continue;
        }
        const s = (j + c) * K;
        for (let k = 0; k < K; k++) h[d + k * NB + c] = src[s + k];
      }
    }
  }
};

/**
 * `out[g] = op(a[g]) op(b[g])` for `G` products of `op(a): [M, K]` by `op(b): [K, N]` (row-major `[G, ...]`)
 * on all {@link gemmThreads} threads: one product's rows split between the threads, several products
 * dealt out whole. False (and `out` untouched) where the operands do not fit the shared memory's 1 GiB.
 * Sums run over k in order (K blocks of 256 accumulated in turn), fused where relaxed SIMD is available,
 * so results differ from tfjs's by float32 rounding; they do not depend on the number of threads.
 *
 * @example
 * ```ts
 * import { gemm } from "./gemm_pool.ts";
 * const out = new Float32Array(2);
 * // [1 2] x [[3], [4]] = [11] and [5 6] x [[7], [8]] = [83]: G = 2, M = 1, K = 2, N = 1.
 * gemm(2, 1, 2, 1, { data: new Float32Array([1, 2, 5, 6]), transposed: false },
 *   { data: new Float32Array([3, 4, 7, 8]), transposed: false }, out);
 * if (out[0] !== 11 || out[1] !== 83) throw new Error(`got ${out}`);
 * ```
 */
export const gemm = (
  G: number,
  M: number,
  K: number,
  N: number,
  a: GemmOperand,
  b: GemmOperand,
  out: Float32Array,
): boolean => {
  const m4 = ceil(M, R), n8 = ceil(N, NB), kp = ceil(K, TILE.unroll);
  const aSize = m4 * kp, bSize = n8 * kp, cSize = m4 * n8;
  const aOff = CONTROL_BYTES / 4, bOff = aOff + G * aSize, cOff = bOff + G * bSize, end = cOff + G * cSize;
  if (end * 4 > MAX_PAGES * 65536) return false;
  const p = getPool();
  if (p.memory.buffer.byteLength < end * 4) {
    p.memory.grow(Math.ceil((end * 4 - p.memory.buffer.byteLength) / 65536));
  }
  const h = new Float32Array(p.memory.buffer);
  if (kp !== K) h.fill(0, aOff, cOff); // the padded k of both operands must be zero
  for (let g = 0; g < G; g++) {
    packA(h, aOff + g * aSize, a, g * M * K, M, K, kp);
    packB(h, bOff + g * bSize, b, g * K * N, K, N, kp);
  }
  h.fill(0, cOff, end);
  const ctl = new Int32Array(p.memory.buffer, 0, CONTROL_BYTES / 4);
  // Workers whose start has not finished get no share.
  const ready = p.workers.flatMap(({ slot }) => Atomics.load(ctl, slot * SLOT + READY) === 1 ? [slot] : []);
  const groups = m4 / R;
  // Shares: [g0, g1) of products and [r0, r1) of row groups, the caller's first.
  const shares: [number, number, number, number][] = [];
  // Small products stay on the caller: waking a worker costs more than its share saves (micro-model shapes
  // such as [624, 64] x [64, 192] ran no faster on 2 threads than on 1, dev machine).
  const n = G * M * K * N < MIN_SPLIT_WORK ? 1 : 1 + ready.length;
  if (G === 1) {
    const per = Math.ceil(groups / n);
    for (let r0 = 0; r0 < groups; r0 += per) shares.push([0, 1, r0, Math.min(r0 + per, groups)]);
  } else {
    const per = Math.ceil(G / n);
    for (let g0 = 0; g0 < G; g0 += per) shares.push([g0, Math.min(g0 + per, G), 0, groups]);
  }
  const seq = ++p.seq;
  const started = shares.slice(1).map(([g0, g1, r0, r1], w) => {
    const base = ready[w] * SLOT;
    ctl.set([4 * aOff, 4 * bOff, 4 * cOff, kp, n8, r0, r1, KC, MG], base + ARGS);
    ctl.set([g0, g1, 4 * aSize, 4 * bSize, 4 * cSize], base + BATCH);
    Atomics.store(ctl, base + SEQ, seq);
    Atomics.notify(ctl, base + SEQ);
    return base;
  });
  const [g0, g1, r0, r1] = shares[0];
  for (let g = g0; g < g1; g++) {
    p.gemm(4 * (aOff + g * aSize), 4 * (bOff + g * bSize), 4 * (cOff + g * cSize), kp, n8, r0, r1, KC, MG);
  }
  for (const base of started) {
    // The caller blocks here (a kernel is synchronous); a worker that died mid-product never answers.
    const deadline = performance.now() + WORKER_TIMEOUT_MS;
    while (Atomics.load(ctl, base + DONE) !== seq) {
      if (performance.now() > deadline) {
        throw new Error(
          `gemm: worker ${base / SLOT} did not finish its share in ${WORKER_TIMEOUT_MS / 1000} s; ` +
            "CAEV2_THREADS=1 runs matrix products on the calling thread only",
        );
      }
      Atomics.wait(ctl, base + DONE, ctl[base + DONE], 1000);
    }
  }
  // C is stored in 4 x 8 tiles [m4 / 4, n8 / 8, 4, 8] per product.
  const np = n8 / NB;
  for (let g = 0; g < G; g++) {
    const c0 = cOff + g * cSize, o0 = g * M * N;
    for (let i = 0; i < M; i++) {
      const grp = Math.floor(i / R), r = i % R, o = o0 + i * N;
      for (let q = 0; q < np; q++) {
        const s = c0 + ((grp * np + q) * R + r) * NB, j = q * NB;
        if (j + NB <= N) { for (let c = 0; c < NB; c++) out[o + j + c] = h[s + c]; }
        else for (let c = 0; j + c < N; c++) out[o + j + c] = h[s + c];
      }
    }
  }
  return true;
};
