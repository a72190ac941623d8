/**
 * The files an evaluation task writes, checked before it does any work: an evaluation can take hours, and
 * a refusal after it (or a silent overwrite of whatever was there, the task's own input checkpoint
 * included) loses either the work or the file. Rules, per output path:
 *
 * - its folder must exist (the task does not guess where to create one);
 * - it must not be a folder;
 * - it must not be one of the task's input files (the checkpoint, its index, the run's config.json, a data
 *   shard, an image of a `folder:` source), even with `--force`: the task would destroy what it reads;
 * - it must not exist, unless `--force` is given;
 * - two outputs of one task must not be the same file.
 *
 * "The same file" is decided by the file system (device and inode), so a symbolic link, a hard link or a
 * path spelled differently (`./a`, `dir/../a`) to an input is refused like the input itself.
 *
 * @module
 */
import { E } from "../deps.ts";
import { IMAGE_EXTENSIONS } from "../../data/folder.ts";
import { parseDataSource } from "../../data/source.ts";
import { resolveShards } from "../../data/wds.ts";

/** A file the task will write, and the flag that names it (for messages). */
export interface OutputFile {
  /** How the user named it: `--out`, `--results`, `--out (rows sidecar)`. */
  readonly flag: string;
  /** The path as given. */
  readonly path: string;
}

/** A file (or, with `images`, a folder of images) the task reads. */
export interface InputFile {
  /** What it is, for messages: "the checkpoint", "a data shard". */
  readonly what: string;
  /** Its path. */
  readonly path: string;
  /** A data folder: any image file below it is an input (it would be read as an image). */
  readonly images?: boolean;
}

/** Options of {@link checkOutputs}. */
export interface CheckOutputsOptions {
  /** `--force`: existing outputs may be overwritten (never an input). */
  readonly force?: boolean;
  /** The files the task reads. */
  readonly inputs?: readonly InputFile[];
}

const statOf = async (path: string): Promise<Deno.FileInfo | undefined> => {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return undefined;
    throw e;
  }
};

const parentOf = (path: string): string => {
  const trimmed = path.replace(/\/+$/, "");
  const i = trimmed.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : trimmed.slice(0, i);
};

const sameFile = (a: Deno.FileInfo, b: Deno.FileInfo): boolean =>
  a.dev === b.dev && a.ino !== null && a.ino === b.ino;

/** Absolute, symlink-free form of a path whose folder exists (the file itself may not). */
const canonical = async (path: string): Promise<string> => {
  const base = path.replace(/\/+$/, "").slice(path.replace(/\/+$/, "").lastIndexOf("/") + 1);
  const dir = await Deno.realPath(parentOf(path));
  return `${dir === "/" ? "" : dir}/${base}`;
};

/** Whether `path` lies below folder `root` (both canonical). */
const below = (path: string, root: string): boolean => path.startsWith(root === "/" ? "/" : `${root}/`);

/**
 * Checks every output path against the rules of the module doc. Left: one message per refused output,
 * each naming its flag, the path and what to do.
 *
 * @example
 * ```ts
 * import { checkOutputs } from "./outputs.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/old.json`, "{}");
 * const out = [{ flag: "--out", path: `${dir}/old.json` }];
 * if ((await checkOutputs(out))._tag !== "Left") throw new Error("an existing file needs --force");
 * if ((await checkOutputs(out, { force: true }))._tag !== "Right") throw new Error("--force allows it");
 * const input = [{ what: "the checkpoint", path: `${dir}/old.json` }];
 * if ((await checkOutputs(out, { force: true, inputs: input }))._tag !== "Left") throw new Error("never an input");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export const checkOutputs = async (
  outputs: readonly OutputFile[],
  o: CheckOutputsOptions = {},
): Promise<E.Either<string, void>> => {
  const problems: string[] = [];
  const inputs = await Promise.all(
    (o.inputs ?? []).map(async (i) => ({
      ...i,
      stat: await statOf(i.path),
      root: i.images ? await Deno.realPath(i.path).catch(() => undefined) : undefined,
    })),
  );
  const seen: { flag: string; path: string; canon: string }[] = [];
  for (const out of outputs) {
    const name = `${out.flag} ${out.path}`;
    const parent = parentOf(out.path);
    const dir = await statOf(parent);
    if (dir === undefined || !dir.isDirectory) {
      problems.push(
        `${name}: the folder ${parent} ${dir === undefined ? "does not exist" : "is not a folder"}; ` +
          `create it first (mkdir -p ${parent}) or choose another path`,
      );
      continue;
    }
    const canon = await canonical(out.path);
    const twin = seen.find((s) => s.canon === canon);
    if (twin !== undefined) {
      problems.push(`${name}: the same file as ${twin.flag} ${twin.path}; give each output its own path`);
      continue;
    }
    seen.push({ ...out, canon });
    const st = await statOf(out.path);
    if (st?.isDirectory) {
      problems.push(
        `${name}: is a folder; give a file path (for example ${out.path.replace(/\/+$/, "")}/out)`,
      );
      continue;
    }
    const read = inputs.find((i) =>
      (st !== undefined && i.stat !== undefined && !i.stat.isDirectory && sameFile(st, i.stat)) ||
      (i.root !== undefined && below(canon, i.root) &&
        IMAGE_EXTENSIONS.some((e) => canon.toLowerCase().endsWith(e)))
    );
    if (read !== undefined) {
      problems.push(
        `${name}: is ${read.what} this task reads (${read.path}); writing it would destroy the input. ` +
          "Choose another path (--force does not allow this)",
      );
      continue;
    }
    if (st !== undefined && !o.force) {
      problems.push(`${name}: the file exists; pass --force to overwrite it, or choose another path`);
    }
  }
  return problems.length === 0 ? E.right(undefined) : E.left(problems.join("\n"));
};

/**
 * The files a `--checkpoint` value reads: for a run directory its config.json and every file of its
 * checkpoints folder; for a checkpoint file the file, its `.json` index and, inside a run directory, the
 * run's config.json; nothing for `random`.
 */
