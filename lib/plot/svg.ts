/**
 * Plots as SVG text, written by hand: a line chart (loss curves) and a grouped bar chart (probe accuracy
 * per setting), with axes, "nice" ticks (Heckbert, "Nice numbers for graph labels", Graphics Gems 1990),
 * grid lines and a legend. Pure functions of their input: the same data gives the same bytes, so plots
 * are as reproducible as the numbers behind them. Colours are the Okabe-Ito palette (distinguishable with
 * the common colour-vision deficiencies); coordinates are rounded to 0.01 px.
 *
 * Text is SVG `<text>` in DejaVu Sans (with Verdana / sans-serif as fallbacks for browsers); png.ts
 * rasterises with an embedded copy of that font, so widths estimated here hold in the PNG.
 *
 * @module
 */
import { FONT_FAMILY } from "./font.ts";

/** Okabe & Ito (2008), "Color Universal Design": blue, vermillion, bluish green, reddish purple, orange, sky blue, black. */
export const PALETTE: readonly string[] = [
  "#0072B2",
  "#D55E00",
  "#009E73",
  "#CC79A7",
  "#E69F00",
  "#56B4E9",
  "#000000",
];

/** One curve of a line chart: `[x, y]` points in x order; non-finite y values break the line. */
export interface LineSeries {
  /** Legend entry. */
  readonly name: string;
  /** `[x, y]` in x order. */
  readonly points: readonly (readonly [number, number])[];
  /** Draw dashed (e.g. a second metric of the same run). */
  readonly dashed?: boolean;
  /** Colour; default: the palette colour of the series' index. */
  readonly color?: string;
}

/** What {@link lineChart} draws. */
export interface LineChartSpec {
  /** Above the plot. */
  readonly title: string;
  /** Below the x axis. */
  readonly xLabel: string;
  /** Left of the y axis. */
  readonly yLabel: string;
  /** The curves, coloured in order. */
  readonly series: readonly LineSeries[];
  /** Pixels; default 760 x 440. */
  readonly width?: number;
  /** Pixels (default 440). */
  readonly height?: number;
  /**
   * Exponential moving average factor in [0, 1): when above 0, each series is drawn faint as measured and
   * solid after smoothing ({@link smooth}: a debiased exponential moving average, TensorBoard's).
   */
  readonly smoothing?: number;
}

/** One bar: its height and, optionally, a whisker from `low` to `high` (min and max over seeds). */
export interface Bar {
  /** The bar's height (the mean over seeds). */
  readonly value: number;
  /** Bottom of the whisker (the minimum). */
  readonly low?: number;
  /** Top of the whisker (the maximum). */
  readonly high?: number;
}

/** A series of a bar chart: one bar per group (undefined: no bar in that group). */
export interface BarSeries {
  /** Legend entry. */
  readonly name: string;
  /** One bar per group, in the groups' order. */
  readonly values: readonly (Bar | undefined)[];
}

/** What {@link barChart} draws. */
export interface BarChartSpec {
  /** Above the plot. */
  readonly title: string;
  /** Below the groups. */
  readonly xLabel: string;
  /** Left of the y axis. */
  readonly yLabel: string;
  /** Group labels along x, in order. */
  readonly groups: readonly string[];
  /** Bars within each group, coloured in order. */
  readonly series: readonly BarSeries[];
  /** Horizontal reference lines (e.g. chance level, a random-init encoder), dashed, named in the legend. */
  readonly references?: readonly { readonly name: string; readonly value: number }[];
  /** The y axis starts at 0 unless a value is negative; its top is "nice" above the largest value. */
  readonly yMax?: number;
  /** Decimals of the value printed above each bar (default 1). */
  readonly decimals?: number;
  /** Pixels (default 760). */
  readonly width?: number;
  /** Pixels (default 440). */
  readonly height?: number;
}

/** Ticks of an axis: the rounded range and the tick values. */
export interface Ticks {
  readonly lo: number;
  readonly hi: number;
  readonly step: number;
  readonly values: readonly number[];
}

