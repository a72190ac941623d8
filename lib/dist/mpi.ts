/**
 * Open MPI reached from Deno through FFI: the {@link Collective} of a job started by `mpirun` (or Slurm's
 * `srun`). Debian: `apt-get install openmpi-bin` (the library is `libopenmpi3`, `libmpi.so.40`).
 *
 * How it binds:
 * - Open MPI's handles (`MPI_COMM_WORLD`, `MPI_FLOAT`, `MPI_SUM`, ...) are the addresses of global
 *   structs (`ompi_mpi_comm_world`, ...), not numbers, so they are looked up with libc's `dlsym`.
 * - The library is first opened through libc's `dlopen` with `RTLD_GLOBAL`: Open MPI loads its own
 *   components as plugins that resolve `libmpi`'s symbols globally, which Deno's own `dlopen` (local
 *   symbols) would not allow.
 * - Collectives are called as nonblocking FFI calls, which Deno runs on another thread, so the event loop
 *   (and Ctrl-C, progress output) keeps running while a rank waits for the others. Calls are queued so
 *   that at most one is in flight and every rank issues them in the same order; MPI is initialised with
 *   `MPI_THREAD_SERIALIZED` (calls from any thread, never two at once).
 *
 * @module
 */
import type { Collective } from "./collective.ts";

/** The library names tried, in order (Debian/Ubuntu's Open MPI 4, then generic). */
const LIBRARIES = ["libmpi.so.40", "libmpi.so"];

const RTLD_NOW = 2, RTLD_GLOBAL = 0x100;
const MPI_THREAD_SERIALIZED = 2;

const cstr = (s: string) => new TextEncoder().encode(s + "\0");

const symbols = {
  MPI_Init_thread: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
  MPI_Initialized: { parameters: ["buffer"], result: "i32" },
  MPI_Comm_rank: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Comm_size: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Allreduce: {
    parameters: ["pointer", "buffer", "i32", "pointer", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Bcast: { parameters: ["buffer", "i32", "pointer", "i32", "pointer"], result: "i32", nonblocking: true },
  MPI_Barrier: { parameters: ["pointer"], result: "i32", nonblocking: true },
  MPI_Abort: { parameters: ["pointer", "i32"], result: "i32" },
  MPI_Finalize: { parameters: [], result: "i32" },
  MPI_Get_library_version: { parameters: ["buffer", "buffer"], result: "i32" },
} as const;

/** `MPI_IN_PLACE` in Open MPI: the address 1. */
const IN_PLACE = Deno.UnsafePointer.create(1n);

/** The environment variables `mpirun` (Open MPI) and Slurm's `srun` set for each rank. */
export const launchedByMpi = (env: (name: string) => string | undefined = Deno.env.get): boolean =>
  env("OMPI_COMM_WORLD_SIZE") !== undefined || env("PMI_SIZE") !== undefined ||
  env("PMIX_RANK") !== undefined;

const localRankOf = (rank: number): number => {
  const v = Deno.env.get("OMPI_COMM_WORLD_LOCAL_RANK") ?? Deno.env.get("SLURM_LOCALID") ??
    Deno.env.get("MPI_LOCALRANKID");
  const n = v === undefined ? NaN : Number(v);
  return Number.isInteger(n) && n >= 0 ? n : rank;
};

/**
 * Opens Open MPI, initialises it and returns this rank's collective. Throws a message for people when the
 * library is missing (naming the Debian package) or initialisation fails.
 */
export const mpiCollective = (): Collective => {
  const libc = Deno.dlopen("libc.so.6", {
    dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
    dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
  });
  let path: string | undefined, handle: Deno.PointerValue = null;
  for (const name of LIBRARIES) {
    handle = libc.symbols.dlopen(cstr(name), RTLD_NOW | RTLD_GLOBAL);
    if (handle !== null) {
      path = name;
      break;
    }
  }
  if (handle === null || path === undefined) {
    throw new Error(
      `--distributed mpi: the Open MPI library (${LIBRARIES.join(" or ")}) was not found. ` +
        "On Debian or Ubuntu: apt-get install openmpi-bin (which brings libopenmpi3); then start the job " +
        "with mpirun -np N deno task pretrain --distributed mpi ...",
    );
  }
  const handleOf = (name: string): Deno.PointerObject => {
    const p = libc.symbols.dlsym(handle, cstr(name));
    if (p === null) throw new Error(`--distributed mpi: ${path} has no symbol ${name}: is it Open MPI?`);
    return p;
  };
  const world = handleOf("ompi_mpi_comm_world");
  const float = handleOf("ompi_mpi_float");
  const byte = handleOf("ompi_mpi_byte");
  const sum = handleOf("ompi_mpi_op_sum");
  const mpi = Deno.dlopen(path, symbols).symbols;

  const check = (what: string, rc: number) => {
    if (rc !== 0) throw new Error(`--distributed mpi: ${what} failed with MPI error ${rc}`);
  };
  const flag = new Int32Array(1);
  check("MPI_Initialized", mpi.MPI_Initialized(flag));
  if (flag[0] === 0) {
    const provided = new Int32Array(1);
    check("MPI_Init_thread", mpi.MPI_Init_thread(null, null, MPI_THREAD_SERIALIZED, provided));
    if (provided[0] < MPI_THREAD_SERIALIZED) {
      throw new Error(
        `--distributed mpi: this Open MPI provides thread level ${provided[0]}, serialized (2) is needed`,
      );
    }
  }
  const r = new Int32Array(1), s = new Int32Array(1);
  check("MPI_Comm_rank", mpi.MPI_Comm_rank(world, r));
  check("MPI_Comm_size", mpi.MPI_Comm_size(world, s));
  const version = new Uint8Array(256), len = new Int32Array(1);
  mpi.MPI_Get_library_version(version, len);
  const name = new TextDecoder().decode(version.subarray(0, Math.max(0, len[0]))).split(",")[0].trim();

  // One collective in flight at a time, in the order they were asked for (the same on every rank).
  let queue: Promise<unknown> = Promise.resolve();
  const enqueue = (what: string, f: () => Promise<number>): Promise<void> => {
    const run = queue.then(async () => check(what, await f()));
    queue = run.catch(() => {});
    return run;
  };
  const bytesOf = (a: Uint8Array | Float32Array | Int32Array) =>
    new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

  return {
    rank: r[0],
    size: s[0],
    localRank: localRankOf(r[0]),
    name: `mpi (${name || path})`,
    allReduceSum: (data) =>
      enqueue("MPI_Allreduce", () => mpi.MPI_Allreduce(IN_PLACE, data, data.length, float, sum, world)),
    broadcast: (data, root) =>
      enqueue("MPI_Bcast", () => mpi.MPI_Bcast(bytesOf(data), data.byteLength, byte, root, world)),
    barrier: () => enqueue("MPI_Barrier", () => mpi.MPI_Barrier(world)),
    abort: (code, reason) => {
      console.error(`rank ${r[0]} of ${s[0]}: ${reason}`);
      mpi.MPI_Abort(world, code);
      Deno.exit(code);
    },
    finalize: () => {
      check("MPI_Finalize", mpi.MPI_Finalize());
    },
  };
};
