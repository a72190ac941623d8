/**
 * WebDataset shards: tar files whose members are grouped into samples by key (`<key>.jpg`, `<key>.cls`,
 * ...; the key is the member path up to the first dot of its base name, as webdataset's
 * `base_plus_ext`), read as streams. A sample's image is its first `.jpg`/`.jpeg`/`.png` member (or any
 * other image extension, which then fails to decode and is skipped with a warning); its label the integer
 * in `.cls`, or -1 when absent.
 *
 * @module
 */
import { readTar } from "./tar.ts";

/** One sample read from a shard. */
export interface WdsSample {
  /** `<shard>:<key>`, for messages. */
  readonly name: string;
  /** The image member's bytes, or undefined when the sample has none (then `problem` says why). */
  readonly image?: Uint8Array;
  readonly problem?: string;
  readonly label: number;
  /** Stable 32-bit hash of `<shard base name>/<key>`, for the held-out split. */
  readonly hash: number;
}

const IMAGE_EXTS = ["jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "tif", "tiff"];

/** Expands `{a,b}` alternatives and zero-padded `{000..146}` ranges (as braceexpand does). */
export const expandBraces = (pattern: string): string[] => {
  const m = /\{([^{}]*)\}/.exec(pattern);
  if (!m) return [pattern];
  const head = pattern.slice(0, m.index), tail = pattern.slice(m.index + m[0].length);
  const range = /^(\d+)\.\.(\d+)$/.exec(m[1]);
  let alts: string[];
  if (range) {
    const [a, b] = [Number(range[1]), Number(range[2])];
    const width = range[1].length;
    const step = a <= b ? 1 : -1;
    alts = [];
    for (let i = a; step > 0 ? i <= b : i >= b; i += step) alts.push(String(i).padStart(width, "0"));
  } else alts = m[1].split(",");
  return alts.flatMap((alt) => expandBraces(head + alt + tail));
};

const isUrl = (s: string) => /^https?:\/\//.test(s);

/** What `wds:` takes, for messages. */
const WDS_EXPECTS =
  'wds: expects tar shards: a brace pattern ("wds:shards/train-{000000..000146}.tar"), "::"-joined paths, or a .txt ' +
  "list of shards; for a folder of images use folder:PATH";

/**
 * Why a local path cannot be read as a shard or shard list, or undefined when it can (or does not exist:
 * a missing shard is skipped with a warning when its turn comes). `stat` never opens the file: opening a
 * FIFO blocks until a writer comes, and a directory only fails later with "Is a directory" and no path.
 * Shards are read once per epoch, so a pipe (which can be read once) is refused too.
 */
const unreadable = async (path: string, what: string): Promise<string | undefined> => {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch {
    return undefined;
  }
  if (st.isFile) return undefined;
  const kind = st.isDirectory ? "a directory" : st.isFifo ? "a FIFO" : "not a regular file";
  return `data: the ${what} ${JSON.stringify(path)} is ${kind}; ${WDS_EXPECTS}`;
};

/**
 * The shard list of a `wds:` pattern: `::`-separated parts, each a brace pattern, or a `.txt` file with
 * one shard per line (relative lines resolve against the list's folder). URLs (`http(s)://`) are allowed.
 * Rejects, naming the path, when a local shard or list is a directory or another non-regular file.
 */
export const resolveShards = async (pattern: string): Promise<string[]> => {
  const shards: string[] = [];
  for (const part of pattern.split("::").filter((p) => p !== "")) {
    if (part.endsWith(".txt")) {
      const problem = await unreadable(part, "shard list");
      if (problem) throw new Error(problem);
      let textContent: string;
      try {
        textContent = await Deno.readTextFile(part);
      } catch (e) {
        throw new Error(`data: cannot read the shard list ${JSON.stringify(part)} (${(e as Error).message})`);
      }
      const dir = part.includes("/") ? part.slice(0, part.lastIndexOf("/") + 1) : "";
      for (
        const line of textContent.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"))
      ) {
        shards.push(/^(\/|[a-z]+:\/\/)/.test(line) ? line : dir + line);
      }
    } else shards.push(...expandBraces(part));
  }
  if (shards.length === 0) {
    throw new Error(`data: the shard pattern ${JSON.stringify(pattern)} names no shards`);
  }
  for (const shard of shards) {
    const problem = isUrl(shard) ? undefined : await unreadable(shard, "shard");
    if (problem) throw new Error(problem);
  }
  return shards;
};

/** A readable byte stream of a shard (local file or URL). */
const openShard = async (shard: string): Promise<ReadableStream<Uint8Array>> => {
  if (isUrl(shard)) {
    const res = await fetch(shard);
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
    return res.body;
  }
  // Checked again here (resolveShards checked at the start): a path may change between epochs.
  const problem = await unreadable(shard, "shard");
  if (problem) throw new Error(problem);
  return (await Deno.open(shard, { read: true })).readable;
};

const fnv1a = (s: string): number => {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
};

/** Key and extension of a member name (webdataset `base_plus_ext`). */
const splitName = (name: string): [string, string] | undefined => {
  const m = /^((?:.*\/|)[^./]+)\.([^/]*)$/.exec(name);
  return m ? [m[1], m[2].toLowerCase()] : undefined;
};

/** Printable form of an untrusted member name (control characters escaped). */
const printable = (s: string) => JSON.stringify(s).slice(1, -1);

/**
 * The samples of one shard, in archive order. Archive problems (an unreadable or truncated shard) are
 * reported through `onProblem` and end the shard; the complete samples before them are kept.
 */
export async function* shardSamples(
  shard: string,
  onProblem: (message: string) => void,
): AsyncGenerator<WdsSample> {
  let stream: ReadableStream<Uint8Array>;
  try {
    stream = await openShard(shard);
  } catch (e) {
    onProblem(`${shard}: cannot open the shard (${(e as Error).message}); check the pattern`);
    return;
  }
  const base = shard.slice(shard.lastIndexOf("/") + 1);
  let key: string | undefined;
  let members = new Map<string, Uint8Array>();
  const finish = (): WdsSample | undefined => {
    if (key === undefined) return undefined;
    const name = `${shard}:${printable(key)}`;
    const hash = fnv1a(`${base}/${key}`);
    const cls = members.get("cls");
    const parsed = cls ? Number(new TextDecoder().decode(cls).trim()) : -1;
    const label = Number.isInteger(parsed) ? parsed : -1;
    const ext = IMAGE_EXTS.find((e) => members.has(e));
    return ext ? { name: `${name}.${ext}`, image: members.get(ext), label, hash } : {
      name,
      problem: `${name}: no image member (found ${
        [...members.keys()].map((e) => "." + e).join(", ") || "none"
      }; expected .jpg or .png)`,
      label,
      hash,
    };
  };
  for await (const entry of readTar(stream, shard)) {
    if (entry.kind === "problem") {
      // The sample being read may be missing members: keep it only when the member that broke belongs
      // to the next sample; the rest of the shard is lost.
      const broke = entry.name === undefined ? undefined : splitName(entry.name);
      if (broke && broke[0] !== key) {
        const s = finish();
        if (s) yield s;
      }
      onProblem(entry.message);
      return;
    }
    const kv = splitName(entry.name);
    if (!kv) continue; // names without an extension (e.g. "README") are not sample members
    if (kv[0] !== key) {
      const s = finish();
      if (s) yield s;
      key = kv[0];
      members = new Map();
    }
    members.set(kv[1], entry.data);
  }
  const s = finish();
  if (s) yield s;
}