const niceNumber = (x: number, round: boolean): number => {
  const e = Math.floor(Math.log10(x));
  const f = x / 10 ** e;
  const nice = round
    ? (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10)
    : (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10);
  return nice * 10 ** e;
};

/**
 * About `target` evenly spaced round tick values covering `[lo, hi]` (steps of 1, 2 or 5 times a power of
 * ten); a degenerate range is widened around its value.
 *
 * @example
 * ```ts
 * import { niceTicks } from "./svg.ts";
 * const t = niceTicks(0.13, 0.97, 5);
 * if (t.lo !== 0 || t.hi !== 1 || t.step !== 0.2 || t.values.length !== 6) throw new Error(JSON.stringify(t));
 * ```
 */
export const niceTicks = (lo: number, hi: number, target = 5): Ticks => {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return niceTicks(0, 1, target);
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi - lo < 1e-12 * Math.max(1, Math.abs(lo))) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    return niceTicks(lo - pad, hi + pad, target);
  }
  const step = niceNumber(niceNumber(hi - lo, false) / Math.max(1, target - 1), true);
  const from = Math.floor(lo / step + 1e-9), to = Math.ceil(hi / step - 1e-9);
  // Integer multiples of the step, so that 0.1 * 3 is printed as 0.3 and not 0.30000000000000004.
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  const values = Array.from(
    { length: to - from + 1 },
    (_, i) => Number(((from + i) * step).toFixed(decimals)),
  );
  return { lo: values[0], hi: values[values.length - 1], step, values };
};

/**
 * A tick label: as many decimals as the step needs, no "-0".
 *
 * @example
 * ```ts
 * import { formatTick } from "./svg.ts";
 * if (formatTick(0.30000000000000004, 0.1) !== "0.3" || formatTick(-0, 1) !== "0") throw new Error();
 * if (formatTick(2500, 500) !== "2500" || formatTick(0.00025, 0.00005) !== "2.5e-4") throw new Error();
 * ```
 */
export const formatTick = (v: number, step: number): string => {
  if (v === 0 || Object.is(v, -0)) return "0";
  if (step < 1e-3) {
    return v.toExponential(Math.max(0, Math.round(Math.log10(Math.abs(v) / step)))).replace(
      /e([+-])(\d+)/,
      (_, s: string, d: string) => `e${s === "-" ? "-" : ""}${d}`,
    );
  }
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  const s = v.toFixed(decimals);
  return s === "-0" || /^-0\.0*$/.test(s) ? s.slice(1) : s;
};

/** Escapes text for SVG content and attribute values. */
export const escapeXml = (s: string): string =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** Approximate width in px of `text` at `size` px in DejaVu Sans (average advance ~0.6 em). */
export const textWidth = (text: string, size: number): number => text.length * size * 0.6;

const n = (x: number): string => {
  const r = Math.round(x * 100) / 100;
  return Object.is(r, -0) ? "0" : String(r);
};

const text = (
  x: number,
  y: number,
  content: string,
  attrs: Readonly<Record<string, string | number>> = {},
): string => {
  const a = Object.entries(attrs).map(([k, v]) => ` ${k}="${typeof v === "number" ? n(v) : escapeXml(v)}"`)
    .join(
      "",
    );
  return `<text x="${n(x)}" y="${n(y)}"${a}>${escapeXml(content)}</text>`;
};

interface Frame {
  readonly width: number;
  readonly height: number;
  readonly left: number;
  readonly right: number;
  readonly top: number;
  readonly bottom: number;
}

const open = (f: Frame, title: string): string[] => [
  `<svg xmlns="http://www.w3.org/2000/svg" width="${f.width}" height="${f.height}" viewBox="0 0 ${f.width} ${f.height}" ` +
  `font-family="${FONT_FAMILY}, Verdana, sans-serif" font-size="12">`,
  `<title>${escapeXml(title)}</title>`,
  `<rect width="${f.width}" height="${f.height}" fill="#ffffff"/>`,
  text((f.left + f.width - f.right) / 2, 24, title, { "font-size": 15, "text-anchor": "middle" }),
];

