/**
 * The experiment report: `report.md` with what was run and how to rerun it, the results table (mean over
 * seeds, with the range when there are several), the plots, the runs and their config hashes, and the
 * versions; plus the plots themselves in `plots/` as SVG and PNG:
 *
 * - `loss.svg`, `loss-visible.svg`, `loss-masked.svg`: the training curves of every run (the optimised
 *   loss, and each alignment term, measured in every run whether or not it is optimised there);
 * - `probe.svg`, `knn.svg`: held-out top-1 per setting, bars grouped by the experiment's x coordinate,
 *   with chance level and the random-init encoder as reference lines.
 *
 * Everything here is a pure function of the results (no clock, no absolute path), so a rerun writes the
 * same report.
 *
 * @module
 */
import type { PretrainConfig } from "../config/pretrain.ts";
import { readMetrics } from "../train/metrics.ts";
import { message, writeTextAtomic } from "../core/fs.ts";
import type { Experiment, SettingValue } from "./registry.ts";
import { type BaselineRecord, type ExperimentResults, type RunRecord, top5Of } from "./results.ts";
import { type Bar, barChart, type BarSeries, lineChart, type LineSeries } from "../plot/svg.ts";
import { svgToPng } from "../plot/png.ts";
import type { Versions } from "./versions.ts";
import type { ProbeSpec } from "./evaluate.ts";

/** The probe settings that differ from the recipe's defaults, as `, 5 epochs, ...` (empty when none). */
const probeSpecNote = (p: ProbeSpec): string =>
  [
    p.epochs === undefined ? "" : `, at least ${p.epochs} epochs`,
    p.minSteps === undefined ? "" : `, at least ${p.minSteps} updates`,
    p.batchSize === undefined ? "" : `, batch ${p.batchSize}`,
  ].join("");

/** Mean and range of numbers (NaN for none). */
export interface Summary {
  readonly mean: number;
  readonly min: number;
  readonly max: number;
  readonly n: number;
}

/**
 * Mean, min and max.
 *
 * @example
 * ```ts
 * import { summarize } from "./report.ts";
 * const s = summarize([1, 2, 6]);
 * if (s.mean !== 3 || s.min !== 1 || s.max !== 6 || s.n !== 3) throw new Error();
 * ```
 */
export const summarize = (xs: readonly number[]): Summary => {
  const v = xs.filter(Number.isFinite);
  if (v.length === 0) return { mean: NaN, min: NaN, max: NaN, n: 0 };
  return {
    mean: v.reduce((a, b) => a + b, 0) / v.length,
    min: Math.min(...v),
    max: Math.max(...v),
    n: v.length,
  };
};

/** `23.40` or `23.40 (22.10-24.70)` with several seeds; `-` when there is nothing. */
export const formatSummary = (s: Summary, decimals = 2): string =>
  s.n === 0
    ? "-"
    : s.n === 1 || s.min === s.max
    ? s.mean.toFixed(decimals)
    : `${s.mean.toFixed(decimals)} (${s.min.toFixed(decimals)}-${s.max.toFixed(decimals)})`;

/** The runs of one setting, in plan order. */
interface SettingRow {
  readonly setting: string;
  readonly label: string;
  readonly values: Readonly<Record<string, SettingValue>>;
  readonly runs: readonly RunRecord[];
}

const bySetting = (runs: readonly RunRecord[]): SettingRow[] => {
  const rows = new Map<string, RunRecord[]>();
  for (const r of runs) rows.set(r.setting, [...(rows.get(r.setting) ?? []), r]);
  return [...rows.values()].map((rs) => ({
    setting: rs[0].setting,
    label: rs[0].label,
    values: rs[0].values,
    runs: rs,
  }));
};

const show = (v: SettingValue | undefined): string =>
  v === undefined ? "" : typeof v === "number" ? String(v) : v;

const pct = (x: number | undefined) => (x === undefined ? NaN : x);

