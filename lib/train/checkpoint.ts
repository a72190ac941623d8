/**
 * Checkpoints of a training run, in `<run>/checkpoints/`:
 *
 * - `step-000123.safetensors`: the student's parameters as `params.<name>` (flat dotted names,
 *   lib/core/tree.ts), the optimizer's tensors as `opt.<path>` (their path in the optimizer's state tree,
 *   AdamW's `opt.1.mu.<name>`: lib/train/opt_state.ts), and the meta (step, PRNG key, config hash, data
 *   position, the optimizer state's JSON skeleton with its counts) as JSON in `__metadata__.meta`;
 * - `step-000123.json`: the same meta plus the tensor names, the safetensors file's size and its SHA-256.
 *
 * Both files are written atomically (tmp + rename), the JSON after the safetensors, so a checkpoint is
 * complete exactly when its JSON exists and the safetensors has the size the JSON records. The SHA-256
 * catches what the size cannot: bytes that changed in place (bit rot, a bad copy); `loadCheckpoint`
 * verifies it and refuses a file that does not match. Checkpoints of format version 1 have no checksum
 * and still load, with a note saying they could not be verified. Older
 * checkpoints are pruned only after a newer one is complete. The teacher is never checkpointed
 * (docs/design.md, principle 5).
 *
 * @module
 */
import { E, pipe, t, type tf } from "../deps.ts";
import type { Flat } from "../core/tree.ts";
import type { Key } from "../core/random.ts";
import {
  type HostTensor,
  readHeader,
  readSafetensors,
  SafetensorsError,
  type SafetensorsHeader,
  toTensor,
  writeSafetensors,
} from "../core/safetensors.ts";
import { decodeWith, Json, NonNegativeInt, PositiveNumber, strict } from "../config/codec.ts";
import type { LossScale } from "../optim/loss_scale.ts";
import { message, readJsonFile, writeJsonAtomic } from "../core/fs.ts";
import { runPaths } from "./rundir.ts";
import { pidAlive } from "./lock.ts";
import { createHash } from "node:crypto";

/** Where the data stream stands: the epoch and the index of the next example in it. */
export interface DataPosition {
  readonly epoch: number;
  readonly index: number;
}

/** Everything besides tensors that a resumed run needs to continue exactly. */
export interface CheckpointMeta {
  /** Optimizer steps done. */
  readonly step: number;
  /** The run key (steps derive theirs with `foldIn(key, step)`). */
  readonly key: Key;
  /** `configHash` of the config that wrote the checkpoint. */
  readonly configHash: string;
  /** Position of the data stream after `step` steps. */
  readonly dataPosition: DataPosition;
  /** The optimizer's host-side state (counts), JSON. */
  readonly optHost: Json;
  /** `--precision f16`'s dynamic loss scale (lib/optim/loss_scale.ts); absent from f32 runs' checkpoints. */
  readonly lossScale?: LossScale;
}

/** What a checkpoint holds. */
export interface CheckpointState {
  /** Student parameters by flat name. */
  readonly params: Flat;
  /** Optimizer tensors by flat name. */
  readonly opt: Flat;
  readonly meta: CheckpointMeta;
}

const Uint32 = t.brand(
  t.number,
  (n): n is t.Branded<number, { readonly Uint32: unique symbol }> =>
    Number.isInteger(n) && n >= 0 && n < 2 ** 32,
  "Uint32",
);

const MetaCodec = strict({
  step: NonNegativeInt,
  key: t.tuple([Uint32, Uint32]),
  configHash: t.string,
  dataPosition: strict({ epoch: NonNegativeInt, index: NonNegativeInt }),
  optHost: Json,
}, {
  lossScale: strict({
    scale: PositiveNumber,
    good: NonNegativeInt,
    skipped: NonNegativeInt,
    inARow: NonNegativeInt,
  }),
});

const FORMAT = "caev2-checkpoint";
/** 2: the index records the SHA-256 of the safetensors file; 1 (still read): no checksum. */
const VERSION = 2;

const IndexCodec = strict({
  format: t.literal(FORMAT),
  version: t.union([t.literal(1), t.literal(2)]),
  step: NonNegativeInt,
  file: t.string,
  bytes: NonNegativeInt,
  params: t.array(t.string),
  opt: t.array(t.string),
  meta: MetaCodec,
}, { sha256: t.string });

