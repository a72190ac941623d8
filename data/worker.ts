/**
 * The loader's Worker: runs `processJob` (data/work.ts) on each chunk it is sent and posts the result
 * back, transferring the buffers. Started by data/loader.ts with
 * `new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" })`.
 *
 * The handler is installed before anything heavy loads: work.ts reaches the wasm decoders, which
 * initialise with a top-level await, and a message that arrives while a module is still evaluating
 * would find no handler and be lost. So the work module is imported dynamically, and every message
 * waits for it (in arrival order).
 *
 * @module
 */
/// <reference lib="deno.worker" />
import type { Job, JobResult } from "./work.ts";

/** Messages from the worker: a result, or the error that stopped a chunk. */
export type WorkerReply =
  | { readonly ok: true; readonly result: JobResult }
  | { readonly ok: false; readonly id: number; readonly error: string };

const work = import("./work.ts");

self.onmessage = async (e: MessageEvent<Job>) => {
  const job = e.data;
  try {
    const { processJob, transferables } = await work;
    const result = processJob(job);
    const reply: WorkerReply = { ok: true, result };
    self.postMessage(reply, transferables(result));
  } catch (err) {
    const reply: WorkerReply = {
      ok: false,
      id: job.id,
      error: err instanceof Error ? err.message : String(err),
    };
    self.postMessage(reply);
  }
};
