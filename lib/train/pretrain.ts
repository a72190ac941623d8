/**
 * A CAE v2 pretraining run, end to end: backend, teacher, student, optimizer, data stream, run directory,
 * the fold of `trainStep` over the batches, metrics, progress, checkpoints and resume.
 *
 * Determinism: every random draw derives from `cfg.seed` through keys (init, teacher, data, steps), the
 * data stream restarts from the checkpoint's position, and step t's key is `foldIn(trainKey, t)`, so a
 * resumed run writes the same `metrics.jsonl` lines as an uninterrupted one. Wall-clock figures (images/s)
 * go to `timing.jsonl` and the progress display, never into `metrics.jsonl`. Evaluators given by the caller
 * (lib/train/evaluator.ts; the pretrain task builds the k-NN monitor of `--knn-every N` from lib/eval) measure
 * the live encoder every so many steps, each into `<name>.jsonl` (`knn.jsonl`); the run imports no evaluation.
 * The same figures (and images/s) go to TensorBoard event files in `<run dir>/tensorboard/`
 * (lib/core/tensorboard.ts), with the config as a text at step 0; a resumed run opens a new file that starts
 * with `session_log START` at its first step (a fresh run's starts with one at step 0), so TensorBoard drops
 * the points logged after the checkpoint.
 * Events never stop a run: a folder that cannot be written is warned about once.
 *
 * Never lose data:
 * - one process at a time runs a directory: it is locked (lib/train/lock.ts) before anything in it is read
 *   or written; a second process is refused with the holder's pid, a dead holder's lock is taken over;
 * - checkpoints are atomic and carry the SHA-256 of their bytes, verified on resume (lib/train/checkpoint.ts);
 * - every step checks its loss, its gradient norm and every tensor of the new state (parameters and AdamW
 *   moments) for NaN and Inf, in the same readback as the metrics, and stops before anything of a bad step
 *   is written: no checkpoint ever holds a non-finite value, and the one the error names is good;
 * - `--resume` of a run that stopped before its first checkpoint restarts it from step 0 with its own
 *   config (its logs are cut back and written again, identically); a fresh run never reuses a directory;
 * - SIGINT (Ctrl-C) and SIGTERM finish the step in flight, write a checkpoint and return: the loop gives
 *   the event loop a turn every step, so the signal is seen within one step.
 *
 * @module
 */
import { E, tf } from "../deps.ts";
import type { Key } from "../core/random.ts";
import { type BackendInfo, describeBackend } from "../core/backend.ts";
import { message } from "../core/fs.ts";
import { PrecisionError, startRuntime } from "../core/runtime.ts";
import { DEFAULT_LOSS_SCALE, initialLossScale, type LossScale, nextLossScale } from "../optim/loss_scale.ts";
import { type EventWriter, tolerantEventWriter } from "../core/tensorboard.ts";
import { disposeTree, flatten, type Params, unflatten } from "../core/tree.ts";
import { type Collective, single } from "../dist/collective.ts";
import { mpiCollective } from "../dist/mpi.ts";
import { configChanges, configHash, HASH_EXCLUDED_KEYS, type PretrainConfig } from "../config/pretrain.ts";
import { lrScheduleNote, peakLr, totalBatch, totalSteps, warmupStepsOf } from "./lr_policy.ts";
import { caev2Buffers, caev2Init, type CaeV2Params } from "../models/caev2.ts";
import type { CaeV2Config, ClipConfig } from "../models/config.ts";
import { gridOf } from "../models/config.ts";
import { clipInit, type ClipParams } from "../models/clip.ts";
import { describeClip, loadClip } from "../models/clip_load.ts";
import { clipMicro, defaultNumMasked, studentPreset } from "../models/presets.ts";
import type { AdamWState } from "../optim/adamw.ts";
import { fusedAdamw } from "../optim/fused_adamw.ts";
import { cosineSchedule } from "../optim/schedule.ts";
import { disposeState, type GradientTransformation, tensorsIn } from "../optim/transform.ts";
import { type DataSource, parseDataSource } from "../../data/source.ts";
import { checkBatchFits, datasetSize, pretrainLoader } from "../../data/loader.ts";
import { toBatch } from "../../data/batch.ts";
import type { DataPosition } from "../../data/batch.ts";
import {
  type CheckpointInfo,
  hasCheckpointFiles,
  latestCheckpoint,
  loadCheckpoint,
  removeOrphanedTemps,
  saveCheckpoint,
  toTensors,
} from "./checkpoint.ts";
import { stableHash } from "../config/hash.ts";
import { acquireRunLock } from "./lock.ts";
import { nonFiniteHost, nonFiniteNames, nonFiniteProbe, someNames } from "./finite.ts";
import { type MetricsWriter, openMetricsWriter, truncateMetricsAfter } from "./metrics.ts";
import { progress as makeProgress } from "./progress.ts";
import { createRunDir, resolvedRun, resumeRunDir, runPaths } from "./rundir.ts";
import { optStateFromFlat, optStateToFlat } from "./opt_state.ts";
import { METRIC_NAMES, type PretrainState, type StepBatch, trainStep } from "./step.ts";
import { broadcastParams, dataParallelStep, rowsOf } from "./data_parallel.ts";
import { runKeys } from "./run_keys.ts";
import { backendLimits, checkFits, stepFootprint } from "./footprint.ts";
import { checkEvaluators, describeEvaluation, evaluatesAt, type Evaluator } from "./evaluator.ts";

