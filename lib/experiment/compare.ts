/**
 * `deno task compare RUN_DIR... [--out FILE.svg|FILE.png] [--metric NAME] [--force]`: several pretraining
 * runs side by side. A table (run, steps, first and last loss / visible / masked, and the settings that set
 * a run's scale: model, global batch, peak lr), and one chart that overlays the runs' curves of a metric of
 * their `metrics.jsonl` (lib/plot/svg.ts, as the experiment reports draw them; PNG through lib/plot/png.ts).
 *
 * The output file is checked before anything is read (lib/eval/outputs.ts): an existing file needs
 * `--force`, and a run's own files are never overwritten.
 *
 * @module
 */
import { E } from "../deps.ts";
import { message, writeTextAtomic } from "../core/fs.ts";
import { parseArgs } from "../core/std.ts";
import { defaultPretrainConfig, type PretrainConfig, readRunConfig } from "../config/pretrain.ts";
import { lineChart, type LineSeries } from "../plot/svg.ts";
import { svgToPng } from "../plot/png.ts";
import { type MetricsRecord, readMetrics } from "../train/metrics.ts";
import { peakLr, totalBatch } from "../train/lr_policy.ts";
import { checkOutputs, type InputFile } from "../eval/outputs.ts";

/** What `deno task compare` was asked to do. */
export interface CompareOptions {
  /** The run directories, in the order given. */
  readonly runs: readonly string[];
  /** The chart's file (`.svg` or `.png`); none: the table alone. */
  readonly out?: string;
  /** The metrics.jsonl key drawn (`loss`, `lossVisible`, ...). */
  readonly metric: string;
  /** Overwrite an existing `out`. */
  readonly force: boolean;
}

/** The command line, parsed. */
export type CompareCommand =
  | { readonly kind: "help"; readonly text: string }
  | { readonly kind: "run"; readonly options: CompareOptions };

/** The metric names of the command line, as metrics.jsonl spells them (snake_case is accepted too). */
const ALIASES: Readonly<Record<string, string>> = {
  loss_visible: "lossVisible",
  visible: "lossVisible",
  loss_masked: "lossMasked",
  masked: "lossMasked",
  grad_norm: "gradNorm",
};

/** The `--help` text. */
export const compareUsage = (): string =>
  [
    "Compare pretraining runs: a table of their losses and settings, and their curves of one metric in one",
    "chart (SVG or PNG).",
    "",
    "Usage: deno task compare RUN_DIR... [--out FILE.svg|FILE.png] [--metric NAME] [--force]",
    "",
    "  --out FILE      write the chart: FILE.svg, or FILE.png (rasterised); without it, the table alone",
    "  --metric NAME   the curve drawn, a key of metrics.jsonl: loss (default), loss_visible, loss_masked,",
    "                  lr, grad_norm (camelCase works too: lossVisible, ...)",
    "  --force         overwrite an existing --out file (never a file of a run)",
    "",
    "The table: run, steps, first -> last loss, visible and masked alignment, model, global batch (batch x",
    "accumulate x ranks) and peak lr (the run's --lr, or the rule lib/train/lr_policy.ts applies).",
  ].join("\n");

/**
 * Parses the arguments. Left: what is wrong, naming the flag.
 *
 * @example
 * ```ts
 * import { parseCompareArgs } from "./compare.ts";
 * const c = parseCompareArgs(["runs/a", "runs/b", "--metric", "loss_masked", "--out", "x.svg"]);
 * if (c._tag !== "Right" || c.right.kind !== "run" || c.right.options.metric !== "lossMasked") throw new Error();
 * ```
 */
