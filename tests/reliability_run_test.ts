/**
 * What a pretraining run does when things go wrong, each from a filed reproduction (2026-11-30): an
 * update that goes non-finite never reaches a checkpoint; a second process for one run directory is
 * refused while the first holds it, and a dead holder's lock is taken over; a run that died before its
 * first checkpoint resumes from step 0; Ctrl-C stops a `--workers 0` run at the step it reached, with a
 * checkpoint that resumes exactly; a checkpoint whose bytes changed is refused by its checksum.
 *
 * Micro student at 32 px, batch 4, synthetic data: each step is a fraction of a second.
 */
import { TEST_BACKEND, withTmp } from "./helpers.ts";
import { E, tf } from "../lib/deps.ts";
import { assert, assertEquals, assertGreater, assertStringIncludes } from "../lib/core/std.ts";
import { resolvePretrainConfig } from "../lib/config/pretrain.ts";
import { pretrain, type PretrainSummary } from "../lib/train/pretrain.ts";
import { latestCheckpoint, loadCheckpoint, saveCheckpoint, toTensors } from "../lib/train/checkpoint.ts";
import { readSafetensors } from "../lib/core/safetensors.ts";
import { nonFiniteHost } from "../lib/train/finite.ts";
import { lockPath } from "../lib/train/lock.ts";

const small = ["--image-size", "32", "--patch-size", "8", "--batch-size", "4", "--backend", TEST_BACKEND];

/** Runs `pretrain` in this process; its log lines and its result (a thrown error becomes a Left). */
const runHere = async (args: string[], stopAfter?: number) => {
  const cfg = resolvePretrainConfig(args);
  if (E.isLeft(cfg)) throw new Error(cfg.left);
  const lines: string[] = [];
  let result: E.Either<string, PretrainSummary>;
  try {
    result = await pretrain(cfg.right, { log: (l) => lines.push(l), tty: false, stopAfter });
  } catch (e) {
    result = E.left((e as Error).message);
  }
  return { lines, log: lines.join("\n"), result };
};

const leftOf = (r: E.Either<string, PretrainSummary>): string => {
  if (E.isRight(r)) throw new Error(`expected an error, the run ended at step ${r.right.steps}`);
  return r.left;
};

const rightOf = (r: E.Either<string, PretrainSummary>): PretrainSummary => {
  if (E.isLeft(r)) throw new Error(`expected a run, got:\n${r.left}`);
  return r.right;
};

/** `deno task pretrain ARGS` as a child process. */
const spawnTask = (args: string[]) =>
  new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../tasks/pretrain.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { CAEV2_BACKEND: Deno.env.get("CAEV2_BACKEND") ?? "auto" },
  }).spawn();

const lineCount = async (path: string) =>
  (await Deno.readTextFile(path).catch(() => "")).split("\n").filter((l) => l !== "").length;

/** Waits until `path` has at least `n` lines (a child's metrics.jsonl), or fails after `ms`. */
const waitForLines = async (path: string, n: number, ms = 120_000) => {
  const deadline = Date.now() + ms;
  for (;;) {
    const have = await lineCount(path);
    if (have >= n) return have;
    assert(Date.now() < deadline, `${path} did not reach ${n} lines in time (has ${have})`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

/** The child's exit, or a failure (the child killed) when it runs past `ms`. */
const exitWithin = async (child: Deno.ChildProcess, ms: number, what: string) => {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), ms)));
  const out = child.output();
  const first = await Promise.race([out, late]);
  clearTimeout(timer);
  if (first === "late") {
    child.kill("SIGKILL");
    await out;
    throw new Error(`${what}: still running after ${ms / 1000} s`);
  }
  return {
    code: first.code,
    stdout: new TextDecoder().decode(first.stdout),
    stderr: new TextDecoder().decode(first.stderr),
  };
};

/** Every tensor of every checkpoint file in the run: the names of those holding NaN or Inf. */
const nonFiniteOnDisk = async (dir: string): Promise<string[]> => {
  const bad: string[] = [];
  for await (const e of Deno.readDir(`${dir}/checkpoints`)) {
    if (!e.name.endsWith(".safetensors")) continue;
    const f = await readSafetensors(`${dir}/checkpoints/${e.name}`);
    bad.push(...nonFiniteHost(f.tensors).map((n) => `${e.name}:${n}`));
  }
  return bad;
};