/** How a run ended. */
export interface PretrainSummary {
  readonly dir: string;
  readonly steps: number;
  readonly startStep: number;
  readonly last: Readonly<Record<string, number>> | undefined;
  readonly first: Readonly<Record<string, number>> | undefined;
  readonly seconds: number;
  readonly imagesPerSecond: number;
  /** Distinct data files skipped by this process (a file skipped in every epoch counts once). */
  readonly skipped: number;
  readonly interrupted: boolean;
  readonly checkpoint: string | undefined;
  /** This process's rank (0 without --distributed): only rank 0's summary is for people. */
  readonly rank: number;
}

/** Where the run's text goes (stdout by default; tests capture it). */
export interface PretrainIO {
  readonly log: (line: string) => void;
  readonly tty?: boolean;
  /** Stop (as SIGINT would) once this many steps are done in this process; for tests. */
  readonly stopAfter?: number;
}

/** What the caller plugs into a run. */
export interface PretrainHooks {
  /**
   * Measurements of the live student encoder every so many steps, each logged to `<run dir>/<name>.jsonl`
   * and the progress display (lib/train/evaluator.ts); e.g. `pretrainEvaluators(cfg)` of lib/eval/monitor.ts
   * for `--knn-every N`.
   */
  readonly evaluators?: readonly Evaluator[];
}

/** The shapes of a run, resolved from its config (and the teacher file, when given). */
export interface RunModels {
  readonly student: CaeV2Config;
  readonly teacher: ClipConfig;
  readonly teacherParams: ClipParams;
  readonly numMasked: number;
}

/** Teacher (loaded or random small), student config and mask count. */
export const resolveModels = async (cfg: PretrainConfig, teacherKey: Key): Promise<RunModels> => {
  let teacher: ClipConfig, teacherParams: ClipParams;
  if (cfg.teacher) {
    const loaded = await loadClip(cfg.teacher);
    teacher = loaded.config;
    teacherParams = loaded.params;
    if (teacher.imageSize !== cfg.imageSize || teacher.patchSize !== cfg.patchSize) {
      disposeTree(teacherParams);
      throw new Error(
        `the teacher ${cfg.teacher} takes ${teacher.imageSize}px images in ${teacher.patchSize}px patches, but the run ` +
          `uses --image-size ${cfg.imageSize} --patch-size ${cfg.patchSize}: set them to match the teacher`,
      );
    }
  } else {
    teacher = clipMicro(cfg.imageSize, cfg.patchSize);
    teacherParams = clipInit(teacherKey, teacher);
  }
  const student = studentPreset(cfg.model, {
    imageSize: cfg.imageSize,
    patchSize: cfg.patchSize,
    outDim: teacher.outDim,
    dropPath: cfg.dropPath,
  });
  const numMasked = cfg.numMasked ?? defaultNumMasked(cfg.model, gridOf(student).numPatches);
  return { student, teacher, teacherParams, numMasked };
};

/** The run directory's `*.jsonl` logs other than metrics.jsonl (which `resumeRunDir` cuts back). */
const sideLogs = async (dir: string): Promise<string[]> => {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.endsWith(".jsonl") && entry.name !== "metrics.jsonl") {
      names.push(entry.name);
    }
  }
  return names.sort();
};

const fmt = (v: number) => (Math.abs(v) >= 0.01 || v === 0 ? v.toFixed(4) : v.toExponential(2));