/**
 * The results table in Markdown: one row per setting, then one per baseline. The probe's top-5 column is
 * there only when some evaluation had 6 classes or more (below, top-5 is 100% by construction: `-`).
 *
 * @example
 * ```ts
 * import { resultsTable } from "./report.ts";
 * import { alignmentAblation } from "./registry.ts";
 * const results = (numClasses: number) => ({
 *   experiment: "alignment-ablation", size: "test" as const, seeds: [0], planHash: "h", runs: [],
 *   baselines: [{ model: "micro", seed: 0, eval: {
 *     probe: { top1: 40, top5: 100, bestTop1: 40 }, knn: null, numClasses, trainImages: 9, valImages: 5, encoder: "random",
 *   } }],
 * });
 * if (!resultsTable(alignmentAblation, results(10)).includes("| probe top-5 % |")) throw new Error();
 * if (resultsTable(alignmentAblation, results(3)).includes("top-5")) throw new Error("no top-5 below 6 classes");
 * ```
 */
export const resultsTable = (exp: Experiment, results: ExperimentResults): string => {
  const rows = bySetting(results.runs);
  const coords = [exp.groupBy, ...(exp.seriesBy ? [exp.seriesBy] : [])];
  const withTop5 = [...results.runs, ...results.baselines].some((x) =>
    top5Of(x.eval.probe, x.eval.numClasses) !== undefined
  );
  const top5 = (cells: readonly string[]) => (withTop5 ? cells : []);
  const head = [
    ...coords.map((c) => exp.axisNames[c] ?? c),
    "seeds",
    "final loss",
    "visible",
    "masked",
    "probe top-1 %",
    ...top5(["probe top-5 %"]),
    "k-NN top-1 %",
  ];
  const line = (cells: readonly string[]) => `| ${cells.join(" | ")} |`;
  const body = rows.map((r) => {
    const s = (f: (x: RunRecord) => number | undefined, d = 2) =>
      formatSummary(summarize(r.runs.map((x) => pct(f(x)))), d);
    return line([
      ...coords.map((c) => show(r.values[c])),
      String(r.runs.length),
      s((x) => x.final.loss, 4),
      s((x) => x.final.lossVisible, 4),
      s((x) => x.final.lossMasked, 4),
      s((x) => x.eval.probe?.top1),
      ...top5([s((x) => top5Of(x.eval.probe, x.eval.numClasses))]),
      s((x) => x.eval.knn?.top1),
    ]);
  });
  const base = results.baselines.map((b) =>
    line([
      `random init, ${b.model} (no pretraining)`,
      ...coords.slice(1).map((c) => (c === "model" ? b.model : "")),
      "-",
      "-",
      "-",
      "-",
      b.eval.probe ? b.eval.probe.top1.toFixed(2) : "-",
      ...top5([top5Of(b.eval.probe, b.eval.numClasses)?.toFixed(2) ?? "-"]),
      b.eval.knn ? b.eval.knn.top1.toFixed(2) : "-",
    ])
  );
  return [line(head), line(head.map(() => "---")), ...body, ...base].join("\n");
};

/** The bar charts' data: groups along x, one series per value of `seriesBy`. */
const bars = (
  exp: Experiment,
  results: ExperimentResults,
  metric: (r: RunRecord) => number | undefined,
): { groups: string[]; series: BarSeries[] } => {
  const rows = bySetting(results.runs);
  const groups = [...new Set(rows.map((r) => show(r.values[exp.groupBy])))];
  const seriesNames = exp.seriesBy ? [...new Set(rows.map((r) => show(r.values[exp.seriesBy!])))] : [""];
  const series = seriesNames.map((name) => ({
    name: name === "" ? "pretrained" : name,
    values: groups.map((g): Bar | undefined => {
      const row = rows.find((r) =>
        show(r.values[exp.groupBy]) === g &&
        (exp.seriesBy === undefined || show(r.values[exp.seriesBy]) === name)
      );
      if (row === undefined) return undefined;
      const s = summarize(row.runs.map((x) => pct(metric(x))));
      if (s.n === 0) return undefined;
      return s.n > 1 ? { value: s.mean, low: s.min, high: s.max } : { value: s.mean };
    }),
  }));
  return { groups, series };
};

const references = (
  baselines: readonly BaselineRecord[],
  metric: (b: BaselineRecord) => number | undefined,
  numClasses: number,
) => [
  { name: `chance (${numClasses} classes)`, value: 100 / numClasses },
  ...baselines.flatMap((b) => {
    const v = metric(b);
    return v === undefined ? [] : [{ name: `random init (${b.model})`, value: v }];
  }),
];

