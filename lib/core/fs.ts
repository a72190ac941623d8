/**
 * Files, the way every part of the toolkit writes and reads them: atomic writes (a reader sees the old file
 * or the new one, never a part), existence checks, JSON files read into an `Either` that names the file,
 * and the message of a caught error.
 *
 * @module
 */
import { E } from "../deps.ts";

/** The message of a caught value: an Error's message, anything else as text. */
export const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** `stat` of `path`, or undefined when nothing is there (other errors are thrown). */
export const statIfExists = async (path: string): Promise<Deno.FileInfo | undefined> => {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
};

/** Whether anything exists at `path` (errors other than "not found" are thrown). */
export const exists = async (path: string): Promise<boolean> => (await statIfExists(path)) !== undefined;

/** The text of `path`, or undefined when the file does not exist (other errors are thrown). */
export const readTextIfExists = async (path: string): Promise<string | undefined> => {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
};

/** `text` parsed as JSON; Left: `<where>: not valid JSON (<why>)`. */
export const parseJson = (text: string, where: string): E.Either<string, unknown> => {
  try {
    return E.right(JSON.parse(text));
  } catch (e) {
    return E.left(`${where}: not valid JSON (${message(e)})`);
  }
};

/**
 * The JSON in the file at `path`: undefined when the file does not exist; Left `<path>: <why>` when it
 * cannot be read, `<path>: not valid JSON (<why>)` when it does not parse.
 */
export const readJsonFile = async (path: string): Promise<E.Either<string, unknown> | undefined> => {
  let text: string | undefined;
  try {
    text = await readTextIfExists(path);
  } catch (e) {
    return E.left(`${path}: ${message(e)}`);
  }
  return text === undefined ? undefined : parseJson(text, path);
};

/** Writes all of `bytes` to `file`. */
export const writeAll = async (file: Deno.FsFile, bytes: Uint8Array): Promise<void> => {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
};

const randomSuffix = (): string =>
  Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, "0")).join("");

/** The directory part of `path` ("." for a bare name). */
export const dirOf = (path: string): string => {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
};

/** fsync the directory so a rename in it survives a crash; not every platform allows it. */
const syncDir = async (dir: string): Promise<void> => {
  try {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch { /* best effort (e.g. Windows cannot open directories) */ }
};

/**
 * Writes `path` atomically: `write` fills a new temporary file `<path>.tmp-<pid>-<random>` in the same
 * directory, which is fsynced and renamed over `path` (the directory is fsynced too), so a reader sees the
 * old file or the new one, never a part. On any error the temporary file is removed, `path` is left as it
 * was, and the error is thrown.
 */
export const writeFileAtomic = async (
  path: string,
  write: (file: Deno.FsFile) => Promise<void>,
): Promise<void> => {
  const tmp = `${path}.tmp-${Deno.pid}-${randomSuffix()}`;
  let f: Deno.FsFile | undefined;
  try {
    f = await Deno.open(tmp, { write: true, createNew: true });
    await write(f);
    await f.sync();
    f.close();
    f = undefined;
    await Deno.rename(tmp, path);
    await syncDir(dirOf(path));
  } catch (e) {
    try {
      f?.close();
    } catch { /* already closed */ }
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
};

/** Writes `text` to `path` atomically ({@link writeFileAtomic}). */
export const writeTextAtomic = (path: string, text: string): Promise<void> =>
  writeFileAtomic(path, (f) => writeAll(f, new TextEncoder().encode(text)));

/** `JSON.stringify(value, null, 2)` plus a newline, written atomically. */
export const writeJsonAtomic = (path: string, value: unknown): Promise<void> =>
  writeTextAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