/** Runs (or resumes) a pretraining run. Left: a message for people; nothing written is lost. */
export const pretrain = async (
  cfg: PretrainConfig,
  io0: PretrainIO,
  hooks: PretrainHooks = {},
): Promise<E.Either<string, PretrainSummary>> => {
  let info: BackendInfo;
  try {
    info = await startRuntime(cfg.backend, { precision: cfg.precision });
  } catch (e) {
    if (e instanceof PrecisionError) return E.left(e.message);
    throw e;
  }
  // Data-parallel: every rank runs this function; rank 0 alone speaks and writes the run directory.
  let comm: Collective;
  try {
    comm = cfg.distributed === "mpi" ? mpiCollective() : single();
  } catch (e) {
    return E.left(message(e));
  }
  const io: PretrainIO = comm.rank === 0 ? io0 : { ...io0, log: () => {}, tty: false };
  io.log(describeBackend(info));
  // The global batch, what the learning rate and the epochs follow (as the official code's total batch).
  const global: PretrainConfig = { ...cfg, batchSize: cfg.batchSize * comm.size };
  if (comm.size > 1) {
    io.log(
      `distributed: ${comm.size} ranks (${comm.name}); --batch-size ${cfg.batchSize} per rank, global batch ` +
        `${totalBatch(global)}`,
    );
  }
  const checked = checkEvaluators(hooks.evaluators ?? []);
  if (E.isLeft(checked)) return checked;
  const evaluators = checked.right;

  const source = parseDataSource(cfg.data);
  if (E.isLeft(source)) return E.left(`--data ${cfg.data}: ${source.left}`);
  // Resolving the data set first means a bad --data fails before a run directory is created.
  let size: number | undefined;
  try {
    size = await datasetSize(source.right);
  } catch (e) {
    return E.left(`--data ${cfg.data}: ${(e as Error).message}`);
  }
  // A data set smaller than one batch would never make one: refused before a run directory exists.
  const unfit = checkBatchFits(source.right, size, global.batchSize);
  if (unfit !== undefined) return E.left(unfit);
  const total = totalSteps(global, size);
  if (E.isLeft(total)) return total;
  const steps = total.right;
  const hash = await configHash(cfg);
  const keys = runKeys(cfg.seed);
  const models = await resolveModels(cfg, keys.teacher);
  const { student, teacher, teacherParams, numMasked } = models;
  // The depth read from the file: a teacher cut short at a block boundary still loads.
  if (cfg.teacher) io.log(describeClip(cfg.teacher, teacher));
  // Before a run directory or a parameter exists: a step that cannot fit the backend is refused here,
  // with the estimate, the limit and what to change, instead of failing inside the first step.
  const refused = checkFits(
    stepFootprint(student, teacher, cfg.batchSize, numMasked, cfg.remat),
    backendLimits(info),
    cfg.remat,
  );
  if (refused !== undefined) {
    disposeTree(teacherParams);
    return E.left(`--model ${cfg.model} --batch-size ${cfg.batchSize} on ${info.name}: ${refused}`);
  }

  const lr = cosineSchedule({
    base: peakLr(global),
    final: cfg.minLr,
    totalSteps: steps,
    warmupSteps: warmupStepsOf(cfg, steps),
  });
  // AdamW (clip + Adam + decoupled decay + lr): fused kernels on WebGPU, the reference chain elsewhere.
  const optimizer = fusedAdamw({
    lr,
    weightDecay: cfg.weightDecay,
    clip: cfg.clipGrad > 0 ? cfg.clipGrad : undefined,
  });

  // The run directory is locked before anything in it is read or written, and stays locked until the run
  // ends however it ends (lib/train/lock.ts): a second process for the same directory is refused here.
  const dir = runPaths(cfg.resume ?? cfg.out).dir;
  if (comm.rank !== 0) {
    // Ranks > 0 touch no file: rank 0 sends them the start (lib/train/data_parallel.ts).
    try {
      const done = await runLocked(cfg, io, {
        dir,
        steps,
        hash,
        keys,
        models,
        evaluators: [],
        source: source.right,
        lr,
        optimizer,
        interrupted: () => false,
        comm,
        global,
      });
      if (E.isRight(done)) comm.finalize();
      return done;
    } finally {
      disposeTree(teacherParams);
    }
  }
  try {
    if (cfg.resume) {
      if (!(await Deno.stat(dir)).isDirectory) throw new Deno.errors.NotFound();
    } else await Deno.mkdir(dir, { recursive: true });
  } catch (e) {
    disposeTree(teacherParams);
    return E.left(
      e instanceof Deno.errors.NotFound
        ? `--resume ${dir}: no such directory; start a fresh run with --out ${dir}`
        : `cannot create the run directory ${dir}: ${message(e)}`,
    );
  }
  const lock = await acquireRunLock(dir);
  if (E.isLeft(lock)) {
    disposeTree(teacherParams);
    return lock;
  }
  const stale = lock.right.tookOver;
  if (stale !== undefined) {
    io.log(
      `note: took over the lock of ${dir} left by process ${stale.pid} (started ${stale.started}), which ` +
        "ended without releasing it",
    );
  }
  // SIGINT (Ctrl-C) and SIGTERM (what schedulers send before SIGKILL) stop the run after the step in
  // flight, with a checkpoint; the loop yields to the event loop every step so that they are seen at once.
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
  };
  const signals: Deno.Signal[] = [];
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    try {
      Deno.addSignalListener(sig, onSignal);
      signals.push(sig);
    } catch { /* signals unsupported here (SIGTERM on Windows) */ }
  }
  try {
    return await runLocked(cfg, io, {
      dir,
      steps,
      hash,
      keys,
      models,
      evaluators,
      source: source.right,
      lr,
      optimizer,
      interrupted: () => interrupted,
      comm,
      global,
    }).then((done) => {
      if (E.isRight(done)) comm.finalize();
      return done;
    });
  } finally {
    for (const sig of signals) {
      try {
        Deno.removeSignalListener(sig, onSignal);
      } catch { /* ignore */ }
    }
    disposeTree(teacherParams);
    await lock.right.release();
  }
};

/** What `pretrain` resolved before taking the run directory's lock. */
interface Resolved {
  readonly dir: string;
  readonly steps: number;
  readonly hash: string;
  readonly keys: ReturnType<typeof runKeys>;
  readonly models: RunModels;
  readonly evaluators: readonly Evaluator[];
  readonly source: DataSource;
  readonly lr: (step: number) => number;
  readonly optimizer: ReturnType<typeof fusedAdamw>;
  readonly interrupted: () => boolean;
  /** The processes of the job (one, without --distributed). */
  readonly comm: Collective;
  /** The config with the global batch as its batch size (what lr, epochs and throughput follow). */
  readonly global: PretrainConfig;
}

/** Where a run starts: its state, its data position and the checkpoint it came from (if any). */
interface Start {
  readonly state: PretrainState<AdamWState>;
  readonly position: DataPosition;
  readonly checkpoint: CheckpointInfo | undefined;
}

/** The state of a fresh run (step 0), the same for a new run and for a restart from step 0. */
const freshStart = (r: Resolved): Start => {
  const params = caev2Init(r.keys.init, r.models.student);
  return {
    state: { params, opt: r.optimizer.init(params), step: 0, key: r.keys.train },
    position: { epoch: 0, index: 0 },
    checkpoint: undefined,
  };
};

/**
 * The start of `--resume DIR`: its newest complete checkpoint, verified (checksum, finite values, config),
 * or step 0 for a run that stopped before its first checkpoint. Cuts metrics.jsonl and the side logs back to
 * the step it starts from (they are written again, identically).
 */