export const parseCompareArgs = (argv: readonly string[]): E.Either<string, CompareCommand> => {
  if (argv.includes("--help") || argv.includes("-h")) return E.right({ kind: "help", text: compareUsage() });
  const unknown: string[] = [];
  const a = parseArgs([...argv], {
    string: ["out", "metric"],
    boolean: ["force"],
    unknown: (arg) => {
      if (arg.startsWith("-")) {
        unknown.push(arg);
        return false;
      }
      return true;
    },
  });
  if (unknown.length > 0) {
    return E.left(`unknown flag(s) ${unknown.join(", ")}; known: --out, --metric, --force, --help`);
  }
  const runs = a._.map(String);
  if (runs.length === 0) return E.left("no run directory given: deno task compare RUN_DIR... (--help)");
  const out = typeof a.out === "string" ? a.out : undefined;
  if (a.out !== undefined && (out === undefined || !/\.(svg|png)$/i.test(out))) {
    return E.left(`--out ${out ?? ""}: a file ending in .svg or .png`);
  }
  const metricFlag = typeof a.metric === "string" && a.metric !== "" ? a.metric : "loss";
  return E.right({
    kind: "run",
    options: { runs, out, metric: ALIASES[metricFlag] ?? metricFlag, force: a.force === true },
  });
};

/** One run as the comparison reads it. */
export interface ComparedRun {
  /** The directory as given. */
  readonly dir: string;
  /** Its name in the table and the legend (the folder's name, or the path where two names collide). */
  readonly label: string;
  /** Every readable record of metrics.jsonl. */
  readonly records: readonly MetricsRecord[];
  /** Lines of metrics.jsonl that could not be read (a line cut by a crash). */
  readonly unreadable: number;
  /** The resolved config (defaults under the run's config.json); undefined when config.json does not decode. */
  readonly config: PretrainConfig | undefined;
  /** Ranks of a data-parallel run (distributed.json; 1 without it). */
  readonly worldSize: number;
}

const baseName = (dir: string): string => dir.replace(/\/+$/, "").split("/").pop() || dir;

/** Reads the runs: each must hold a metrics.jsonl. Left: one line per run that cannot be read. */
export const readRuns = async (dirs: readonly string[]): Promise<E.Either<string, ComparedRun[]>> => {
  const problems: string[] = [];
  const runs: ComparedRun[] = [];
  const names = dirs.map(baseName);
  for (const [i, dir] of dirs.entries()) {
    const path = `${dir.replace(/\/+$/, "")}/metrics.jsonl`;
    try {
      await Deno.stat(path);
    } catch (e) {
      problems.push(
        e instanceof Deno.errors.NotFound
          ? `${dir}: no metrics.jsonl there; is it a run directory of deno task pretrain?`
          : `${path}: ${message(e)}`,
      );
      continue;
    }
    const log = await readMetrics(path);
    const patch = readRunConfig(dir);
    const config = E.isRight(patch)
      ? { ...defaultPretrainConfig(), ...patch.right } as PretrainConfig
      : undefined;
    let worldSize = 1;
    try {
      const w = JSON.parse(await Deno.readTextFile(`${dir.replace(/\/+$/, "")}/distributed.json`));
      if (typeof w?.worldSize === "number") worldSize = w.worldSize;
    } catch { /* one process */ }
    const clash = names.filter((n) => n === names[i]).length > 1;
    runs.push({
      dir,
      label: clash ? dir : names[i],
      records: log.records.filter((r) => typeof r.step === "number"),
      unreadable: log.skipped.length,
      config,
      worldSize,
    });
  }
  return problems.length > 0 ? E.left(problems.join("\n")) : E.right(runs);
};

const num = (r: MetricsRecord | undefined, key: string): number | undefined =>
  typeof r?.[key] === "number" ? r[key] as number : undefined;

const fmt = (v: number | undefined): string =>
  v === undefined
    ? "-"
    : !Number.isFinite(v)
    ? String(v)
    : v === 0 || Math.abs(v) >= 0.01
    ? v.toFixed(4)
    : v.toExponential(2);

/**
 * The comparison table, as markdown with aligned columns: run, steps, first -> last loss, visible and
 * masked alignment, model, global batch, peak lr.
 */
