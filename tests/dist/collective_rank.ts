/**
 * One rank of tests/dist_test.ts, started by `mpirun -np 2`: checks the MPI collective (lib/dist/mpi.ts)
 * and prints `rank R ok` when every check passed. `FAIL_RANK=R` makes rank R throw after the first
 * collective (the job must end, not hang); `HANG_RANK=R` makes rank R wait forever in a barrier the
 * others never reach (killed from outside by the test).
 *
 * @module
 */
import { allReduceParts } from "../../lib/dist/collective.ts";
import { mpiCollective } from "../../lib/dist/mpi.ts";

const c = mpiCollective();
const fail = (msg: string) => c.abort(3, msg);
const equal = (a: ArrayLike<number>, b: ArrayLike<number>, what: string) => {
  if (a.length !== b.length || Array.from(a).some((v, i) => v !== b[i])) {
    fail(`${what}: got [${Array.from(a)}], expected [${Array.from(b)}]`);
  }
};
if (c.size !== 2) fail(`expected 2 ranks, got ${c.size}`);

// Sum: rank r contributes r + 1 and a large sparse vector.
const x = new Float32Array([c.rank + 1, 10, -c.rank]);
await c.allReduceSum(x);
equal(x, [3, 20, -1], "allReduceSum");
if (Deno.env.get("FAIL_RANK") === String(c.rank)) {
  throw new Error(`rank ${c.rank} fails on purpose`);
}

// Bucketed sums of several parts, more than one bucket (bucket 16 bytes).
const parts = [new Float32Array([c.rank, 1]), new Float32Array([2 * c.rank, 2, 3]), new Float32Array([7])];
await allReduceParts(c, parts, 16);
equal(parts[0], [1, 2], "part 0");
equal(parts[1], [2, 4, 6], "part 1");
equal(parts[2], [14], "part 2");

// Broadcast from rank 1, of bytes and of floats.
const b = c.rank === 1 ? new Int32Array([5, 6, 7]) : new Int32Array(3);
await c.broadcast(b, 1);
equal(b, [5, 6, 7], "broadcast");

if (Deno.env.get("HANG_RANK") === String(c.rank)) {
  console.log(`rank ${c.rank} waiting, pid ${Deno.pid}`);
  setInterval(() => {}, 1000); // alive, and never reaches the barrier
  await new Promise(() => {});
}
await c.barrier();
console.log(`rank ${c.rank} ok (${c.name}, local rank ${c.localRank})`);
c.finalize();
