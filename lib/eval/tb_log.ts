/**
 * TensorBoard event files of the evaluation tasks (`--log-dir DIR` of `deno task probe`, `finetune`,
 * `segment`), as the official CAE / BEiT / MAE fine-tuning and linear-probe scripts write them with
 * `--log_dir`: one new file `events.out.tfevents.<seconds>.<host>` in DIR per run
 * (lib/core/tensorboard.ts), starting with `session_log START` and the task's settings as a text
 * (`config`) at step 0, then the task's scalars:
 *
 * - probe (linear and attentive heads), at each epoch (step: the epoch, 1-based): `train/loss`,
 *   `train/lr`, `val/top1`, `val/top5`; the default recipe's lr search, at step i for candidate i
 *   (0-based): `lr_search/lr`, `lr_search/loss` (its held-back loss), and a text `lr_search`;
 * - finetune, at each optimizer step: `train/loss`, `train/lr`; at each evaluation: `val/top1`,
 *   `val/top5`;
 * - segment, at each optimizer step: `train/loss`, `train/lr`; at the last: `val/mIoU`, `val/mAcc`,
 *   `val/aAcc`.
 *
 * `val/top5` is written with 6 classes or more only (lib/eval/heads.ts `accuracyFigures`), as the tasks
 * print it. Writing never stops a task: a folder or file that cannot be written is warned about once and
 * the task goes on without events (lib/core/tensorboard.ts `tolerantEventWriter`). The folder is checked
 * before any work ({@link checkLogDir}): it may exist (a log folder collects many files) but must not be
 * a file.
 *
 * @module
 */
import { E } from "../deps.ts";
import { type EventWriterOptions, tolerantEventWriter } from "../core/tensorboard.ts";
import { type Accuracy, accuracyFigures } from "./heads.ts";
import { checkpointInputs, dataInputs, type InputFile } from "./outputs.ts";
import type { EpochReport, LrSearch } from "./probe.ts";

/**
 * What `path` is; undefined when it does not exist or cannot be looked at (a file above it: the walk up
 * meets it; a name too long, no permission: the writer meets it, warns and the task goes on).
 */
const statOf = async (path: string): Promise<Deno.FileInfo | undefined> => {
  try {
    return await Deno.stat(path);
  } catch {
    return undefined;
  }
};

const parentOf = (path: string): string => {
  const trimmed = path.replace(/\/+$/, "");
  const i = trimmed.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : trimmed.slice(0, i);
};

/** The nearest folder that exists at or above `path`, and the real (symlink-free) path of `path` below it. */
const realish = async (path: string): Promise<string> => {
  const rest: string[] = [];
  let p = path.replace(/\/+$/, "") || "/";
  for (;;) {
    try {
      const real = await Deno.realPath(p);
      return [real === "/" ? "" : real, ...rest].join("/") || "/";
    } catch {
      if (p === "/" || p === ".") return path;
      rest.unshift(p.slice(p.lastIndexOf("/") + 1));
      p = parentOf(p);
    }
  }
};

const within = (path: string, root: string): boolean =>
  path === root || path.startsWith(root === "/" ? "/" : `${root}/`);