const checkpointFiles = async (dir: string) => {
  const names: string[] = [];
  for await (const e of Deno.readDir(`${dir}/checkpoints`)) names.push(e.name);
  return names.sort();
};

Deno.test("an update that overflows the parameters stops the run before any checkpoint holds it", () =>
  withTmp("caev2-rel-nan-", async (dir) => {
    // The filed reproduction: lr 1e39 (Inf in float32). Step 1's loss is finite (computed before the
    // update), the update is not; --checkpoint-every 1 used to save it as step-000001 with Inf everywhere.
    const { result } = await runHere([
      ...small,
      "--steps",
      "6",
      "--lr",
      "1e39",
      "--checkpoint-every",
      "1",
      "--out",
      `${dir}/run`,
    ]);
    const message = leftOf(result);
    assertStringIncludes(message, "the update of step 1 went non-finite");
    assertStringIncludes(message, "the updated parameters hold NaN or Inf in");
    assertStringIncludes(message, "Stopped before writing anything of step 1");
    assertStringIncludes(message, "This run has no checkpoint yet");
    assertEquals(await checkpointFiles(`${dir}/run`), []);
    assertEquals(await Deno.readTextFile(`${dir}/run/metrics.jsonl`), "");

    // A checkpoint that holds Inf (written before this check existed) is refused on resume, by name.
    const ok = `${dir}/ok`;
    rightOf((await runHere([...small, "--steps", "4", "--out", ok], 1)).result);
    const latest = (await latestCheckpoint(ok)).checkpoint!;
    const ck = await loadCheckpoint(latest.path);
    assert(E.isRight(ck));
    const host = { ...ck.right.params };
    const [first] = Object.keys(host);
    host[first] = { shape: host[first].shape, data: host[first].data.map(() => Infinity) };
    const [params, opt] = [toTensors(host), toTensors(ck.right.opt)];
    await saveCheckpoint(ok, 1, { params, opt, meta: ck.right.meta });
    tf.dispose([...Object.values(params), ...Object.values(opt)]);
    const refused = leftOf((await runHere(["--resume", ok, "--backend", TEST_BACKEND], 1)).result);
    assertStringIncludes(refused, latest.path);
    assertStringIncludes(refused, `holds NaN or Inf in 1 tensor(s) (params.${first})`);
    assertEquals(await nonFiniteOnDisk(`${dir}/run`), []);
  }));

Deno.test("a second process for one run directory is refused with the holder's pid; a dead holder's lock is taken over", () =>
  withTmp("caev2-rel-lock-", async (dir) => {
    const run = `${dir}/run`;
    // The holder: a long run with a checkpoint every 2 steps (the filed case: a --resume of a run that
    // is still going used to run alongside it, both writing metrics.jsonl).
    const holder = spawnTask([...small, "--steps", "10000", "--checkpoint-every", "2", "--out", run]);
    try {
      // Line 3 is written after the checkpoint of step 2 is complete.
      await waitForLines(`${run}/metrics.jsonl`, 3);
      // A second process resuming the same directory: refused at once, naming the holder.
      const second = await exitWithin(
        spawnTask(["--resume", run]),
        60_000,
        "a second --resume of a held run",
      );
      assertEquals(second.code, 1, second.stdout + second.stderr);
      assertStringIncludes(second.stderr, `is in use by process ${holder.pid}`);
      assertStringIncludes(second.stderr, lockPath(run));
      // A fresh run to the same --out (in this process): refused the same way, and nothing is touched.
      const before = await Deno.readTextFile(`${run}/config.json`);
      const fresh = leftOf((await runHere([...small, "--steps", "10000", "--out", run])).result);
      assertStringIncludes(fresh, `is in use by process ${holder.pid}`);
      assertEquals(await Deno.readTextFile(`${run}/config.json`), before);
      assertGreater(await lineCount(`${run}/metrics.jsonl`), 0);
    } finally {
      holder.kill("SIGKILL");
      await holder.output();
    }
    // SIGKILL left the lock file behind; its holder is dead, so the next run takes it over, and releases it.
    const stale = JSON.parse(await Deno.readTextFile(lockPath(run)));
    assertEquals(stale.pid, holder.pid);
    const next = await runHere(["--resume", run, "--backend", TEST_BACKEND], 1);
    rightOf(next.result);
    assertStringIncludes(next.log, `took over the lock of ${run} left by process ${holder.pid}`);
    let gone = false;
    await Deno.stat(lockPath(run)).catch(() => (gone = true));
    assert(gone, "the lock file is removed when the run ends");
  }));