/** Y axis: grid lines, tick labels, the rotated label. */
const yAxis = (f: Frame, t: Ticks, label: string, y: (v: number) => number): string[] => {
  const out: string[] = [];
  for (const v of t.values) {
    out.push(
      `<line x1="${n(f.left)}" y1="${n(y(v))}" x2="${n(f.width - f.right)}" y2="${
        n(y(v))
      }" stroke="#e5e5e5" stroke-width="1"/>`,
      text(f.left - 6, y(v) + 4, formatTick(v, t.step), { "text-anchor": "end", fill: "#333333" }),
    );
  }
  const cy = (f.top + f.height - f.bottom) / 2;
  out.push(
    text(16, cy, label, { "text-anchor": "middle", transform: `rotate(-90 16 ${n(cy)})`, fill: "#333333" }),
  );
  return out;
};

const frameLines = (f: Frame): string =>
  `<path d="M${n(f.left)} ${n(f.top)}V${n(f.height - f.bottom)}H${n(f.width - f.right)}" fill="none" ` +
  `stroke="#333333" stroke-width="1"/>`;

interface LegendItem {
  readonly name: string;
  readonly color: string;
  readonly kind: "line" | "dashed" | "box";
}

// Widest legend text in px; longer names are cut with an ellipsis.
const LEGEND_TEXT = 250;

/** Legend in the right margin, one row per item. */
const legend = (f: Frame, items: readonly LegendItem[]): string[] => {
  const x = f.width - f.right + 14;
  return items.flatMap((it, i) => {
    const y = f.top + 6 + i * 18;
    const mark = it.kind === "box"
      ? `<rect x="${n(x)}" y="${n(y - 5)}" width="14" height="10" fill="${it.color}"/>`
      : `<line x1="${n(x)}" y1="${n(y)}" x2="${n(x + 18)}" y2="${
        n(y)
      }" stroke="${it.color}" stroke-width="2"${it.kind === "dashed" ? ' stroke-dasharray="5 3"' : ""}/>`;
    const max = Math.floor(LEGEND_TEXT / (12 * 0.6));
    const name = it.name.length > max ? `${it.name.slice(0, max - 1)}…` : it.name;
    return [mark, text(x + 24, y + 4, name, { fill: "#222222" })];
  });
};

const legendWidth = (names: readonly string[]): number =>
  names.length === 0 ? 16 : Math.min(LEGEND_TEXT, Math.max(...names.map((s) => textWidth(s, 12)))) + 52;

/**
 * TensorBoard's smoothing: `m_k = a m_{k-1} + (1 - a) y_k` from `m_0 = 0`, shown as `m_k / (1 - a^k)` (the
 * debiasing of Adam's moments, so the start is not pulled towards 0); restarted after a gap (non-finite y).
 *
 * @example
 * ```ts
 * import { smooth } from "./svg.ts";
 * const s = smooth([[0, 1], [1, 1], [2, NaN], [3, 4], [4, 0]], 0.5);
 * // Constant stays constant; after the gap it restarts at 4; then (0.5 * 0.5 * 4 + 0.5 * 0) / 0.75.
 * if (s[1][1] !== 1 || !Number.isNaN(s[2][1]) || s[3][1] !== 4 || Math.abs(s[4][1] - 4 / 3) > 1e-12) throw new Error();
 * ```
 */
export const smooth = (points: readonly (readonly [number, number])[], a: number): [number, number][] => {
  let m = 0, k = 0;
  return points.map(([x, y]) => {
    if (!Number.isFinite(y)) {
      m = 0;
      k = 0;
      return [x, y];
    }
    m = a * m + (1 - a) * y;
    k++;
    return [x, m / (1 - a ** k)];
  });
};