/**
 * Checks `--log-dir DIR` before any work: DIR may exist as a folder (TensorBoard log folders collect many
 * files) or not exist yet (it is created, with its parents), but neither DIR nor a folder above it may be
 * a file; DIR must not be one of the task's outputs, nor the `tensorboard/` folder of a pretraining run the
 * task reads (its events start a new session at step 0, which would hide the run's curves in TensorBoard),
 * nor lie in a folder of images the task reads (`folder:` data: a new subfolder there would be read as a
 * class). Left: a message naming the flag, the path and what to do.
 *
 * @example
 * ```ts
 * import { checkLogDir } from "./tb_log.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/f`, "");
 * if ((await checkLogDir(dir))._tag !== "Right") throw new Error("an existing folder is fine");
 * if ((await checkLogDir(`${dir}/new/tb`))._tag !== "Right") throw new Error("so is a new one");
 * if ((await checkLogDir(`${dir}/f`))._tag !== "Left") throw new Error("a file is not");
 * if ((await checkLogDir(`${dir}/f/tb`))._tag !== "Left") throw new Error("nor a folder below a file");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export const checkLogDir = async (
  dir: string,
  o: { readonly inputs?: readonly InputFile[]; readonly outputs?: readonly (string | undefined)[] } = {},
): Promise<E.Either<string, void>> => {
  const name = `--log-dir ${dir}`;
  if (dir.trim() === "") return E.left(`${name}: give a folder path`);
  const trimmed = dir.replace(/\/+$/, "") || "/";
  for (let p = trimmed;; p = parentOf(p)) {
    const st = await statOf(p);
    if (st !== undefined) {
      if (!st.isDirectory) {
        return E.left(
          `${name}: ${p === trimmed ? "is a file" : `${p} is a file`}; TensorBoard's log directory is a ` +
            "folder (one that exists is fine): choose another path",
        );
      }
      break;
    }
    if (p === "/" || p === ".") break;
  }
  const real = await realish(dir);
  for (const out of o.outputs ?? []) {
    if (out !== undefined && (await realish(out)) === real) {
      return E.left(`${name}: the same path as the output ${out}; give the events a folder of their own`);
    }
  }
  for (const i of o.inputs ?? []) {
    if (/(^|\/)config\.json$/.test(i.path) && i.what.includes("run")) {
      const tb = `${parentOf(i.path)}/tensorboard`;
      if ((await realish(tb)) === real) {
        return E.left(
          `${name}: is the TensorBoard folder of the pretraining run this task reads; its events would ` +
            `hide the run's curves. Choose another folder (a subfolder, ${tb}/eval, is a run of its own)`,
        );
      }
    }
    if (!i.images) continue;
    const root = await Deno.realPath(i.path).catch(() => undefined);
    if (root !== undefined && within(real, root)) {
      return E.left(
        `${name}: lies in ${i.path}, a folder of data this task reads (a new folder there would be read ` +
          "as data); choose a folder outside it",
      );
    }
  }
  return E.right(undefined);
};

/**
 * {@link checkLogDir} for an evaluation task's flags: `--log-dir` (nothing to check when absent), the
 * inputs of `--checkpoint` and `--data` (lib/eval/outputs.ts) and `extraInputs`, the task's `outputs`.
 */
export const checkTaskLogDir = async (
  f: Readonly<Record<string, unknown>>,
  outputs: readonly (string | undefined)[],
  extraInputs: readonly InputFile[] = [],
): Promise<E.Either<string, void>> => {
  if (typeof f.logDir !== "string") return E.right(undefined);
  const inputs = [
    ...(await checkpointInputs(typeof f.checkpoint === "string" ? f.checkpoint : undefined)),
    ...(await dataInputs(typeof f.data === "string" ? f.data : undefined)),
    ...extraInputs,
  ];
  return checkLogDir(f.logDir, { inputs, outputs });
};

/** `| setting | value |` rows, one per entry (undefined ones left out): TensorBoard's Text tab renders it. */
export const settingsMarkdown = (settings: Readonly<Record<string, unknown>>, note?: string): string => {
  const cell = (v: unknown) => `\`${JSON.stringify(v ?? null).replaceAll("|", "\\|")}\``;
  return [
    "| setting | value |",
    "| --- | --- |",
    ...Object.entries(settings).filter(([, v]) => v !== undefined).map(([k, v]) => `| ${k} | ${cell(v)} |`),
    ...(note === undefined ? [] : ["", note]),
  ].join("\n");
};

/** The scalars of a held-out accuracy: `val/top1`, and `val/top5` with 6 classes or more. */
export const accuracyScalars = (acc: Accuracy, classes: number): Record<string, number> =>
  Object.fromEntries(Object.entries(accuracyFigures(acc, classes)).map(([k, v]) => [`val/${k}`, v]));