const resumeStart = async (
  cfg: PretrainConfig,
  io: PretrainIO,
  r: Resolved,
): Promise<E.Either<string, Start>> => {
  const { dir, hash } = r;
  // Under the lock, a save's temporary file whose writer is dead is an orphan of a kill during a save.
  const orphans = await removeOrphanedTemps(dir);
  if (orphans.removed.length > 0) {
    io.log(
      `note: removed ${orphans.removed.length} temporary file(s) of a save that was killed midway ` +
        `(${someNames(orphans.removed, 2)})`,
    );
  }
  orphans.kept.forEach((p) => io.log(`warning: ${p} belongs to a process that still runs; left alone`));
  const latest = await latestCheckpoint(dir);
  latest.warnings.forEach((w) => io.log(`warning: ${w}`));
  if (!latest.checkpoint) {
    // A run that failed before its first checkpoint (killed, out of memory, a data error) restarts from
    // step 0 with its own config: everything it wrote is recomputed identically, so nothing is lost. Any
    // checkpoint file there (incomplete or damaged) is left for a person to look at, and stops the restart,
    // since the restart's own saves would overwrite it.
    if (await hasCheckpointFiles(dir)) {
      const folder = runPaths(dir).checkpointsDir;
      return E.left(
        `${dir}: no complete checkpoint to resume from, and ${folder} holds incomplete or damaged checkpoint ` +
          "files (the warnings above say which and why). Move them out of that folder to restart the run " +
          `from step 0 with --resume ${dir}`,
      );
    }
    const stored = await readRunConfig(dir);
    if (E.isLeft(stored)) return stored;
    const storedHash = await stableHash(stored.right, HASH_EXCLUDED_KEYS);
    if (storedHash !== hash) {
      const changed = configChanges(stored.right, cfg);
      return E.left(
        `${dir} stopped before its first checkpoint and would restart from step 0, but its config.json hashes ` +
          `to ${storedHash} and this config to ${hash}` +
          (changed.length > 0 ? ` (these settings differ: ${changed.join(", ")})` : "") +
          ": restart it with its own config (drop the flags that change what it computes), or start a fresh " +
          "run with those flags in another directory (--out)",
      );
    }
    const resumed = await resumeRunDir(dir, 0);
    if (E.isLeft(resumed)) return resumed;
    for (const side of await sideLogs(dir)) await truncateMetricsAfter(`${dir}/${side}`, 0);
    io.log(
      `resuming ${dir} from step 0: it stopped before its first checkpoint` +
        (resumed.right.droppedMetrics > 0
          ? ` (the ${resumed.right.droppedMetrics} metrics line(s) it had written are written again, identically)`
          : ""),
    );
    return E.right(freshStart(r));
  }
  const at = latest.checkpoint;
  const loaded = await loadCheckpoint(at.path);
  if (E.isLeft(loaded)) return loaded;
  const ck = loaded.right;
  ck.notes.forEach((n) => io.log(`note: ${n}`));
  if (ck.meta.configHash !== hash) {
    // Name what differs, as flags: the hashes alone do not say which setting to drop.
    const stored = await readRunConfig(dir);
    const changed = E.isRight(stored) ? configChanges(stored.right, cfg) : [];
    return E.left(
      `${at.path} was written by a run with config hash ${ck.meta.configHash}, this config hashes to ${hash}: ` +
        (changed.length > 0
          ? `these settings differ from the run's config.json: ${changed.join(", ")}; resume without them ` +
            "(or start a fresh run with them in another directory, --out)"
          : "resume with the run's own config (drop the flags that change what it computes)"),
    );
  }
  // A checkpoint written before every step's update was checked (or damaged without a checksum) can hold
  // NaN or Inf; resuming from it would only fail later, naming it as good.
  const bad = [
    ...nonFiniteHost(ck.params).map((n) => `params.${n}`),
    ...nonFiniteHost(ck.opt).map((n) => `opt.${n}`),
  ];
  if (bad.length > 0) {
    const names = someNames(bad);
    return E.left(
      `${at.path} holds NaN or Inf in ${bad.length} tensor(s) (${names}): it cannot be resumed. Move it and ` +
        `${at.indexPath} out of the checkpoints folder to resume from the checkpoint before it`,
    );
  }
  const { student } = r.models;
  // Rebuild the record in the canonical order of `caev2Init` (the checkpoint stores names sorted): sums
  // over the record, such as the global gradient norm, then add in the same order as the run that wrote it.
  const like = caev2Init(r.keys.init, student);
  const order = Object.keys(flatten(like));
  disposeTree(like);
  const missing = order.filter((n) => !(n in ck.params));
  const extra = Object.keys(ck.params).filter((n) => !order.includes(n));
  if (missing.length + extra.length > 0) {
    return E.left(
      `${at.path}: its parameters do not match the ${cfg.model} preset (missing: ${
        missing.slice(0, 3).join(", ") || "none"
      }; unexpected: ${extra.slice(0, 3).join(", ") || "none"})`,
    );
  }
  const stored = toTensors(ck.params);
  const params = unflatten(Object.fromEntries(order.map((n) => [n, stored[n]]))) as CaeV2Params;
  const optTensors = toTensors(ck.opt);
  let opt: AdamWState;
  try {
    opt = optStateFromFlat(r.optimizer, params, optTensors, ck.meta.optHost, at.path);
  } catch (e) {
    tf.dispose([...Object.values(stored), ...Object.values(optTensors)]);
    throw e;
  }
  const resumed = await resumeRunDir(dir, ck.step);
  if (E.isLeft(resumed)) {
    disposeTree(params);
    disposeState(opt);
    return resumed;
  }
  // The side logs (timing.jsonl, the evaluators' <name>.jsonl, also those of evaluators not given to
  // this process) follow metrics.jsonl back to the checkpoint.
  for (const side of await sideLogs(dir)) await truncateMetricsAfter(`${dir}/${side}`, ck.step);
  io.log(`resuming ${dir} from step ${ck.step} (${at.path})`);
  return E.right({
    state: { params, opt, step: ck.step, key: ck.meta.key, lossScale: ck.meta.lossScale },
    position: ck.meta.dataPosition,
    checkpoint: at,
  });
};