/** Polyline path data, broken at non-finite values. */
const pathOf = (
  points: readonly (readonly [number, number])[],
  x: (v: number) => number,
  y: (v: number) => number,
): string => {
  let d = "", pen = false;
  for (const [px, py] of points) {
    if (!Number.isFinite(px) || !Number.isFinite(py)) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${n(x(px))} ${n(y(py))}`;
    pen = true;
  }
  return d;
};

/**
 * A line chart as an SVG document.
 *
 * @example
 * ```ts
 * import { lineChart } from "./svg.ts";
 * const svg = lineChart({
 *   title: "loss", xLabel: "step", yLabel: "loss",
 *   series: [{ name: "run a", points: [[1, 0.9], [2, 0.5], [3, 0.4]] }],
 * });
 * if (!svg.startsWith("<svg") || !svg.includes("run a") || !svg.includes("<path")) throw new Error();
 * ```
 */
export const lineChart = (spec: LineChartSpec): string => {
  const all = spec.series.flatMap((s) => s.points).filter(([x, y]) =>
    Number.isFinite(x) && Number.isFinite(y)
  );
  const xs = all.map(([x]) => x), ys = all.map(([, y]) => y);
  const tx = niceTicks(xs.length ? Math.min(...xs) : 0, xs.length ? Math.max(...xs) : 1, 7);
  const ty = niceTicks(ys.length ? Math.min(...ys) : 0, ys.length ? Math.max(...ys) : 1, 6);
  const f: Frame = {
    width: spec.width ?? 760,
    height: spec.height ?? 440,
    left: 64,
    right: legendWidth(spec.series.map((s) => s.name)),
    top: 40,
    bottom: 48,
  };
  const x = (v: number) => f.left + ((v - tx.lo) / (tx.hi - tx.lo)) * (f.width - f.left - f.right);
  const y = (v: number) =>
    f.height - f.bottom - ((v - ty.lo) / (ty.hi - ty.lo)) * (f.height - f.top - f.bottom);
  const out = open(f, spec.title);
  out.push(...yAxis(f, ty, spec.yLabel, y));
  for (const v of tx.values) {
    out.push(
      `<line x1="${n(x(v))}" y1="${n(f.height - f.bottom)}" x2="${n(x(v))}" y2="${
        n(f.height - f.bottom + 4)
      }" stroke="#333333"/>`,
      text(x(v), f.height - f.bottom + 17, formatTick(v, tx.step), {
        "text-anchor": "middle",
        fill: "#333333",
      }),
    );
  }
  out.push(
    text(x((tx.lo + tx.hi) / 2), f.height - 10, spec.xLabel, { "text-anchor": "middle", fill: "#333333" }),
  );
  const a = spec.smoothing ?? 0;
  const colors = spec.series.map((s, i) => s.color ?? PALETTE[i % PALETTE.length]);
  spec.series.forEach((s, i) => {
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : "";
    if (a > 0) {
      out.push(
        `<path d="${pathOf(s.points, x, y)}" fill="none" stroke="${
          colors[i]
        }" stroke-opacity="0.25" stroke-width="1"${dash}/>`,
      );
    }
    const shown = a > 0 ? smooth(s.points, a) : s.points;
    out.push(
      `<path d="${pathOf(shown, x, y)}" fill="none" stroke="${
        colors[i]
      }" stroke-width="1.8" stroke-linejoin="round"${dash}/>`,
    );
  });
  out.push(frameLines(f));
  out.push(
    ...legend(
      f,
      spec.series.map((s, i) => ({ name: s.name, color: colors[i], kind: s.dashed ? "dashed" : "line" })),
    ),
  );
  out.push("</svg>");
  return out.join("\n") + "\n";
};

/**
 * A grouped bar chart as an SVG document: one cluster per group, one bar per series, the value printed
 * above each bar, whiskers where a bar has `low`/`high`, dashed reference lines across the plot.
 *
 * @example
 * ```ts
 * import { barChart } from "./svg.ts";
 * const svg = barChart({
 *   title: "probe", xLabel: "objective", yLabel: "top-1 (%)", groups: ["visible", "masked", "both"],
 *   series: [{ name: "linear probe", values: [{ value: 30 }, { value: 20, low: 18, high: 22 }, undefined] }],
 *   references: [{ name: "chance", value: 10 }],
 * });
 * if (!svg.includes(">30.0<") || !svg.includes("chance")) throw new Error();
 * ```
 */
