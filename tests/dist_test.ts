/**
 * The Open MPI collective (lib/dist/mpi.ts) with two real ranks under `mpirun`: sums, bucketed sums,
 * broadcast and barrier agree on both ranks; a rank that throws, and a rank killed while the other waits
 * in a collective, end the whole job within seconds instead of leaving it hanging. `.ci/run` installs
 * `openmpi-bin` (Debian) on a fresh machine.
 */
import { assert, assertEquals, assertStringIncludes } from "../lib/core/std.ts";
import { launchedByMpi } from "../lib/dist/mpi.ts";
import { single } from "../lib/dist/collective.ts";

const root = new URL("..", import.meta.url).pathname;
const rankScript = new URL("./dist/collective_rank.ts", import.meta.url).pathname;

const hasMpirun = await new Deno.Command("mpirun", { args: ["--version"], stdout: "null", stderr: "null" })
  .output().then((o) => o.success, () => false);
const NO_MPI = "mpirun is missing: apt-get install openmpi-bin (.ci/run does)";

const mpirun = (env: Record<string, string> = {}) =>
  new Deno.Command("mpirun", {
    args: ["--allow-run-as-root", "--oversubscribe", "-np", "2", Deno.execPath(), "run", "-A", rankScript],
    cwd: root,
    env,
    stdout: "piped",
    stderr: "piped",
  });

const text = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("mpi: sums, bucketed sums, broadcast and barrier agree on two ranks", async () => {
  assert(hasMpirun, NO_MPI);
  const out = await mpirun().output();
  const stdout = text(out.stdout);
  assertEquals(out.code, 0, `${stdout}\n${text(out.stderr)}`);
  assertStringIncludes(stdout, "rank 0 ok (mpi (Open MPI");
  assertStringIncludes(stdout, "rank 1 ok");
});

Deno.test("mpi: a rank that throws ends the whole job within seconds", async () => {
  assert(hasMpirun, NO_MPI);
  const t0 = performance.now();
  const out = await mpirun({ FAIL_RANK: "1" }).output();
  assert(out.code !== 0, "the job must fail");
  assertStringIncludes(text(out.stderr), "rank 1 fails on purpose");
  assert(performance.now() - t0 < 30_000, "ended within seconds");
});

Deno.test("mpi: a rank killed while the other waits in a collective ends the job", async () => {
  assert(hasMpirun, NO_MPI);
  const child = mpirun({ HANG_RANK: "1" }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const t0 = performance.now();
  while (!/pid (\d+)/.test(seen)) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += value;
  }
  const pid = Number(/pid (\d+)/.exec(seen)?.[1]);
  assert(Number.isInteger(pid), `no pid in: ${seen}`);
  Deno.kill(pid, "SIGKILL");
  const drain = (async () => {
    while (!(await reader.read()).done) { /* until the job's output ends */ }
  })();
  const status = await child.status;
  await drain;
  await child.stderr.cancel();
  assert(!status.success, "the job must fail");
  assert(performance.now() - t0 < 30_000, "ended within seconds, not hung in the barrier");
});

Deno.test("the single-process collective is the identity, and MPI launches are recognised", async () => {
  const c = single();
  const x = new Float32Array([1, 2]);
  await c.allReduceSum(x);
  await c.broadcast(x, 0);
  await c.barrier();
  assertEquals([...x], [1, 2]);
  assertEquals([c.rank, c.size], [0, 1]);
  assert(launchedByMpi((n) => (n === "OMPI_COMM_WORLD_SIZE" ? "2" : undefined)));
  assert(!launchedByMpi(() => undefined));
});