Deno.test("two fresh runs started together to one --out: exactly one is accepted", () =>
  withTmp("caev2-rel-race-", async (dir) => {
    const args = [...small, "--steps", "2", "--out", `${dir}/run`];
    const results = await Promise.all([0, 1].map((i) => exitWithin(spawnTask(args), 120_000, `run ${i}`)));
    const codes = results.map((r) => r.code).sort();
    assertEquals(codes, [0, 1], results.map((r) => r.stderr).join("\n"));
    const refusal = results.find((r) => r.code === 1)!.stderr;
    assert(
      refusal.includes("is in use by process") || refusal.includes("already holds a run"),
      refusal,
    );
    assertEquals(await lineCount(`${dir}/run/metrics.jsonl`), 2);
  }));

Deno.test("a run killed before its first checkpoint resumes from step 0, exactly; orphaned save files go", () =>
  withTmp("caev2-rel-early-", async (dir) => {
    const common = [...small, "--steps", "40", "--checkpoint-every", "100", "--seed", "3"];
    const run = `${dir}/run`;
    const child = spawnTask([...common, "--out", run]);
    await waitForLines(`${run}/metrics.jsonl`, 3);
    child.kill("SIGKILL");
    await child.output();
    assertEquals((await latestCheckpoint(run)).checkpoint, undefined);
    // What a kill in the middle of a save leaves: the temporary file of writeSafetensors, named with the
    // writer's pid. One of a dead process (a child that has exited), one of a live one (pid 1).
    const dead = new Deno.Command(Deno.execPath(), { args: ["--version"], stdout: "null" }).spawn();
    await dead.status;
    const orphan = `${run}/checkpoints/step-000004.safetensors.tmp-${dead.pid}-x1`;
    const alive = `${run}/checkpoints/step-000004.safetensors.tmp-1-x2`;
    await Deno.writeTextFile(orphan, "partial");
    await Deno.writeTextFile(alive, "partial");

    // A fresh run there is refused (its config.json would be overwritten), pointing at --resume.
    const fresh = leftOf((await runHere([...common, "--out", run])).result);
    assertStringIncludes(fresh, "stopped before its first checkpoint");
    assertStringIncludes(fresh, `--resume ${run}`);
    // A restart with a config that computes something else is refused: it would drop the other config's logs.
    const changed = leftOf((await runHere(["--resume", run, "--lr", "0.5"], 1)).result);
    assertStringIncludes(changed, "stopped before its first checkpoint and would restart from step 0");
    assertStringIncludes(changed, "hashes");
    // A checkpoint file without its index (killed between the two files) would be overwritten by the
    // restart's own save: it stops the restart until a person moves it.
    const half = `${run}/checkpoints/step-000100.safetensors`;
    await Deno.writeTextFile(half, "not finished");
    const blocked = leftOf((await runHere(["--resume", run, "--backend", TEST_BACKEND], 3)).result);
    assertStringIncludes(blocked, "incomplete or damaged checkpoint files");
    await Deno.remove(half);

    // --resume restarts it from step 0 and writes what an uninterrupted run writes.
    const resumed = await runHere(["--resume", run, "--backend", TEST_BACKEND], 3);
    assertEquals(rightOf(resumed.result).steps, 3);
    assertStringIncludes(resumed.log, `resuming ${run} from step 0: it stopped before its first checkpoint`);
    let removed = false;
    await Deno.stat(orphan).catch(() => (removed = true));
    assert(removed, "the dead writer's temporary file is removed");
    assertStringIncludes(resumed.log, `${alive} belongs to a process that still runs; left alone`);
    assertEquals(await Deno.readTextFile(alive), "partial");
    const ref = `${dir}/ref`;
    rightOf((await runHere([...common, "--out", ref], 3)).result);
    assertEquals(
      await Deno.readTextFile(`${run}/metrics.jsonl`),
      await Deno.readTextFile(`${ref}/metrics.jsonl`),
    );
    assertEquals(await lineCount(`${run}/timing.jsonl`), 3);
  }));