/** The config.json of the run in `dir`, as stored. */
const readRunConfig = async (dir: string): Promise<E.Either<string, Record<string, unknown>>> => {
  const path = runPaths(dir).configPath;
  try {
    const v: unknown = JSON.parse(await Deno.readTextFile(path));
    if (typeof v !== "object" || v === null || Array.isArray(v)) return E.left(`${path}: not a JSON object`);
    return E.right(v as Record<string, unknown>);
  } catch (e) {
    return E.left(`${path}: ${message(e)}`);
  }
};

/**
 * Lets the event loop run: timers, I/O callbacks and signal listeners. A step whose data is decoded on the
 * main thread (`--workers 0`) and whose metrics come back from an already-resolved promise (the wasm and
 * cpu backends) awaits only microtasks, which never give the event loop a turn, so a SIGINT listener did
 * not run until the next checkpoint's file I/O (Ctrl-C at step 20 of 150 stopped at step 51). A timer
 * makes the runtime wait, and waiting is when Deno takes in signals; measured: a message through a
 * `MessageChannel` (25 us) also gives the event loop a turn but did not let the signal through. Costs
 * about 2 ms a step.
 */
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 0));

/** The run directory's record of how many ranks trained it (absent: one process). */
const worldPath = (dir: string) => `${dir}/distributed.json`;

/** Records the world size of a fresh data-parallel run (rank 0). */
const writeWorldSize = (dir: string, size: number): Promise<void> =>
  Deno.writeTextFile(worldPath(dir), JSON.stringify({ worldSize: size }) + "\n");

/**
 * A resumed run continues with the world size it was trained with: another one would change the global
 * batch (so the learning rate and the data order), which this toolkit does not reproduce exactly.
 */
const checkWorldSize = async (dir: string, size: number): Promise<E.Either<string, void>> => {
  let was = 1;
  try {
    const v = JSON.parse(await Deno.readTextFile(worldPath(dir))) as { worldSize?: unknown };
    if (typeof v.worldSize === "number") was = v.worldSize;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      return E.left(`${worldPath(dir)}: ${message(e)}`);
    }
  }
  if (was === size) return E.right(undefined);
  const how = (
    n: number,
  ) => (n === 1 ? "one process (no --distributed)" : `${n} ranks (mpirun -np ${n} ... --distributed mpi)`);
  return E.left(
    `${dir} was trained by ${how(was)} and this job has ${size === 1 ? "one process" : `${size} ranks`}: a ` +
      "different world size changes the global batch, the learning rate and the data order, so the run would " +
      `not continue as it began. Resume it with ${how(was)}, or start a fresh run (another --out)`,
  );
};

/** Rank 0's start (parameters, AdamW state, step, data position) on every rank. */
const shareStart = async (
  comm: Collective,
  optimizer: GradientTransformation<AdamWState>,
  start: Start,
): Promise<Start> => {
  const params = await broadcastParams(comm, start.state.params);
  const opt = optStateToFlat(start.state.opt);
  const optTensors = await broadcastParams(comm, opt.tensors as Params);
  const host = new TextEncoder().encode(JSON.stringify({
    step: start.state.step,
    key: start.state.key,
    position: start.position,
    optHost: opt.host,
    lossScale: start.state.lossScale,
  }));
  const length = new Int32Array([host.length]);
  await comm.broadcast(length, 0);
  const bytes = comm.rank === 0 ? host : new Uint8Array(length[0]);
  await comm.broadcast(bytes, 0);
  const h = JSON.parse(new TextDecoder().decode(bytes));
  const state: PretrainState<AdamWState> = {
    params,
    opt: optStateFromFlat(optimizer, params, flatten(optTensors), h.optHost, "rank 0's start"),
    step: h.step,
    key: h.key,
    lossScale: h.lossScale,
  };
  tf.dispose(Object.values(flatten(optTensors)).filter((t) => !tensorsIn(state.opt).includes(t)));
  disposeTree(start.state.params);
  disposeState(start.state.opt);
  return { state, position: h.position, checkpoint: start.checkpoint };
};

/** `state` with a loss scale (f16: its own, or the initial one) or without one (f32). */
const withLossScale = <S>(state: PretrainState<S>, f16: boolean, initial: number): PretrainState<S> => {
  if (f16) {
    return { ...state, lossScale: state.lossScale ?? initialLossScale({ ...DEFAULT_LOSS_SCALE, initial }) };
  }
  const { lossScale: _, ...rest } = state;
  return rest;
};

