/**
 * What a run was computed with, recorded next to its numbers: the Deno, V8 and TypeScript versions, the
 * tfjs packages, the backend and its adapter, and the git commit of the code (with a flag when the work
 * tree had uncommitted changes). Two runs that agree on all of this and on the config hash write the same
 * metrics; when they do not, this is where to look first.
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { BackendInfo } from "../core/backend.ts";

/** The git state of the code, or why it is unknown. */
export interface GitInfo {
  /** `git rev-parse HEAD`, or null when git or the repository is absent. */
  readonly commit: string | null;
  /** Whether tracked files differed from the commit (`git status --porcelain --untracked-files=no`). */
  readonly dirty: boolean | null;
  /** Why `commit` is null ("git is not installed", "not a git repository", "imported from https://..."). */
  readonly note?: string;
}

/** Versions and environment of a run. */
export interface Versions {
  /** `Deno.version.deno`. */
  readonly deno: string;
  /** `Deno.version.v8`. */
  readonly v8: string;
  /** `Deno.version.typescript`. */
  readonly typescript: string;
  /** `tf.version`: the tfjs packages and their versions. */
  readonly tfjs: Readonly<Record<string, string>>;
  /** The tfjs backend that computed the numbers, and its adapter. */
  readonly backend: {
    readonly name: string;
    readonly adapter: string | null;
    readonly fallbackAdapter: boolean | null;
    readonly detail: string | null;
    /** Why auto chose this backend (e.g. a software WebGPU adapter skipped for wasm). */
    readonly note: string | null;
  };
  /** The commit of the code. */
  readonly git: GitInfo;
}

const run = async (args: string[], cwd: string): Promise<{ ok: boolean; out: string; err: string }> => {
  const r = await new Deno.Command("git", { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { ok: r.success, out: dec.decode(r.stdout).trim(), err: dec.decode(r.stderr).trim() };
};

/**
 * The git commit of the directory `dir` (default: the directory of this module when it is a local file,
 * else the working directory). Never throws: a missing git, a directory outside a repository or a
 * module loaded over HTTP give `commit: null` and a note.
 *
 * @example
 * ```ts
 * import { gitInfo } from "./versions.ts";
 * const g = await gitInfo(Deno.makeTempDirSync());
 * if (g.commit !== null || g.note === undefined) throw new Error("a fresh temp dir is no repository");
 * ```
 */
export const gitInfo = async (dir?: string): Promise<GitInfo> => {
  const here = new URL(".", import.meta.url);
  if (dir === undefined && here.protocol !== "file:") {
    return { commit: null, dirty: null, note: `imported from ${here.origin}: no local repository` };
  }
  const cwd = dir ?? decodeURIComponent(here.pathname);
  try {
    const head = await run(["rev-parse", "HEAD"], cwd);
    if (!head.ok) {
      return { commit: null, dirty: null, note: head.err.split("\n")[0] || "not a git repository" };
    }
    const status = await run(["status", "--porcelain", "--untracked-files=no"], cwd);
    return { commit: head.out, dirty: status.ok ? status.out.length > 0 : null };
  } catch (e) {
    return {
      commit: null,
      dirty: null,
      note: e instanceof Deno.errors.NotFound
        ? "git is not installed"
        : `git failed: ${(e as Error).message}`,
    };
  }
};

/**
 * Versions of everything that computes the numbers, for the backend `info` that `selectBackend` started.
 *
 * @example
 * ```ts
 * import { collectVersions } from "./versions.ts";
 * const v = await collectVersions({ name: "cpu" });
 * if (v.deno !== Deno.version.deno || v.tfjs["tfjs-core"] !== "4.22.0") throw new Error(JSON.stringify(v));
 * ```
 */
export const collectVersions = async (info: BackendInfo, dir?: string): Promise<Versions> => ({
  deno: Deno.version.deno,
  v8: Deno.version.v8,
  typescript: Deno.version.typescript,
  tfjs: { ...(tf.version as Record<string, string>) },
  backend: {
    name: info.name,
    adapter: info.adapter ?? null,
    fallbackAdapter: info.fallbackAdapter ?? null,
    detail: info.detail ?? null,
    note: info.note ?? null,
  },
  git: await gitInfo(dir),
});