/** An evaluation task's event file: every method does nothing without `--log-dir`, and none throws. */
export interface TaskEvents {
  /** The event file (undefined: no `--log-dir`, or it could not be created). */
  readonly path: string | undefined;
  /** Scalars of one step. */
  readonly scalars: (step: number, values: Readonly<Record<string, number>>) => void;
  /** A markdown text of one step. */
  readonly text: (step: number, tag: string, markdown: string) => void;
  /** A probe's epoch (step: the epoch, 1-based): `train/loss`, `train/lr`, `val/top1`, `val/top5`. */
  readonly epoch: (e: EpochReport, classes: number) => void;
  /** A training step: `train/loss`, `train/lr`. */
  readonly step: (s: { readonly step: number; readonly loss: number; readonly lr: number }) => void;
  /** A held-out accuracy at `step`: `val/top1`, `val/top5` (6 classes or more). */
  readonly accuracy: (step: number, acc: Accuracy, classes: number) => void;
  /**
   * The default probe recipe's lr search: `lr_search/lr` and `lr_search/loss` (held-back loss) at step i for
   * candidate i, and a text `lr_search` with the table and the lr chosen.
   */
  readonly lrSearch: (s: LrSearch) => void;
  /** Closes the file (again: nothing). */
  readonly close: () => void;
}

/** Options of {@link openTaskEvents}. */
export interface TaskEventsOptions extends EventWriterOptions {
  /** The task's settings, written as the text `config` at step 0 ({@link settingsMarkdown}). */
  readonly settings: Readonly<Record<string, unknown>>;
  /** A line under the settings table. */
  readonly note?: string;
  /** Where the one warning goes when the events cannot be written; also told the file's path. */
  readonly log: (line: string) => void;
}

const NONE: TaskEvents = {
  path: undefined,
  scalars: () => {},
  text: () => {},
  epoch: () => {},
  step: () => {},
  accuracy: () => {},
  lrSearch: () => {},
  close: () => {},
};

/**
 * Opens a new event file in `dir` (nothing when `dir` is undefined) and writes `session_log START` and
 * the settings at step 0: a run is always fresh, so a second run into the same folder replaces the first
 * one's points in TensorBoard (give each run its own folder to see both). Logs the file's path.
 *
 * @example
 * ```ts
 * import { openTaskEvents } from "./tb_log.ts";
 * const dir = await Deno.makeTempDir();
 * const ev = await openTaskEvents(`${dir}/tb`, { settings: { epochs: 2 }, log: () => {} });
 * ev.step({ step: 1, loss: 0.5, lr: 1e-3 });
 * ev.accuracy(1, { top1: 50, top5: 90, count: 10 }, 10);
 * ev.close();
 * if (!ev.path?.includes("/tb/events.out.tfevents.")) throw new Error(ev.path);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export const openTaskEvents = async (dir: string | undefined, o: TaskEventsOptions): Promise<TaskEvents> => {
  if (dir === undefined) return NONE;
  let failed = false;
  const w = await tolerantEventWriter(dir, (m) => {
    failed = true;
    o.log(m);
  }, { ...o, goesOn: "; the task goes on" });
  w.sessionStart(0);
  w.text(0, "config", settingsMarkdown(o.settings, o.note));
  const path = failed ? undefined : w.path;
  if (path !== undefined) o.log(`tensorboard: ${path}`);
  const scalars = (step: number, values: Readonly<Record<string, number>>) => w.scalars(step, values);
  return {
    path,
    scalars,
    text: (step, tag, markdown) => w.text(step, tag, markdown),
    epoch: (e, classes) =>
      scalars(e.epoch + 1, {
        "train/loss": e.loss,
        "train/lr": e.lr,
        ...accuracyScalars(e.accuracy, classes),
      }),
    step: (s) => scalars(s.step, { "train/loss": s.loss, "train/lr": s.lr }),
    accuracy: (step, acc, classes) => scalars(step, accuracyScalars(acc, classes)),
    lrSearch: (s) => {
      s.lrs.forEach((lr, i) => scalars(i, { "lr_search/lr": lr, "lr_search/loss": s.losses[i] }));
      w.text(
        0,
        "lr_search",
        [
          "| candidate | lr | held-back loss | standard error |",
          "| --- | --- | --- | --- |",
          ...s.lrs.map((lr, i) => `| ${i} | ${lr} | ${s.losses[i]} | ${s.errors[i]} |`),
          "",
          `lr ${s.lr}: the smallest within one standard error of the lowest loss; ${s.fit} images fitted, ` +
          `${s.heldBack} held back, ${s.epochs} epochs.`,
        ].join("\n"),
      );
    },
    close: () => w.close(),
  };
};