/**
 * Lower-case hex SHA-256 of a file's bytes, read in 8 MiB pieces (a checkpoint can be larger than what one
 * read should hold).
 */
export const sha256File = async (path: string): Promise<string> => {
  const hash = createHash("sha256");
  const file = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(8 << 20);
    for (;;) {
      const n = await file.read(buf);
      if (n === null) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    file.close();
  }
  return hash.digest("hex");
};

/** `step-000123` (at least six digits; longer steps keep all theirs). */
export const checkpointName = (step: number): string => `step-${String(step).padStart(6, "0")}`;

const STEP_FILE = /^step-(\d+)\.(safetensors|json)$/;

/** A complete checkpoint on disk. */
export interface CheckpointInfo {
  readonly step: number;
  /** The `.safetensors` file. */
  readonly path: string;
  /** The `.json` index. */
  readonly indexPath: string;
  readonly meta: CheckpointMeta;
}

const asMeta = (m: t.TypeOf<typeof MetaCodec>): CheckpointMeta => ({
  step: m.step,
  key: [m.key[0], m.key[1]],
  configHash: m.configHash,
  dataPosition: { epoch: m.dataPosition.epoch, index: m.dataPosition.index },
  optHost: m.optHost,
  ...(m.lossScale === undefined ? {} : { lossScale: { ...m.lossScale } }),
});

