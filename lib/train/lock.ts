/**
 * The lock of a run directory: `<run>/run.lock`, so that one process at a time writes a run. Two processes
 * writing one directory interleave `metrics.jsonl` and race on checkpoints; the second one is refused,
 * naming the holder's pid.
 *
 * How it is atomic: the lock file is created with `createNew` (or opened, when it exists) and the holder
 * keeps an exclusive advisory lock (`flock`) on it for the whole run. The OS arbitrates that lock, so of
 * two processes racing for one directory exactly one gets it, and it releases the lock when the holder dies
 * however it dies (SIGKILL, out of memory): a lock file whose `flock` can be taken is stale, and is taken
 * over in place (the same inode, never deleted and recreated, so no third process can slip in between).
 * The file's content, `{ pid, hostname, started }`, is for people: it names the holder in the refusal.
 * A lock file deleted while its holder runs cannot be detected (a second run would then be accepted).
 *
 * @module
 */
import { E } from "../deps.ts";
import { message } from "../core/fs.ts";

/** Who holds (or held) a run directory's lock, as its lock file records. */
export interface LockHolder {
  readonly pid: number;
  readonly hostname: string;
  /** ISO time the holder took the lock. */
  readonly started: string;
}

/** A held lock. */
export interface RunLock {
  /** The lock file. */
  readonly path: string;
  /** The holder of a stale lock this process took over (it had died without releasing it). */
  readonly tookOver: LockHolder | undefined;
  /** Removes the lock file and releases the lock; idempotent. */
  readonly release: () => Promise<void>;
}

/** The lock file of the run in `dir`. */
export const lockPath = (dir: string): string => `${dir.replace(/\/+$/, "") || "/"}/run.lock`;

const decodeHolder = (text: string): LockHolder | undefined => {
  try {
    const v = JSON.parse(text) as Record<string, unknown>;
    if (typeof v.pid !== "number" || !Number.isInteger(v.pid)) return undefined;
    return {
      pid: v.pid,
      hostname: typeof v.hostname === "string" ? v.hostname : "?",
      started: typeof v.started === "string" ? v.started : "?",
    };
  } catch {
    return undefined;
  }
};

const readAll = async (file: Deno.FsFile): Promise<string> => {
  await file.seek(0, Deno.SeekMode.Start);
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(4096);
  for (;;) {
    const n = await file.read(buf);
    if (n === null || n === 0) break;
    chunks.push(buf.slice(0, n));
  }
  return new TextDecoder().decode(
    chunks.reduce((a, b) => {
      const out = new Uint8Array(a.length + b.length);
      out.set(a);
      out.set(b, a.length);
      return out;
    }, new Uint8Array()),
  );
};

/**
 * The holder recorded in the lock file. A holder writes its record just after taking the lock, so an empty
 * or half-written file is read again for up to a second.
 */
const readHolder = async (path: string): Promise<LockHolder | undefined> => {
  for (let i = 0; i < 20; i++) {
    const h = decodeHolder(await Deno.readTextFile(path).catch(() => ""));
    if (h !== undefined) return h;
    await new Promise((r) => setTimeout(r, 50));
  }
  return undefined;
};

/** Whether `pid` names a live process on this machine (`kill(pid, 0)`: ESRCH means gone). */
export const pidAlive = (pid: number): boolean => {
  try {
    // Signal 0 sends nothing; it only checks that the process exists (Deno's type lists named signals only).
    Deno.kill(pid, 0 as unknown as Deno.Signal);
    return true;
  } catch (e) {
    // EPERM: it exists, owned by someone else.
    return !(e instanceof Deno.errors.NotFound);
  }
};

const describeHolder = (h: LockHolder | undefined, here: string): string => {
  if (h === undefined) return "another process (its lock file does not say which)";
  const host = h.hostname === here ? "" : ` on host ${h.hostname}`;
  return `process ${h.pid}${host} (since ${h.started})`;
};

/**
 * Takes the lock of the run directory `dir` (which must exist). Left: a message for people naming the
 * holder's pid and the lock file. A stale lock (its holder died) is taken over; `tookOver` says whose.
 */
export const acquireRunLock = async (dir: string): Promise<E.Either<string, RunLock>> => {
  const path = lockPath(dir);
  const here = Deno.hostname();
  // A few tries: the file can be removed by a releasing holder between our open and our lock.
  for (let attempt = 0; attempt < 10; attempt++) {
    let file: Deno.FsFile;
    let created = false;
    try {
      file = await Deno.open(path, { read: true, write: true, createNew: true });
      created = true;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) {
        return E.left(`cannot create the lock file ${path}: ${message(e)}`);
      }
      try {
        file = await Deno.open(path, { read: true, write: true });
      } catch (e2) {
        if (e2 instanceof Deno.errors.NotFound) continue; // released in between: try to create it again
        return E.left(`cannot open the lock file ${path}: ${e2 instanceof Error ? e2.message : String(e2)}`);
      }
    }
    let locked: boolean;
    try {
      locked = await file.tryLock(true);
    } catch (e) {
      file.close();
      return E.left(
        `cannot lock ${path} (${message(e)}): the file system of ${dir} ` +
          "does not support file locks; put the run directory on a local disk",
      );
    }
    if (!locked) {
      file.close();
      const holder = await readHolder(path);
      const who = describeHolder(holder, here);
      return E.left(
        `${dir} is in use by ${who}: its lock ${path} is held, and two runs writing one directory would ` +
          "interleave metrics.jsonl and the checkpoints. Wait for that run to end or stop it (kill -INT " +
          `${holder?.pid ?? "PID"} stops it at the next step with a checkpoint), then run this again`,
      );
    }
    // The path must still name the file we locked: a holder releases by removing the file, then unlocking,
    // and a lock taken on a removed file guards nothing.
    const [mine, current] = [await file.stat(), await Deno.stat(path).catch(() => undefined)];
    if (current === undefined || current.ino !== mine.ino || current.dev !== mine.dev) {
      file.close();
      continue;
    }
    const tookOver = created ? undefined : decodeHolder(await readAll(file));
    const record: LockHolder = { pid: Deno.pid, hostname: here, started: new Date().toISOString() };
    const bytes = new TextEncoder().encode(`${JSON.stringify(record)}\n`);
    await file.truncate(0);
    await file.seek(0, Deno.SeekMode.Start);
    let off = 0;
    while (off < bytes.length) off += await file.write(bytes.subarray(off));
    await file.syncData();
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      try {
        // Remove first, unlock second (close): whoever locks the old file then sees it is gone and retries.
        const now = await Deno.stat(path).catch(() => undefined);
        if (now !== undefined && now.ino === mine.ino && now.dev === mine.dev) await Deno.remove(path);
      } finally {
        file.close();
      }
    };
    return E.right({ path, tookOver, release });
  }
  return E.left(`cannot take the lock ${path}: it kept changing under this process; try again`);
};