/** Every plot of the report as `[file stem, svg]`, loss curves read from the runs' metrics.jsonl. */
export const plots = async (
  exp: Experiment,
  results: ExperimentResults,
  out: string,
): Promise<[string, string][]> => {
  const curves = await Promise.all(
    results.runs.map(async (r) => ({
      run: r,
      records: (await readMetrics(`${out}/${r.dir}/metrics.jsonl`)).records,
    })),
  );
  const many = results.seeds.length > 1;
  const seriesOf = (key: string): LineSeries[] =>
    curves.map(({ run, records }) => ({
      name: many ? `${run.label} (seed ${run.seed})` : run.label,
      points: records.map((m) => [Number(m.step), Number(m[key])] as const),
    }));
  const steps = Math.max(1, ...curves.map((c) => c.records.length));
  // Enough to read a trend through batch noise without lagging a short run's descent.
  const smoothing = steps >= 1000 ? 0.95 : steps >= 200 ? 0.9 : steps >= 20 ? 0.6 : 0;
  const line = (key: string, what: string) =>
    lineChart({
      title: `${exp.name}: ${what}`,
      xLabel: "step",
      yLabel: "1 - cosine",
      series: seriesOf(key),
      smoothing,
    });
  const numClasses = results.runs[0]?.eval.numClasses ?? results.baselines[0]?.eval.numClasses ?? 10;
  const bar = (
    title: string,
    metric: (r: RunRecord) => number | undefined,
    base: (b: BaselineRecord) => number | undefined,
  ) => {
    const { groups, series } = bars(exp, results, metric);
    return barChart({
      title: `${exp.name}: ${title}`,
      xLabel: exp.axisNames[exp.groupBy] ?? exp.groupBy,
      yLabel: "held-out top-1 accuracy (%)",
      groups,
      series,
      references: references(results.baselines, base, numClasses),
    });
  };
  const out2: [string, string][] = [
    ["loss", line("loss", "training loss (the optimised objective)")],
    ["loss-visible", line("lossVisible", "visible latent alignment (measured in every run)")],
    ["loss-masked", line("lossMasked", "masked latent alignment (measured in every run)")],
  ];
  if (results.runs.some((r) => r.eval.probe !== null)) {
    out2.push([
      "probe",
      bar("linear probe on frozen cls features", (r) => r.eval.probe?.top1, (b) => b.eval.probe?.top1),
    ]);
  }
  if (results.runs.some((r) => r.eval.knn !== null)) {
    out2.push([
      "knn",
      bar("k-NN (k 20) on frozen cls features", (r) => r.eval.knn?.top1, (b) => b.eval.knn?.top1),
    ]);
  }
  return out2;
};

const describeConfig = (c: PretrainConfig): string =>
  `${c.model} student, ${c.imageSize} px images in ${c.patchSize} px patches, ${c.steps} steps of ` +
  `${c.batchSize * c.accumulate} images, ${c.masking} masking, data ${c.data}, teacher ${
    c.teacher ?? "random micro CLIP (no weights given)"
  }`;