/** The run itself, with the run directory locked. */
const runLocked = async (
  cfg: PretrainConfig,
  io: PretrainIO,
  r: Resolved,
): Promise<E.Either<string, PretrainSummary>> => {
  const { steps, hash, evaluators, lr, optimizer } = r;
  const { student, teacher, teacherParams, numMasked } = r.models;
  const { comm, global } = r;
  let start: Start;
  if (comm.rank !== 0) start = freshStart(r);
  else if (cfg.resume) {
    const world = await checkWorldSize(r.dir, comm.size);
    if (E.isLeft(world)) return world;
    const resumed = await resumeStart(cfg, io, r);
    if (E.isLeft(resumed)) return resumed;
    start = resumed.right;
  } else {
    const created = await createRunDir(
      r.dir,
      cfg,
      resolvedRun(cfg, { steps, numMasked, student, teacher, worldSize: comm.size, configHash: hash }),
    );
    if (E.isLeft(created)) return created;
    if (comm.size > 1) await writeWorldSize(r.dir, comm.size);
    start = freshStart(r);
  }
  // Every rank starts from rank 0's state (a fresh init or the checkpoint it read).
  if (comm.size > 1) start = await shareStart(comm, r.optimizer, start);
  // f16 keeps a loss scale (the checkpoint's when it has one: resumed exactly); f32 none, whatever the
  // checkpoint was written in.
  let state: PretrainState<AdamWState> = withLossScale(start.state, cfg.precision === "f16", cfg.lossScale);
  let position = start.position;
  if (cfg.precision === "f16") {
    io.log(
      `precision f16: f16 products and saved activations, f32 weights and update; loss scale ` +
        `${state.lossScale!.scale}${
          start.state.lossScale === undefined ? " (initial)" : " (from the checkpoint)"
        }`,
    );
  }
  const run = runPaths(r.dir);
  const L = gridOf(student).numPatches;
  io.log(
    `pretrain: ${cfg.model} student (${student.dim} wide, ${student.depth} deep, regressor ${student.regressorDepth}x${student.regressorDim}) ` +
      `on ${cfg.imageSize}px images, ${L} patches, ${numMasked} masked; teacher ${
        cfg.teacher ?? "random micro CLIP"
      } ` +
      `(${teacher.width} wide, ${teacher.layers} layers, out ${teacher.outDim}); ${steps} steps of ${
        totalBatch(global)
      } images; ` +
      `peak lr ${fmt(peakLr(global))}; run dir ${run.dir}`,
  );
  const lrNote = lrScheduleNote(global);
  if (lrNote !== undefined) io.log(lrNote);

  const buffers = caev2Buffers(student);
  const stepCfg = {
    student,
    teacher,
    teacherParams,
    buffers,
    optimizer,
    weights: { visible: cfg.visibleWeight, masked: cfg.maskedWeight },
    remat: cfg.remat,
  };
  // One process: the reducer; several: the same update from the ranks' averaged gradients.
  const step = comm.size > 1
    ? dataParallelStep(stepCfg, comm)
    : (s: PretrainState<AdamWState>, b: readonly StepBatch[]) => Promise.resolve(trainStep(stepCfg)(s, b));
  const rows = comm.size > 1 ? rowsOf(comm.rank, comm.size, cfg.batchSize) : undefined;
  const loader = pretrainLoader(
    {
      source: r.source,
      batchSize: cfg.batchSize,
      imageSize: cfg.imageSize,
      patchSize: cfg.patchSize,
      numMasked,
      masking: cfg.masking,
      workers: cfg.workers,
      shard: comm.size > 1 ? { rank: comm.rank, size: comm.size } : undefined,
    },
    r.keys.data,
    position,
  );
  // Rank 0 alone writes the run directory.
  const writer = (path: string): Promise<MetricsWriter> =>
    comm.rank === 0 ? openMetricsWriter(path) : Promise.resolve({ path, write: () => {}, close: () => {} });
  const metricsOut = await writer(run.metricsPath);
  const timingOut = await writer(`${run.dir}/timing.jsonl`);
  const evalOut = [];
  for (const e of evaluators) evalOut.push(await writer(`${run.dir}/${e.name}.jsonl`));
  const bar = makeProgress({
    label: "pretrain",
    total: steps,
    logEvery: cfg.logEvery,
    startStep: state.step,
    itemsPerStep: totalBatch(global),
    tty: io.tty,
    write: io.tty === false ? (t) => io.log(t.replace(/\n$/, "")) : undefined,
  });

  // TensorBoard (rank 0 only). Every file starts with session_log START: a fresh run's at step 0 (then its
  // config), a resumed run's at the first step it logs, which drops the interrupted run's points from there
  // on (TensorBoard takes a run's first START as its start, and each later one as a restart).
  const events: EventWriter | undefined = comm.rank === 0
    ? await tolerantEventWriter(`${run.dir}/tensorboard`, (m) => bar.log(m))
    : undefined;
  events?.sessionStart(cfg.resume ? state.step + 1 : 0);
  if (!cfg.resume) events?.text(0, "config", configMarkdown(cfg, steps, global));

  const startStep = state.step;
  const t0 = performance.now();
  let first: Record<string, number> | undefined, last: Record<string, number> | undefined;
  // The newest checkpoint known to be finite: one this process wrote (every state is checked before it can
  // be saved) or the one it resumed from (checked when loaded).
  let lastCheckpoint: CheckpointInfo | undefined = start.checkpoint;
  let interrupted = false;
  const save = async () => {
    if (comm.rank !== 0) return;
    const opt = optStateToFlat(state.opt);
    lastCheckpoint = await saveCheckpoint(run.dir, state.step, {
      params: flatten(state.params),
      opt: opt.tensors,
      meta: {
        step: state.step,
        key: state.key,
        configHash: hash,
        dataPosition: position,
        optHost: { ...opt.host },
        ...(state.lossScale === undefined ? {} : { lossScale: { ...state.lossScale } }),
      },
    }, cfg.keepCheckpoints);
  };
  try {
    const it = loader[Symbol.asyncIterator]();
    while (state.step < steps) {
      const tStep = performance.now();
      const hosts = [];
      for (let i = 0; i < cfg.accumulate; i++) {
        const next = await it.next();
        if (next.done) throw new Error(`the data stream ended at step ${state.step}`);
        hosts.push(next.value);
      }
      const batches = hosts.map((h) => ({ ...toBatch(h), rows }));
      let result;
      try {
        result = await step(state, batches);
      } finally {
        batches.forEach((b) => tf.dispose([b.studentImages, b.teacherImages]));
      }
      // One readback per step: the metrics and, per tensor of the new state, whether it is finite.
      const newParams = flatten(result.state.params);
      const newOpt = optStateToFlat(result.state.opt).tensors;
      const readback = tf.tidy(() =>
        tf.concat([
          result.metrics,
          nonFiniteProbe([...Object.values(newParams), ...Object.values(newOpt)]),
        ])
      );
      result.metrics.dispose();
      let values: Float32Array;
      try {
        values = (await readback.data()) as Float32Array;
      } finally {
        readback.dispose();
      }
      const m = { loss: values[0], lossVisible: values[1], lossMasked: values[2], gradNorm: values[3] };
      const probe = values.subarray(METRIC_NAMES.length);
      // The lr of this update: the schedule runs on the optimizer's count, which skipped f16 steps (as in
      // optax's apply_if_finite) did not advance.
      const lrNow = lr(state.step - (state.lossScale?.skipped ?? 0));
      const badParams = nonFiniteNames(Object.keys(newParams), probe);
      const badOpt = nonFiniteNames(Object.keys(newOpt), probe.subarray(Object.keys(newParams).length));
      const finiteStep = Number.isFinite(m.loss) && Number.isFinite(m.gradNorm);
      // f16: non-finite gradients are an overflow of the scaled f16 products. The update is skipped (the
      // state before it kept, the step and the data moving on, as PyTorch's GradScaler does) and the scale
      // halved; only a long run of them stops the run, through the guard below.
      const skip = state.lossScale !== undefined && !finiteStep &&
        state.lossScale.inARow + 1 < DEFAULT_LOSS_SCALE.maxSkipsInARow;
      if (skip) {
        disposeTree(result.state.params);
        disposeState(result.state.opt);
      } else if (!finiteStep || badParams.length + badOpt.length > 0) {
        disposeTree(result.state.params);
        disposeState(result.state.opt);
        throw new Error(
          nonFiniteMessage(
            state.step + 1,
            m,
            lrNow,
            {
              params: badParams,
              paramCount: Object.keys(newParams).length,
              opt: badOpt,
              optCount: Object.keys(newOpt).length,
            },
            lastCheckpoint,
            run.dir,
            state.lossScale,
          ),
        );
      }
      if (skip) {
        state = { ...state, step: state.step + 1, lossScale: nextLossScale(state.lossScale!, false) };
        bar.log(
          `step ${state.step}: f16 overflow (loss ${m.loss}, gradient norm ${m.gradNorm}); update skipped, ` +
            `loss scale ${state.lossScale!.scale * DEFAULT_LOSS_SCALE.factor} -> ${state.lossScale!.scale}`,
        );
      } else {
        // The ownership rule: the step returned fresh tensors; dispose the state it replaced.
        disposeTree(state.params);
        disposeState(state.opt);
        const ls = state.lossScale;
        state = ls === undefined ? result.state : { ...result.state, lossScale: nextLossScale(ls, true) };
      }
      position = hosts[hosts.length - 1].position;
      const scaling = state.lossScale;
      const record = {
        step: state.step,
        loss: m.loss,
        lossVisible: m.lossVisible,
        lossMasked: m.lossMasked,
        lr: lrNow,
        gradNorm: m.gradNorm,
        // f16 only: the scale the next step uses, and the updates skipped so far.
        ...(scaling === undefined ? {} : { lossScale: scaling.scale, skippedSteps: scaling.skipped }),
      };
      metricsOut.write(record);
      const seconds = (performance.now() - tStep) / 1000;
      timingOut.write({ step: state.step, seconds, imagesPerSecond: totalBatch(global) / seconds });
      events?.scalars(state.step, {
        "train/loss": m.loss,
        "train/loss_visible": m.lossVisible,
        "train/loss_masked": m.lossMasked,
        "train/lr": lrNow,
        "train/grad_norm": m.gradNorm,
        "perf/images_per_second": totalBatch(global) / seconds,
        ...(scaling === undefined
          ? {}
          : { "train/loss_scale": scaling.scale, "train/skipped_steps": scaling.skipped }),
      });
      first ??= record;
      last = record;
      bar.update(state.step, { loss: m.loss, vis: m.lossVisible, msk: m.lossMasked, lr: lrNow });
      for (const [i, e] of evaluators.entries()) {
        if (!evaluatesAt(e, state.step, steps)) continue;
        // Deterministic evaluators (such as the k-NN monitor), so a resumed run logs the same.
        const encoder = { config: student, params: state.params.encoder, pos: buffers.pos };
        const numbers = await e.run({ step: state.step, steps, encoder });
        evalOut[i].write({ step: state.step, ...numbers });
        events?.scalars(
          state.step,
          Object.fromEntries(Object.entries(numbers).map(([k, v]) => [`${e.name}/${k}`, v])),
        );
        bar.log(describeEvaluation(e, state.step, numbers));
      }
      // A signal that arrived during this step is seen here, not at the next checkpoint's file I/O.
      await yieldToEventLoop();
      let stopNow = r.interrupted() ||
        (io.stopAfter !== undefined && state.step - startStep >= io.stopAfter);
      if (comm.size > 1) {
        // Every rank stops at the same step, if any rank was asked to.
        const flag = new Float32Array([stopNow ? 1 : 0]);
        await comm.allReduceSum(flag);
        stopNow = flag[0] > 0;
      }
      if (state.step % cfg.checkpointEvery === 0 || state.step === steps || stopNow) await save();
      if (stopNow) {
        interrupted = true;
        break;
      }
    }
    bar.done();
  } finally {
    metricsOut.close();
    timingOut.close();
    evalOut.forEach((w) => w.close());
    events?.close();
    tf.dispose([buffers.pos, buffers.regressorPos]);
    await loader.close();
    disposeTree(state.params);
    disposeState(state.opt);
  }
  const seconds = (performance.now() - t0) / 1000;
  return E.right({
    dir: run.dir,
    steps: state.step,
    startStep,
    first,
    last,
    seconds,
    imagesPerSecond: ((state.step - startStep) * totalBatch(global)) / seconds,
    // Distinct files: a file skipped in every epoch is one skipped file.
    skipped: loader.stats.skippedDistinct,
    interrupted,
    checkpoint: lastCheckpoint?.path,
    rank: comm.rank,
  });
};

