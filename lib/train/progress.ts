/**
 * Progress of long jobs (pretraining, evaluation): on a terminal, one bar redrawn in place with rate, ETA
 * and the latest metrics, fitted to the terminal's width; in a log file or a pipe, a plain line every
 * `logEvery` steps and at the last step. The formatting is pure (`formatProgress`, `formatDuration`) and
 * tested apart from the terminal.
 *
 * @module
 */

/** Where a job stands. */
export interface ProgressState {
  /** What runs ("pretrain", "knn"). */
  readonly label: string;
  /** Steps done (the step just finished). */
  readonly step: number;
  /** Steps in the whole job. */
  readonly total: number;
  /** Seconds since this process started stepping. */
  readonly elapsed: number;
  /** Steps done by this process (fewer than `step` in a resumed run): the rate's numerator. */
  readonly stepsThisRun: number;
  /** Items (images) per step, to show items/s as well. */
  readonly itemsPerStep?: number;
  /** The latest metrics, shown in insertion order as far as the width allows. */
  readonly metrics?: Readonly<Record<string, number>>;
}

/**
 * A duration for people: "45s", "3m05s", "1h02m", "2d03h"; "--" when unknown.
 *
 * @example
 * ```ts
 * import { formatDuration } from "./progress.ts";
 * if (formatDuration(185) !== "3m05s" || formatDuration(3725) !== "1h02m") throw new Error();
 * ```
 */