export const barChart = (spec: BarChartSpec): string => {
  const vals = spec.series.flatMap((s) =>
    s.values.flatMap((b) => (b === undefined ? [] : [b.value, b.low ?? b.value, b.high ?? b.value]))
  ).concat((spec.references ?? []).map((r) => r.value)).filter(Number.isFinite);
  const top = spec.yMax ?? (vals.length ? Math.max(...vals) * 1.08 : 1);
  const ty = niceTicks(Math.min(0, ...vals), top > 0 ? top : 1, 6);
  const names = [...spec.series.map((s) => s.name), ...(spec.references ?? []).map((r) => r.name)];
  const f: Frame = {
    width: spec.width ?? 760,
    height: spec.height ?? 440,
    left: 64,
    right: legendWidth(names),
    top: 40,
    bottom: 48,
  };
  const y = (v: number) =>
    f.height - f.bottom - ((v - ty.lo) / (ty.hi - ty.lo)) * (f.height - f.top - f.bottom);
  const plotW = f.width - f.left - f.right;
  const slot = plotW / Math.max(1, spec.groups.length);
  const ns = Math.max(1, spec.series.length);
  const barW = Math.min(56, (slot * 0.76) / ns);
  const out = open(f, spec.title);
  out.push(...yAxis(f, ty, spec.yLabel, y));
  const decimals = spec.decimals ?? 1;
  spec.groups.forEach((g, gi) => {
    const cx = f.left + slot * (gi + 0.5);
    out.push(text(cx, f.height - f.bottom + 17, g, { "text-anchor": "middle", fill: "#333333" }));
    spec.series.forEach((s, si) => {
      const b = s.values[gi];
      if (b === undefined || !Number.isFinite(b.value)) return;
      const color = PALETTE[si % PALETTE.length];
      const x0 = cx - (ns * barW) / 2 + si * barW;
      const y0 = y(Math.max(0, b.value)), y1 = y(Math.min(0, b.value));
      out.push(
        `<rect x="${n(x0 + 1)}" y="${n(y0)}" width="${n(barW - 2)}" height="${
          n(Math.max(0, y1 - y0))
        }" fill="${color}"/>`,
      );
      let labelY = y0;
      if (b.low !== undefined && b.high !== undefined) {
        const xm = x0 + barW / 2;
        out.push(
          `<path d="M${n(xm)} ${n(y(b.low))}V${n(y(b.high))}M${n(xm - 4)} ${n(y(b.low))}H${n(xm + 4)}M${
            n(xm - 4)
          } ${n(y(b.high))}H${n(xm + 4)}" stroke="#222222" stroke-width="1.2" fill="none"/>`,
        );
        labelY = Math.min(labelY, y(b.high));
      }
      out.push(
        text(x0 + barW / 2, labelY - 4, b.value.toFixed(decimals), {
          "text-anchor": "middle",
          "font-size": 10,
          fill: "#222222",
        }),
      );
    });
  });
  out.push(
    text(f.left + plotW / 2, f.height - 10, spec.xLabel, { "text-anchor": "middle", fill: "#333333" }),
  );
  const refColor = (i: number) => ["#555555", "#999999", "#bbbbbb"][i % 3];
  (spec.references ?? []).forEach((r, i) => {
    out.push(
      `<line x1="${n(f.left)}" y1="${n(y(r.value))}" x2="${n(f.width - f.right)}" y2="${
        n(y(r.value))
      }" stroke="${refColor(i)}" stroke-width="1.5" stroke-dasharray="6 4"/>`,
    );
  });
  out.push(frameLines(f));
  out.push(
    ...legend(f, [
      ...spec.series.map((s, i) => ({
        name: s.name,
        color: PALETTE[i % PALETTE.length],
        kind: "box" as const,
      })),
      ...(spec.references ?? []).map((r, i) => ({
        name: r.name,
        color: refColor(i),
        kind: "dashed" as const,
      })),
    ]),
  );
  out.push("</svg>");
  return out.join("\n") + "\n";
};