/** Steps that have a file in `dir` (complete or not), newest first. */
const stepsOnDisk = async (dir: string): Promise<number[]> => {
  const steps = new Set<number>();
  try {
    for await (const entry of Deno.readDir(dir)) {
      const m = STEP_FILE.exec(entry.name);
      if (m !== null && entry.isFile) steps.add(Number(m[1]));
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  return [...steps].sort((a, b) => b - a);
};

/**
 * Checks the checkpoint of `step` in `dir` without reading its tensors: the index parses, the safetensors
 * file has the recorded size and its header lists every recorded tensor.
 */
const inspect = async (dir: string, step: number): Promise<E.Either<string, CheckpointInfo>> => {
  const name = checkpointName(step);
  const indexPath = `${dir}/${name}.json`;
  const path = `${dir}/${name}.safetensors`;
  const json = await readJsonFile(indexPath);
  if (json === undefined) return E.left(`${indexPath} is missing (the save did not finish)`);
  if (E.isLeft(json)) return json;
  const index = decodeWith(IndexCodec, json.right, indexPath);
  if (E.isLeft(index)) return index;
  const ix = index.right;
  if (ix.step !== step) return E.left(`${indexPath}: records step ${ix.step}, not ${step}`);
  if (ix.version >= 2 && ix.sha256 === undefined) {
    return E.left(`${indexPath}: a version ${ix.version} index without its "sha256"`);
  }
  let size: number;
  try {
    size = (await Deno.stat(path)).size;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return E.left(`${path} is missing (its index ${indexPath} exists)`);
    }
    return E.left(`${path}: ${message(e)}`);
  }
  if (size !== ix.bytes) {
    return E.left(`${path} has ${size} bytes, its index records ${ix.bytes} (truncated or overwritten)`);
  }
  let header: SafetensorsHeader;
  try {
    header = await readHeader(path);
  } catch (e) {
    return E.left(`${path}: ${e instanceof SafetensorsError ? e.problem : message(e)}`);
  }
  const missing = [...ix.params.map((n) => `params.${n}`), ...ix.opt.map((n) => `opt.${n}`)].filter((n) =>
    !(n in header.tensors)
  );
  if (missing.length > 0) {
    return E.left(
      `${path} lacks ${missing.length} tensors its index lists: ${missing.slice(0, 5).join(", ")}`,
    );
  }
  return E.right({ step, path, indexPath, meta: asMeta(ix.meta) });
};

/**
 * Saves a checkpoint of `state` at `step` in `<runDir>/checkpoints/`, then deletes the checkpoints older
 * than the newest `keep` complete ones. Returns the new checkpoint.
 */
export const saveCheckpoint = async (
  runDir: string,
  step: number,
  state: CheckpointState,
  keep = Infinity,
): Promise<CheckpointInfo> => {
  if (state.meta.step !== step) {
    throw new Error(`saveCheckpoint: meta.step ${state.meta.step} differs from step ${step}`);
  }
  const meta = pipe(
    decodeWith(MetaCodec, state.meta, "checkpoint meta"),
    E.getOrElseW((m) => {
      throw new Error(`saveCheckpoint: invalid meta\n${m}`);
    }),
  );
  const dir = runPaths(runDir).checkpointsDir;
  await Deno.mkdir(dir, { recursive: true });
  const name = checkpointName(step);
  const path = `${dir}/${name}.safetensors`;
  const indexPath = `${dir}/${name}.json`;
  const tensors: Record<string, tf.Tensor | HostTensor> = {};
  for (const [n, x] of Object.entries(state.params)) tensors[`params.${n}`] = x;
  for (const [n, x] of Object.entries(state.opt)) tensors[`opt.${n}`] = x;
  await writeSafetensors(path, tensors, {
    format: FORMAT,
    version: String(VERSION),
    meta: JSON.stringify(meta),
  });
  const bytes = (await Deno.stat(path)).size;
  // Hashed from the file as written, before the index exists: the checkpoint becomes complete (its index
  // appears) with its checksum already in it.
  const sha256 = await sha256File(path);
  await writeJsonAtomic(indexPath, {
    format: FORMAT,
    version: VERSION,
    step,
    file: `${name}.safetensors`,
    bytes,
    sha256,
    params: Object.keys(state.params),
    opt: Object.keys(state.opt),
    meta,
  });
  await pruneCheckpoints(runDir, keep);
  return { step, path, indexPath, meta: asMeta(meta) };
};

/**
 * Deletes every checkpoint file older than the newest `keep` complete checkpoints (incomplete ones older
 * than those go too). Returns the steps deleted.
 */
export const pruneCheckpoints = async (runDir: string, keep: number): Promise<number[]> => {
  if (!(keep >= 1)) throw new Error(`pruneCheckpoints: keep must be at least 1, got ${keep}`);
  const dir = runPaths(runDir).checkpointsDir;
  const steps = await stepsOnDisk(dir);
  const complete: number[] = [];
  for (const s of steps) {
    if (complete.length >= keep) break;
    if (E.isRight(await inspect(dir, s))) complete.push(s);
  }
  if (complete.length < keep) return [];
  const oldestKept = complete[complete.length - 1];
  const doomed = steps.filter((s) => s < oldestKept);
  for (const s of doomed) {
    for (const ext of ["json", "safetensors"]) {
      await Deno.remove(`${dir}/${checkpointName(s)}.${ext}`).catch((e) => {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      });
    }
  }
  return doomed;
};

/** The newest complete checkpoint, and a warning for each newer one that was skipped. */
export interface LatestCheckpoint {
  readonly checkpoint: CheckpointInfo | undefined;
  readonly warnings: readonly string[];
}

/**
 * Finds the newest complete checkpoint of the run in `runDir` (both files present, the index parses, the
 * safetensors has the recorded size and tensors). `*.tmp` leftovers are ignored; a newer incomplete or
 * damaged checkpoint is skipped with a warning saying why.
 */
export const latestCheckpoint = async (runDir: string): Promise<LatestCheckpoint> => {
  const dir = runPaths(runDir).checkpointsDir;
  const warnings: string[] = [];
  for (const s of await stepsOnDisk(dir)) {
    const info = await inspect(dir, s);
    if (E.isRight(info)) {
      return {
        checkpoint: info.right,
        warnings: warnings.map((w) => `${w}; using the checkpoint of step ${s} instead`),
      };
    }
    warnings.push(`skipping the checkpoint of step ${s}: ${info.left}`);
  }
  return { checkpoint: undefined, warnings };
};

/** A checkpoint read back into host memory. */
export interface LoadedCheckpoint {
  readonly step: number;
  readonly meta: CheckpointMeta;
  /** Student parameters by flat name (prefix `params.` removed). */
  readonly params: Readonly<Record<string, HostTensor>>;
  /** Optimizer tensors by flat name (prefix `opt.` removed). */
  readonly opt: Readonly<Record<string, HostTensor>>;
  /**
   * "verified": the file's SHA-256 matched its index's; "unverified": its index records no checksum (a
   * version 1 checkpoint) or is absent, so bit rot could not have been noticed.
   */
  readonly checksum: "verified" | "unverified";
  /** Things a person should know about this checkpoint (why it is unverified). */
  readonly notes: readonly string[];
}

/** The index next to a checkpoint: absent (undefined), or decoded, or a Left when it exists but is bad. */
const readIndex = async (
  indexPath: string,
): Promise<E.Either<string, t.TypeOf<typeof IndexCodec> | undefined>> => {
  const json = await readJsonFile(indexPath);
  if (json === undefined) return E.right(undefined);
  return E.isLeft(json) ? json : decodeWith(IndexCodec, json.right, indexPath);
};

/** Undefined when `stPath`'s bytes hash to `sha256`, else a message for people. */
const checksumProblem = async (
  stPath: string,
  indexPath: string,
  sha256: string,
): Promise<string | undefined> => {
  let actual: string;
  try {
    actual = await sha256File(stPath);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return `${stPath}: checkpoint not found`;
    return `${stPath}: cannot read the checkpoint (${message(e)})`;
  }
  if (actual === sha256) return undefined;
  const [got, want] = [actual.slice(0, 16), sha256.slice(0, 16)];
  return `${stPath} is damaged: its bytes hash to SHA-256 ${got}..., but ${indexPath} recorded ${want}... when ` +
    "it was written, so its contents changed since (disk or copy corruption). Do not use it: restore it " +
    "from a backup, or move it and its .json out of the checkpoints folder to resume from the previous " +
    "checkpoint";
};

/**
 * Checks a checkpoint's bytes against the SHA-256 its index recorded, for readers that take only some of
 * its tensors (evaluation). Right: "verified", or "unverified" where no index or no checksum exists (a
 * file from elsewhere, a checkpoint of format version 1). Left: the file is damaged.
 */
export const verifyCheckpointFile = async (
  path: string,
): Promise<E.Either<string, "verified" | "unverified">> => {
  const stPath = path.replace(/\.json$/, ".safetensors");
  const indexPath = stPath.replace(/\.safetensors$/, ".json");
  const index = await readIndex(indexPath);
  const sha256 = E.isRight(index) ? index.right?.sha256 : undefined;
  if (sha256 === undefined) return E.right("unverified");
  const damaged = await checksumProblem(stPath, indexPath, sha256);
  return damaged === undefined ? E.right("verified") : E.left(damaged);
};

/**
 * Reads a checkpoint (`.safetensors` path, or its `.json` index) into host tensors, after checking the
 * file's SHA-256 against the one its index records. Errors name the file and what is wrong.
 */
export const loadCheckpoint = async (path: string): Promise<E.Either<string, LoadedCheckpoint>> => {
  const stPath = path.replace(/\.json$/, ".safetensors");
  const indexPath = stPath.replace(/\.safetensors$/, ".json");
  const notes: string[] = [];
  const index = await readIndex(indexPath);
  // An unreadable index does not make the tensors unreadable: load them, saying what could not be checked.
  if (E.isLeft(index)) notes.push(`${index.left}; the tensor list and checksum of ${stPath} are not checked`);
  const ix = E.isRight(index) ? index.right : undefined;
  let file: Awaited<ReturnType<typeof readSafetensors>>;
  try {
    file = await readSafetensors(stPath);
  } catch (e) {
    const cause = e instanceof Error ? e.cause : undefined;
    if (e instanceof Deno.errors.NotFound || cause instanceof Deno.errors.NotFound) {
      return E.left(`${stPath}: checkpoint not found`);
    }
    const problem = e instanceof SafetensorsError ? e.problem : message(e);
    return E.left(
      `${stPath}: cannot read the checkpoint (${problem}); it is damaged: delete it to resume from the ` +
        "previous one (latestCheckpoint already skips it)",
    );
  }
  const metaText = file.metadata?.meta;
  if (typeof metaText !== "string") {
    return E.left(`${stPath}: no "meta" in the safetensors __metadata__ (not a checkpoint of this toolkit?)`);
  }
  let metaJson: unknown;
  try {
    metaJson = JSON.parse(metaText);
  } catch (e) {
    return E.left(`${stPath}: __metadata__.meta is not valid JSON (${message(e)})`);
  }
  const meta = decodeWith(MetaCodec, metaJson, `${stPath} __metadata__.meta`);
  if (E.isLeft(meta)) return meta;
  const params: Record<string, HostTensor> = {};
  const opt: Record<string, HostTensor> = {};
  const stray: string[] = [];
  for (const [name, x] of Object.entries(file.tensors)) {
    if (name.startsWith("params.")) params[name.slice(7)] = x;
    else if (name.startsWith("opt.")) opt[name.slice(4)] = x;
    else stray.push(name);
  }
  if (stray.length > 0) {
    return E.left(`${stPath}: tensors outside params.* and opt.*: ${stray.slice(0, 5).join(", ")}`);
  }
  // When the index is there, it says which tensors must be.
  if (ix !== undefined) {
    const missing = [
      ...ix.params.filter((n) => !(n in params)).map((n) => `params.${n}`),
      ...ix.opt.filter((n) => !(n in opt)).map((n) => `opt.${n}`),
    ];
    if (missing.length > 0) {
      const names = missing.slice(0, 5).join(", ");
      return E.left(`${stPath}: missing ${missing.length} tensors listed in ${indexPath}: ${names}`);
    }
  }
  // Last, after the checks that name a more specific problem (a lost tensor): the bytes themselves.
  if (ix?.sha256 !== undefined) {
    const damaged = await checksumProblem(stPath, indexPath, ix.sha256);
    if (damaged !== undefined) return E.left(damaged);
  } else if (E.isRight(index)) {
    notes.push(
      ix === undefined
        ? `${stPath} has no index (${indexPath}), so its checksum cannot be verified`
        : `${stPath} was written before checkpoints recorded a checksum (format version ${ix.version}), so ` +
          "it cannot be verified against bit rot",
    );
  }
  const m = asMeta(meta.right);
  return E.right({
    step: m.step,
    meta: m,
    params,
    opt,
    checksum: notes.length === 0 ? "verified" : "unverified",
    notes,
  });
};

/** What `removeOrphanedTemps` did. */
export interface OrphanCleanup {
  /** Temporary files removed (their writer is dead). */
  readonly removed: readonly string[];
  /** Temporary files kept because the process named in them still runs. */
  readonly kept: readonly string[];
}

/** `step-000123.safetensors.tmp-<pid>-<suffix>`, what `writeSafetensors` writes before its rename. */
const TMP_SAFETENSORS = /^step-\d+\.safetensors\.tmp-(\d+)-[^/]*$/;

/**
 * Removes the temporary files of checkpoint saves that were killed midway (`step-*.safetensors.tmp-PID-*`)
 * from `<runDir>/checkpoints/`, only those whose PID no longer runs: a save that was cut off never became
 * a checkpoint (the rename did not happen), so such a file holds nothing a resume could use. Call it with
 * the run's lock held.
 */
export const removeOrphanedTemps = async (runDir: string): Promise<OrphanCleanup> => {
  const dir = runPaths(runDir).checkpointsDir;
  const removed: string[] = [], kept: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      const m = TMP_SAFETENSORS.exec(entry.name);
      if (m === null || !entry.isFile) continue;
      const path = `${dir}/${entry.name}`;
      if (Number(m[1]) !== Deno.pid && pidAlive(Number(m[1]))) {
        kept.push(path);
        continue;
      }
      await Deno.remove(path).catch((e) => {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      });
      removed.push(path);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return { removed: removed.sort(), kept: kept.sort() };
};

/** Whether `<runDir>/checkpoints/` holds any `step-*` file (complete or not). */
export const hasCheckpointFiles = async (runDir: string): Promise<boolean> =>
  (await stepsOnDisk(runPaths(runDir).checkpointsDir)).length > 0;

/**
 * Host tensors back to tfjs tensors (`Int32Array` stays int32, floats become float32). The caller owns
 * (and disposes) the result.
 */
export const toTensors = (host: Readonly<Record<string, HostTensor>>): Flat =>
  Object.fromEntries(Object.entries(host).map(([name, x]) => [name, toTensor(x)]));

/**
 * Checks that a checkpoint belongs to a run with this config: its hash must equal `configHash`.
 */
export const checkConfigHash = (
  meta: CheckpointMeta,
  configHash: string,
  where: string,
): E.Either<string, true> =>
  meta.configHash === configHash ? E.right(true) : E.left(
    `${where} was written with config hash ${meta.configHash}, the current config hashes to ${configHash}: ` +
      "a setting that changes the numbers differs (compare the run's config.json with your flags)",
  );