/** The command that reruns this experiment (flags that differ from the experiment's own are in `overrides`). */
export const rerunCommand = (
  name: string,
  size: string,
  seeds: readonly number[],
  overrides: Readonly<Record<string, unknown>>,
  out: string,
): string => {
  const kebab = (k: string) => k.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`);
  const flags = Object.entries(overrides).filter(([, v]) => v !== undefined).map(([k, v]) =>
    v === null ? `--no-${kebab(k)}` : `--${kebab(k)} ${String(v)}`
  );
  const consecutive = seeds.every((s, i) => s === seeds[0] + i);
  const seedFlags = consecutive
    ? [
      ...(seeds[0] !== 0 ? [`--seed ${seeds[0]}`] : []),
      ...(seeds.length !== 1 ? [`--seeds ${seeds.length}`] : []),
    ]
    : [`--seed-list ${seeds.join(",")}`];
  return [
    "deno task experiment",
    name,
    ...(size !== "small" ? [`--size ${size}`] : []),
    ...seedFlags,
    ...flags,
    `--out ${out}`,
  ]
    .join(" ");
};

/** report.md as text. `plotFiles`: the stems written to plots/ (PNG shown, SVG linked). */
export const renderReport = (
  exp: Experiment,
  results: ExperimentResults,
  versions: Versions,
  configs: readonly PretrainConfig[],
  plotFiles: readonly string[],
  overrides: Readonly<Record<string, unknown>>,
  out: string,
  png: boolean,
): string => {
  const ev = exp.evaluation(results.size);
  const kinds = [...new Set(configs.map(describeConfig))];
  const g = versions.git;
  const lines = [
    `# ${exp.name}: ${exp.title}`,
    "",
    `**Paper.** ${exp.paper}`,
    "",
    `**Rerun.** \`${rerunCommand(exp.name, results.size, results.seeds, overrides, out)}\` writes the same ` +
    "metrics, evaluations and results files on the same backend (plan hash " + `\`${results.planHash}\`).`,
    "",
    `**Setup** (size \`${results.size}\`, ${results.runs.length} run(s), seeds ${results.seeds.join(", ")}):`,
    "",
    ...kinds.map((k) => `- ${k}`),
    `- evaluation: the frozen encoder's cls features of ${ev.maxTrain} training and ${ev.maxVal} held-out images;` +
    (ev.probe
      ? ` linear probe (deno task probe's default recipe: whitened features, AdamW, lr chosen on held-back ` +
        `training features${probeSpecNote(ev.probe)});`
      : "") +
    (ev.knn ? ` weighted k-NN (k ${ev.knn.k ?? 20}, T ${ev.knn.temperature ?? 0.07})` : ""),
    "",
    "## Results",
    "",
    "Final losses are means over the last steps of each run (`1 - cosine`; visible and masked are measured in " +
    "every run, optimised only where the objective includes them). Accuracies are on held-out images. With " +
    "several seeds a cell reads `mean (min-max)`.",
    "",
    resultsTable(exp, results),
    "",
    "## Plots",
    "",
    ...plotFiles.flatMap((f) => [
      png ? `![${f}](plots/${f}.png)` : `![${f}](plots/${f}.svg)`,
      "",
      `[${f}.svg](plots/${f}.svg)${png ? ` · [${f}.png](plots/${f}.png)` : ""}`,
      "",
    ]),
    "## Runs",
    "",
    "| run | setting | seed | config hash | folder |",
    "| --- | --- | --- | --- | --- |",
    ...results.runs.map((r) =>
      `| ${r.id} | ${r.label} | ${r.seed} | \`${r.configHash}\` | [${r.dir}](${r.dir}) |`
    ),
    "",
    "## Versions",
    "",
    `- Deno ${versions.deno} (V8 ${versions.v8}, TypeScript ${versions.typescript})`,
    `- tfjs ${Object.entries(versions.tfjs).map(([k, v]) => `${k} ${v}`).join(", ")}`,
    `- backend ${versions.backend.name}${versions.backend.detail ? ` (${versions.backend.detail})` : ""}${
      versions.backend.adapter ? `, adapter ${versions.backend.adapter}` : ""
    }${versions.backend.fallbackAdapter ? " (software fallback)" : ""}`,
    `- git ${g.commit ?? `unknown (${g.note ?? "no repository"})`}${
      g.dirty ? " with uncommitted changes" : ""
    }`,
    "",
  ];
  return lines.join("\n");
};

/**
 * Writes plots/ (SVG, and PNG unless `png` is false) and report.md into `out`; returns the report's path.
 */
export const writeReport = async (
  exp: Experiment,
  results: ExperimentResults,
  versions: Versions,
  configs: readonly PretrainConfig[],
  out: string,
  o: {
    readonly png: boolean;
    readonly overrides?: Readonly<Record<string, unknown>>;
    /** Where warnings go (a PNG that could not be made). */
    readonly log?: (line: string) => void;
  },
): Promise<string> => {
  await Deno.mkdir(`${out}/plots`, { recursive: true });
  const figures = await plots(exp, results, out);
  let png = o.png;
  for (const [stem, svg] of figures) {
    await writeTextAtomic(`${out}/plots/${stem}.svg`, svg);
    if (!png) continue;
    try {
      await Deno.writeFile(`${out}/plots/${stem}.png`, await svgToPng(svg));
    } catch (e) {
      // The SVGs are the plots; a missing rasteriser (a bundle without the wasm) costs only the copies.
      png = false;
      o.log?.(
        `warning: no PNG plots (${message(e)}); the SVGs are in ${out}/plots`,
      );
    }
  }
  const path = `${out}/report.md`;
  await writeTextAtomic(
    path,
    renderReport(exp, results, versions, configs, figures.map(([s]) => s), o.overrides ?? {}, out, png),
  );
  return path;
};