export const compareTable = (runs: readonly ComparedRun[]): string => {
  const header = ["run", "steps", "loss", "visible", "masked", "model", "batch", "peak lr"];
  const rows = runs.map((r) => {
    const first = r.records[0], last = r.records.at(-1);
    const span = (k: string) => (first === undefined ? "-" : `${fmt(num(first, k))} -> ${fmt(num(last, k))}`);
    const c = r.config;
    const global = c === undefined ? undefined : { ...c, batchSize: c.batchSize * r.worldSize };
    return [
      r.label,
      String(num(last, "step") ?? 0),
      span("loss"),
      span("lossVisible"),
      span("lossMasked"),
      c?.model ?? "?",
      global === undefined ? "?" : String(totalBatch(global)),
      global === undefined ? "?" : String(peakLr(global)),
    ];
  });
  const widths = header.map((h, j) => Math.max(h.length, 3, ...rows.map((r) => r[j].length)));
  const line = (cells: readonly string[]) =>
    `| ${
      cells.map((c, j) => (j === 1 || j === 6 ? c.padStart(widths[j]) : c.padEnd(widths[j]))).join(" | ")
    } |`;
  return [
    line(header),
    `|${widths.map((w, j) => (j === 1 || j === 6 ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")}|`,
    ...rows.map(line),
  ].join("\n");
};

/** The metric keys every run's records have (what `--metric` can name). */
const metricKeys = (runs: readonly ComparedRun[]): string[] => {
  const keys = new Set<string>();
  for (const r of runs) for (const rec of r.records) for (const k of Object.keys(rec)) keys.add(k);
  keys.delete("step");
  return [...keys];
};

const Y_LABELS: Readonly<Record<string, string>> = {
  loss: "1 - cosine (the optimised loss)",
  lossVisible: "1 - cosine (visible latent alignment)",
  lossMasked: "1 - cosine (masked latent alignment)",
  lr: "learning rate",
  gradNorm: "gradient norm (before clipping)",
};

/** The chart: each run's curve of `metric` against the step, smoothed as the experiment reports are. */
export const compareChart = (runs: readonly ComparedRun[], metric: string): string => {
  const series: LineSeries[] = runs.map((r) => ({
    name: r.label,
    points: r.records.filter((m) => metric in m).map((m) => [Number(m.step), Number(m[metric])] as const),
  }));
  const steps = Math.max(1, ...runs.map((r) => r.records.length));
  const smoothing = metric === "lr" ? 0 : steps >= 1000 ? 0.95 : steps >= 200 ? 0.9 : steps >= 20 ? 0.6 : 0;
  return lineChart({
    title: `${metric} of ${runs.length} run${runs.length === 1 ? "" : "s"}`,
    xLabel: "step",
    yLabel: Y_LABELS[metric] ?? metric,
    series,
    smoothing,
  });
};

/** What {@link compareRuns} did. */
export interface CompareResult {
  /** The table ({@link compareTable}). */
  readonly table: string;
  /** Notes for people (unreadable lines). */
  readonly notes: readonly string[];
  /** The chart written, if any. */
  readonly out?: string;
}

/**
 * The whole comparison: checks `--out` (before reading anything), reads the runs, writes the chart.
 * Left: a message for people.
 */
export const compareRuns = async (o: CompareOptions): Promise<E.Either<string, CompareResult>> => {
  if (o.out !== undefined) {
    const inputs: InputFile[] = o.runs.flatMap((d) => [
      { what: "a run's metrics", path: `${d.replace(/\/+$/, "")}/metrics.jsonl` },
      { what: "a run's config", path: `${d.replace(/\/+$/, "")}/config.json` },
    ]);
    const ok = await checkOutputs([{ flag: "--out", path: o.out }], { force: o.force, inputs });
    if (E.isLeft(ok)) return ok;
  }
  const read = await readRuns(o.runs);
  if (E.isLeft(read)) return read;
  const runs = read.right;
  const keys = metricKeys(runs);
  if (!keys.includes(o.metric)) {
    return E.left(
      `--metric ${o.metric}: not in the runs' metrics.jsonl; they hold ${keys.join(", ") || "nothing"}`,
    );
  }
  const notes = runs.filter((r) => r.unreadable > 0).map((r) =>
    `note: ${r.dir}/metrics.jsonl has ${r.unreadable} unreadable line(s) (a line cut by a crash), left out`
  );
  if (o.out === undefined) return E.right({ table: compareTable(runs), notes });
  const svg = compareChart(runs, o.metric);
  if (/\.png$/i.test(o.out)) await Deno.writeFile(o.out, await svgToPng(svg));
  else await writeTextAtomic(o.out, svg);
  return E.right({ table: compareTable(runs), notes, out: o.out });
};