/** The run's resolved config as markdown (TensorBoard's Text tab): one row per setting, then what follows. */
const configMarkdown = (cfg: PretrainConfig, steps: number, global: PretrainConfig): string => {
  const cell = (v: unknown) => `\`${JSON.stringify(v ?? null).replaceAll("|", "\\|")}\``;
  return [
    "| setting | value |",
    "| --- | --- |",
    ...Object.entries(cfg).map(([k, v]) => `| ${k} | ${cell(v)} |`),
    "",
    `${steps} steps of ${totalBatch(global)} images, peak lr ${peakLr(global)}.`,
  ].join("\n");
};

/** Which tensors of a step's new state went non-finite. */
interface NonFinite {
  readonly params: readonly string[];
  readonly paramCount: number;
  readonly opt: readonly string[];
  readonly optCount: number;
}

/** The error of a step that went non-finite: the step, what went non-finite, and what is safe. */
const nonFiniteMessage = (
  step: number,
  m: { loss: number; lossVisible: number; lossMasked: number; gradNorm: number },
  lr: number,
  bad: NonFinite,
  last: CheckpointInfo | undefined,
  dir: string,
  lossScale?: LossScale,
): string => {
  const what: string[] = [];
  if (lossScale !== undefined && lossScale.inARow > 0) {
    what.push(
      `in f16, ${lossScale.inARow + 1} steps in a row overflowed although the loss scale fell to ` +
        `${lossScale.scale}: the overflow is not in the scaled gradients (try --precision f32)`,
    );
  }
  if (!Number.isFinite(m.loss)) {
    what.push(
      `the loss became ${m.loss} at step ${step} (visible ${m.lossVisible}, masked ${m.lossMasked}, grad norm ` +
        `${m.gradNorm}, lr ${lr})`,
    );
  } else if (!Number.isFinite(m.gradNorm)) {
    what.push(`the gradient norm became ${m.gradNorm} at step ${step} (loss ${m.loss}, lr ${lr})`);
  } else {
    what.push(
      `the update of step ${step} went non-finite although its loss (${m.loss}) and gradient norm ` +
        `(${m.gradNorm}) were finite (lr ${lr})`,
    );
  }
  if (bad.params.length > 0) {
    what.push(
      `the updated parameters hold NaN or Inf in ${bad.params.length} of ${bad.paramCount} tensors ` +
        `(${someNames(bad.params)})`,
    );
  }
  if (bad.opt.length > 0) {
    what.push(
      `AdamW's updated state holds NaN or Inf in ${bad.opt.length} of ${bad.optCount} tensors ` +
        `(${someNames(bad.opt)})`,
    );
  }
  const safe = last !== undefined
    ? `The last good checkpoint is ${last.path} (step ${last.step}; every value in it is finite). Resuming it ` +
      "with the same config repeats this step, so"
    : `This run has no checkpoint yet (--resume ${dir} would restart it from step 0 with the same config and ` +
      "fail the same way), so";
  return `${what.join("; ")}. Stopped before writing anything of step ${step}. ${safe} start a fresh run ` +
    "(another --out) with a lower --lr or a --clip-grad";
};

/** The one-line summary printed at the end of a run. */
export const formatSummary = (s: PretrainSummary): string => {
  const l = s.last;
  const parts = l
    ? `loss ${fmt(s.first?.loss ?? NaN)} -> ${fmt(l.loss)} (visible ${fmt(l.lossVisible)}, masked ${
      fmt(l.lossMasked)
    })`
    : "no step run";
  return `pretrain: ${s.interrupted ? "interrupted" : "done"} at step ${s.steps}; ${parts}; ${
    s.seconds.toFixed(1)
  } s, ` +
    `${s.imagesPerSecond.toFixed(1)} img/s; ${s.skipped} skipped file(s); checkpoint ${
      s.checkpoint ?? "none"
    }; run ${s.dir}`;
};