export const checkpointInputs = async (spec: string | undefined): Promise<InputFile[]> => {
  if (spec === undefined || spec === "random") return [];
  const st = await statOf(spec);
  if (st === undefined) return [];
  if (st.isDirectory) {
    const files: InputFile[] = [{ what: "the run's config", path: `${spec}/config.json` }];
    try {
      for await (const e of Deno.readDir(`${spec}/checkpoints`)) {
        if (e.isFile) files.push({ what: "a checkpoint of the run", path: `${spec}/checkpoints/${e.name}` });
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return files;
  }
  const stem = spec.replace(/\.(safetensors|json)$/, "");
  const files: InputFile[] = [
    { what: "the checkpoint", path: spec },
    { what: "the checkpoint's index", path: `${stem}.json` },
    { what: "the checkpoint", path: `${stem}.safetensors` },
  ];
  const parts = spec.split("/");
  if (parts.length >= 3 && parts[parts.length - 2] === "checkpoints") {
    files.push({ what: "the run's config", path: [...parts.slice(0, -2), "config.json"].join("/") || "." });
  }
  return files;
};

/**
 * The files a `--data` value reads: the shards of `wds:` (local ones), the images of `folder:` (as one
 * folder input); nothing for the synthetic source or a value that does not parse (the task reports it).
 */
export const dataInputs = async (data: string | undefined): Promise<InputFile[]> => {
  if (data === undefined) return [];
  const src = parseDataSource(data);
  if (E.isLeft(src)) return [];
  const s = src.right;
  if (s.kind === "folder") return [{ what: "the data folder's image", path: s.path, images: true }];
  if (s.kind === "wds") {
    const shards = await resolveShards(s.pattern).catch(() => [] as string[]);
    return shards.filter((p) => !/^[a-z]+:\/\//.test(p)).map((path) => ({ what: "a data shard", path }));
  }
  return [];
};

/**
 * {@link checkOutputs} for an evaluation task's flags: inputs from `--checkpoint` and `--data`, `--force`
 * from the flags; outputs whose path is undefined (an optional flag not given) are left out. What every
 * task that writes a file calls before loading anything (tasks/knn.ts, extract.ts, finetune.ts; through
 * `startTask`'s `outputs`).
 *
 * @example
 * ```ts
 * import { checkTaskOutputs } from "./outputs.ts";
 * const r = await checkTaskOutputs({ checkpoint: "random", data: "synthetic", force: false }, [
 *   { flag: "--out", path: undefined },
 * ]);
 * if (r._tag !== "Right") throw new Error(r.left);
 * ```
 */
export const checkTaskOutputs = async (
  f: Readonly<Record<string, unknown>>,
  outputs: readonly { readonly flag: string; readonly path: string | undefined }[],
): Promise<E.Either<string, void>> => {
  const given = outputs.filter((o): o is OutputFile => typeof o.path === "string");
  if (given.length === 0) return E.right(undefined);
  const inputs = [
    ...(await checkpointInputs(typeof f.checkpoint === "string" ? f.checkpoint : undefined)),
    ...(await dataInputs(typeof f.data === "string" ? f.data : undefined)),
  ];
  return checkOutputs(given, { force: f.force === true, inputs });
};