export const formatDuration = (seconds: number): string => {
  if (!Number.isFinite(seconds) || seconds < 0) return "--";
  const s = Math.round(seconds);
  const p = (n: number) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${p(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${p(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d${p(Math.floor((s % 86400) / 3600))}h`;
};

/** A metric value in at most ~9 characters: 4 significant digits, exponent form when tiny or huge. */
export const formatNumber = (v: number): string => {
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2).replace("e+", "e");
  return String(Number(v.toPrecision(4)));
};

/** Steps (and items) per second: "2.31 it/s", "4.2 s/it" when slower than one step a second. */
export const formatRate = (stepsPerSecond: number, itemsPerStep?: number): string => {
  if (!(stepsPerSecond > 0) || !Number.isFinite(stepsPerSecond)) return "-- it/s";
  const steps = stepsPerSecond >= 1
    ? `${stepsPerSecond.toFixed(stepsPerSecond >= 100 ? 0 : 2)} it/s`
    : `${(1 / stepsPerSecond).toFixed(1)} s/it`;
  if (itemsPerStep === undefined) return steps;
  const items = stepsPerSecond * itemsPerStep;
  return `${steps} ${items.toFixed(items >= 100 ? 0 : 1)} img/s`;
};

/** Seconds left at the rate of this run so far; NaN when nothing is known yet. */
export const etaSeconds = (s: ProgressState): number =>
  s.stepsThisRun > 0 && s.elapsed > 0 ? ((s.total - s.step) * s.elapsed) / s.stepsThisRun : NaN;

const bar = (fraction: number, width: number): string => {
  const full = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return `[${"#".repeat(full)}${".".repeat(width - full)}]`;
};

/**
 * One progress line of at most `width` characters. With `bar` (a terminal), a bar stretches to use the
 * room the metrics leave (10 to 30 cells); metrics that do not fit are dropped from the end.
 *
 * @example
 * ```ts
 * import { formatProgress } from "./progress.ts";
 * const line = formatProgress(
 *   { label: "pretrain", step: 50, total: 100, elapsed: 25, stepsThisRun: 50, metrics: { loss: 0.51234 } },
 *   { width: 80, bar: false },
 * );
 * if (line !== "pretrain 50/100 (50%) 2.00 it/s ETA 25s elapsed 25s loss 0.5123") throw new Error(line);
 * ```
 */
export const formatProgress = (s: ProgressState, opts: { width?: number; bar?: boolean } = {}): string => {
  const width = Math.max(20, opts.width ?? 100);
  const pct = s.total > 0 ? Math.floor((100 * s.step) / s.total) : 0;
  const digits = String(s.total).length;
  const count = `${String(s.step).padStart(opts.bar ? digits : 0)}/${s.total}`;
  const rate = formatRate(s.elapsed > 0 ? s.stepsThisRun / s.elapsed : NaN, s.itemsPerStep);
  const done = s.step >= s.total;
  const time = done ? `in ${formatDuration(s.elapsed)}` : `ETA ${formatDuration(etaSeconds(s))}`;
  const metrics = Object.entries(s.metrics ?? {}).map(([k, v]) => `${k} ${formatNumber(v)}`);
  const head = opts.bar
    ? (barWidth: number) => `${s.label} ${count} ${bar(s.total > 0 ? s.step / s.total : 0, barWidth)} ${pct}%`
    : () => `${s.label} ${count} (${pct}%)`;
  const tail = opts.bar
    ? `${rate} ${time}`
    : `${rate} ${time}${done ? "" : ` elapsed ${formatDuration(s.elapsed)}`}`;
  const sep = opts.bar ? " | " : " ";
  for (let m = metrics.length; m >= 0; m--) {
    const ms = m > 0 ? `${sep}${metrics.slice(0, m).join(" ")}` : "";
    const fixed = `${head(0)} ${tail}${ms}`.length; // the line with an empty bar "[]"
    if (!opts.bar && fixed <= width) return `${head(0)} ${tail}${ms}`;
    const barWidth = Math.min(30, width - fixed);
    if (opts.bar && barWidth >= 10) return `${head(barWidth)} ${tail}${ms}`;
  }
  // Too narrow even without metrics: a short bar, cut to the width.
  return `${head(opts.bar ? 10 : 0)} ${tail}`.slice(0, width);
};

/** A live progress display. */
export interface Progress {
  /** Reports that `step` steps are done, with the latest metrics. */
  readonly update: (step: number, metrics?: Readonly<Record<string, number>>) => void;
  /** Prints a message line without breaking the bar. */
  readonly log: (line: string) => void;
  /** Draws the final state and ends the line. */
  readonly done: () => void;
}

/** How a `Progress` reports; everything but `label` and `total` has a default. */
export interface ProgressOptions {
  readonly label: string;
  readonly total: number;
  /** Plain lines every this many steps (not on a terminal). */
  readonly logEvery?: number;
  /** The step this process starts from (a resumed run), for the rate. */
  readonly startStep?: number;
  readonly itemsPerStep?: number;
  /** Whether to draw a bar in place; default `Deno.stdout.isTerminal()`. */
  readonly tty?: boolean;
  /** Where text goes; default stdout. */
  readonly write?: (text: string) => void;
  /** Terminal width; default `Deno.consoleSize().columns`, 100 when unknown. */
  readonly columns?: () => number;
  /** Clock in milliseconds; default `performance.now`. */
  readonly now?: () => number;
  /** Least time between two redraws of the bar, ms (default 100). */
  readonly minRedrawMs?: number;
}

const stdoutWrite = (text: string) => {
  const bytes = new TextEncoder().encode(text);
  let off = 0;
  while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
};

// A terminal that reports no size (0 columns, e.g. under `script` or some CI runners) counts as unknown.
const consoleColumns = () => {
  try {
    return Deno.consoleSize().columns || 100;
  } catch {
    return 100;
  }
};

/**
 * A progress display: a bar redrawn with "\r" on a terminal (at most every `minRedrawMs`, and always at the
 * last step), plain lines every `logEvery` steps and at the last one otherwise.
 */
export const progress = (o: ProgressOptions): Progress => {
  const tty = o.tty ?? Deno.stdout.isTerminal();
  const write = o.write ?? stdoutWrite;
  const columns = o.columns ?? consoleColumns;
  const now = o.now ?? (() => performance.now());
  const logEvery = Math.max(1, o.logEvery ?? 10);
  const startStep = o.startStep ?? 0;
  const t0 = now();
  let last: ProgressState | undefined;
  let lastDraw = -Infinity;
  let drawn = false;
  const stateAt = (step: number, metrics?: Readonly<Record<string, number>>): ProgressState => ({
    label: o.label,
    step,
    total: o.total,
    elapsed: (now() - t0) / 1000,
    stepsThisRun: step - startStep,
    itemsPerStep: o.itemsPerStep,
    metrics,
  });
  // Leave the last column free: some terminals wrap when a line fills the width exactly.
  const draw = (s: ProgressState) => {
    write(`\r${formatProgress(s, { width: columns() - 1, bar: true })}\x1b[K`);
    drawn = true;
    lastDraw = now();
  };
  return {
    update: (step, metrics) => {
      last = stateAt(step, metrics);
      if (tty) {
        if (step >= o.total || now() - lastDraw >= (o.minRedrawMs ?? 100)) draw(last);
      } else if (step % logEvery === 0 || step >= o.total) {
        write(`${formatProgress(last, { width: 1000, bar: false })}\n`);
      }
    },
    log: (line) => {
      if (tty && drawn) {
        write(`\r\x1b[K${line}\n`);
        if (last !== undefined) draw(last);
      } else write(`${line}\n`);
    },
    done: () => {
      if (tty) {
        if (last !== undefined) draw(last);
        if (drawn) write("\n");
      }
    },
  };
};