Deno.test("Ctrl-C (SIGINT) stops a --workers 0 run at the step it reached, with a checkpoint that resumes exactly", () =>
  withTmp("caev2-rel-sigint-", async (dir) => {
    const common = [
      ...small,
      "--steps",
      "200",
      "--checkpoint-every",
      "1000",
      "--seed",
      "4",
      "--workers",
      "0",
    ];
    const run = `${dir}/run`;
    const child = spawnTask([...common, "--out", run]);
    const seen = await waitForLines(`${run}/metrics.jsonl`, 3);
    const t0 = performance.now();
    child.kill("SIGINT");
    // Before the fix the signal waited for the next checkpoint: here the end of the run, step 200.
    const done = await exitWithin(child, 60_000, "the interrupted run");
    const seconds = (performance.now() - t0) / 1000;
    assertEquals(done.code, 0, done.stderr);
    const stopped = await lineCount(`${run}/metrics.jsonl`);
    assertStringIncludes(done.stdout, `pretrain: interrupted at step ${stopped}`);
    // The step in flight, plus at most a couple more while the signal reached the process.
    assert(stopped <= seen + 3, `SIGINT sent after step ${seen}, the run stopped at step ${stopped}`);
    assert(seconds < 20, `the run took ${seconds.toFixed(1)} s to stop`);
    const latest = await latestCheckpoint(run);
    assertEquals(latest.checkpoint?.step, stopped);

    // Resuming continues exactly: the same metrics as one uninterrupted run.
    const more = 2;
    rightOf((await runHere(["--resume", run, "--backend", TEST_BACKEND], more)).result);
    const ref = `${dir}/ref`;
    rightOf((await runHere([...common, "--out", ref], stopped + more)).result);
    assertEquals(
      await Deno.readTextFile(`${run}/metrics.jsonl`),
      await Deno.readTextFile(`${ref}/metrics.jsonl`),
    );
  }));

Deno.test("a checkpoint whose bytes changed is refused by its checksum; one without a checksum loads with a note", () =>
  withTmp("caev2-rel-rot-", async (dir) => {
    const run = `${dir}/run`;
    rightOf((await runHere([...small, "--steps", "4", "--out", run], 2)).result);
    const { checkpoint } = await latestCheckpoint(run);
    assert(checkpoint !== undefined);
    const original = await Deno.readFile(checkpoint.path);
    // Bit rot: a few bytes flipped in the tensor data, the size unchanged (so the index's size matches).
    const rotten = original.slice();
    for (const at of [rotten.length - 100, rotten.length - 7]) rotten[at] ^= 0x10;
    await Deno.writeFile(checkpoint.path, rotten);
    assertEquals((await latestCheckpoint(run)).checkpoint?.step, 2, "same size: structurally complete");
    const refused = leftOf((await runHere(["--resume", run, "--backend", TEST_BACKEND], 1)).result);
    assertStringIncludes(refused, `${checkpoint.path} is damaged`);
    assertStringIncludes(refused, "SHA-256");
    assertStringIncludes(refused, checkpoint.indexPath);

    // A checkpoint of format version 1 (no checksum): loads, saying it could not be verified.
    await Deno.writeFile(checkpoint.path, original);
    const index = JSON.parse(await Deno.readTextFile(checkpoint.indexPath));
    delete index.sha256;
    index.version = 1;
    await Deno.writeTextFile(checkpoint.indexPath, JSON.stringify(index));
    const old = await runHere(["--resume", run, "--backend", TEST_BACKEND], 1);
    assertEquals(rightOf(old.result).steps, 3);
    assertStringIncludes(old.log, "was written before checkpoints recorded a checksum");
    // The checkpoint written by the resumed run has its checksum again.
    const now = (await latestCheckpoint(run)).checkpoint!;
    assertEquals(now.step, 3);
    assertEquals(JSON.parse(await Deno.readTextFile(now.indexPath)).version, 2);
  }));
