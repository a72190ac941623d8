/**
 * Scripted experiments: the shipped experiments resolve to valid configs at every size; the command line
 * decodes and refuses typos; the charts are valid SVG whose PNG shows the bars where the numbers say; and a
 * small experiment run twice writes byte-identical metrics, evaluations and results (and a rerun into the
 * same folder reuses, or resumes, its runs to the same bytes).
 */
import { TEST_BACKEND } from "./helpers.ts";
import { E } from "../lib/deps.ts";
import { pngDecodeWasm, pngInitWasm } from "../lib/deps.ts";
import {
  assert,
  assertEquals,
  assertGreater,
  assertMatch,
  assertNotEquals,
  assertStringIncludes,
} from "../lib/core/std.ts";
import { resolveExperimentArgs } from "../lib/experiment/cli.ts";
import {
  alignmentAblation,
  experiments,
  experimentSizes,
  maskRatio,
  planRuns,
} from "../lib/experiment/registry.ts";
import { runExperiment } from "../lib/experiment/runner.ts";
import { planExperiment } from "../lib/experiment/plan.ts";
import { finalLosses } from "../lib/experiment/results.ts";
import { barChart, formatTick, lineChart, niceTicks, PALETTE } from "../lib/plot/svg.ts";
import { svgToPng } from "../lib/plot/png.ts";
import { gitInfo } from "../lib/experiment/versions.ts";

Deno.test("nice ticks: round steps of 1, 2 or 5 x 10^k that cover the range", () => {
  assertEquals(niceTicks(0, 100, 6).values, [0, 20, 40, 60, 80, 100]);
  assertEquals(niceTicks(0.2285, 0.9605, 6).values, [0.2, 0.4, 0.6, 0.8, 1]);
  assertEquals(niceTicks(1, 150, 7).values, [0, 50, 100, 150]);
  assertEquals(niceTicks(-3, 7, 5).values, [-4, -2, 0, 2, 4, 6, 8]);
  const flat = niceTicks(5, 5);
  assert(flat.lo < 5 && flat.hi > 5, "a single value gets a range around it");
  assertEquals(formatTick(0.1 + 0.2, 0.1), "0.3");
  assertEquals(formatTick(1e-4, 5e-5), "1e-4");
  assertEquals(formatTick(2.5e-4, 5e-5), "2.5e-4");
});

Deno.test("charts: valid SVG that resvg renders; bars and curves land where the numbers say", async () => {
  await pngInitWasm();
  const bar = barChart({
    title: "t",
    xLabel: "x",
    yLabel: "y",
    groups: ["a & b", "c"],
    series: [{ name: "s<1>", values: [{ value: 100 }, { value: 50, low: 40, high: 60 }] }],
    references: [{ name: "chance", value: 10 }],
    yMax: 100,
    width: 400,
    height: 300,
  });
  assertStringIncludes(bar, "a &amp; b");
  assertStringIncludes(bar, "s&lt;1&gt;");
  assertStringIncludes(bar, ">100.0<");
  const png = pngDecodeWasm(await svgToPng(bar, { scale: 1 }));
  assertEquals([png.width, png.height], [400, 300]);
  const px = (x: number, y: number) =>
    "#" + [0, 1, 2].map((c) => png.data[(y * png.width + x) * 4 + c].toString(16).padStart(2, "0")).join("")
      .toUpperCase();
  // Plot area: x from 64 to 400 - legend, y from 40 (value 100) to 300 - 48 = 252 (value 0). The first bar
  // (value 100) fills its slot's centre from top to bottom; the second (50) only the lower half.
  const right = 400 - (Math.min(250, "chance".length * 7.2) + 52);
  const slot = (right - 64) / 2;
  const c0 = Math.round(64 + slot * 0.5), c1 = Math.round(64 + slot * 1.5);
  assertEquals(px(c0, 60), PALETTE[0]);
  assertEquals(px(c0 + 3, 240), PALETTE[0]);
  assertEquals(px(c1 + 6, 60), "#FFFFFF", "above the 50% bar is background");
  assertEquals(px(c1 + 6, 240), PALETTE[0]);

  const line = lineChart({
    title: "loss",
    xLabel: "step",
    yLabel: "loss",
    series: [{ name: "a", points: [[0, 1], [1, NaN], [2, 0.5], [3, 0]] }, {
      name: "b",
      points: [],
      dashed: true,
    }],
    width: 400,
    height: 300,
  });
  // The NaN breaks the line into two pieces: two "M" commands in the series' path.
  const paths = [...line.matchAll(/<path d="([^"]*)" fill="none" stroke="#0072B2"/g)].map((m) => m[1]);
  assertEquals(paths.length, 1);
  assertEquals(paths[0].split("M").length - 1, 2);
  const img = pngDecodeWasm(await svgToPng(line, { scale: 2 }));
  assertEquals([img.width, img.height], [800, 600]);
});

Deno.test("registry: every experiment resolves to valid, distinct run configs at every size", async () => {
  for (const exp of Object.values(experiments)) {
    for (const size of experimentSizes) {
      const plan = await planExperiment(exp, { size, seeds: [0, 1], out: "runs/x" });
      assert(E.isRight(plan), `${exp.name} at ${size}: ${E.isLeft(plan) ? plan.left : ""}`);
      const ids = plan.right.map((r) => r.id);
      assertEquals(new Set(ids).size, ids.length, `${exp.name}/${size}: run ids are unique`);
      const hashes = plan.right.map((r) => r.configHash);
      assertEquals(
        new Set(hashes).size,
        hashes.length,
        `${exp.name}/${size}: every run computes something else`,
      );
      for (const r of plan.right) assertEquals(r.config.out, `runs/x/runs/${r.id}`);
    }
  }
  const ablation = await planExperiment(alignmentAblation, { size: "small", seeds: [0], out: "o" });
  assert(E.isRight(ablation));
  assertEquals(
    ablation.right.map((r) => [r.id, r.config.visibleWeight, r.config.maskedWeight]),
    [["visible-only-s0", 1, 0], ["masked-only-s0", 0, 1], ["both-s0", 1, 1]],
  );
  const masks = await planExperiment(maskRatio, { size: "small", seeds: [0], out: "o" });
  assert(E.isRight(masks));
  // 32 px / patch 8 = 16 patches: 25%, 50%, 75% -> 4, 8, 12 masked, for each model.
  assertEquals(masks.right.map((r): [string, number | undefined] => [r.config.model, r.config.numMasked]), [
    ["micro", 4],
    ["micro", 8],
    ["micro", 12],
    ["tiny", 4],
    ["tiny", 8],
    ["tiny", 12],
  ]);
  assertEquals(planRuns(alignmentAblation.settings("test"), [3, 4]).map((r) => r.id).slice(0, 2), [
    "visible-only-s3",
    "visible-only-s4",
  ]);
  // A flag that breaks a config is reported with the run it breaks.
  const bad = await planExperiment(maskRatio, {
    size: "small",
    seeds: [0],
    out: "o",
    overrides: { patchSize: 7 },
  });
  assert(E.isLeft(bad));
  assertStringIncludes(bad.left, "mask-ratio run micro-r0.25-s0");
  assertStringIncludes(bad.left, "patchSize 7 does not divide imageSize 32");
});

Deno.test("command line: defaults, seeds, pretraining flags for every run, typos refused", () => {
  const now = new Date(Date.UTC(2026, 0, 2, 3, 4, 5));
  const d = resolveExperimentArgs(["alignment-ablation"], now);
  assert(E.isRight(d) && d.right.kind === "run");
  assertEquals(d.right.options.size, "small");
  assertEquals(d.right.options.seeds, [0]);
  assertEquals(d.right.options.out, "runs/alignment-ablation-20260102-030405");
  const r = resolveExperimentArgs(
    ["mask-ratio", "--seed", "3", "--seeds", "2", "--backend", "cpu", "--no-png", "--data", "synthetic:500"],
    now,
  );
  assert(E.isRight(r) && r.right.kind === "run");
  assertEquals(r.right.options.seeds, [3, 4]);
  assertEquals(r.right.options.overrides, { backend: "cpu", data: "synthetic:500" });
  assertEquals(r.right.options.png, false);
  const list = resolveExperimentArgs(
    ["--seed-list", "5,1"].length ? ["mask-ratio", "--seed-list", "5,1"] : [],
  );
  assert(E.isRight(list) && list.right.kind === "run");
  assertEquals(list.right.options.seeds, [5, 1]);

  const typo = resolveExperimentArgs(["mask-ratio", "--stpes", "5"]);
  assert(E.isLeft(typo));
  assertStringIncludes(typo.left, "did you mean --steps?");
  const unknown = resolveExperimentArgs(["mask-ratios"]);
  assert(E.isLeft(unknown));
  assertStringIncludes(unknown.left, "known: alignment-ablation, mask-ratio");
  for (
    const bad of [["mask-ratio", "--size", "huge"], ["mask-ratio", "--seeds", "0"], ["mask-ratio", "--out"]]
  ) {
    assert(E.isLeft(resolveExperimentArgs(bad)), bad.join(" "));
  }
  assert(
    E.isLeft(resolveExperimentArgs(["mask-ratio", "--resume", "x"])),
    "--resume is the experiment's business",
  );
  const help = resolveExperimentArgs(["--help"]);
  assert(E.isRight(help) && help.right.kind === "help");
  const l = resolveExperimentArgs(["--list"]);
  assert(E.isRight(l) && l.right.kind === "list");
  assertStringIncludes(l.right.text, "alignment-ablation");
});

Deno.test("final losses: the mean over the last tenth of the steps", () => {
  const recs = Array.from(
    { length: 30 },
    (_, i) => ({ step: i + 1, loss: i, lossVisible: 2 * i, lossMasked: 1 }),
  );
  assertEquals(finalLosses(recs), { loss: 28, lossVisible: 56, lossMasked: 1, overSteps: 3 });
  assertEquals(finalLosses(recs.slice(0, 2)).overSteps, 1);
});

const read = (p: string) => Deno.readFileSync(p);
const quiet = { log: () => {} };

Deno.test("a small experiment run twice writes identical metrics, evaluations and results; reruns reuse and resume", async () => {
  const a = await Deno.makeTempDir({ prefix: "caev2-exp-a-" });
  const b = await Deno.makeTempDir({ prefix: "caev2-exp-b-" });
  try {
    // 3 runs (visible only, masked only, both) of 4 steps of 4 images at 32 px; checkpoints at 2 and 4.
    const opts = {
      size: "test" as const,
      seeds: [0],
      overrides: { steps: 4, checkpointEvery: 2, backend: TEST_BACKEND },
    };
    const ra = await runExperiment(alignmentAblation, { ...opts, out: a }, quiet);
    assert(E.isRight(ra), E.isLeft(ra) ? ra.left : "");
    const rb = await runExperiment(alignmentAblation, { ...opts, out: b }, quiet);
    assert(E.isRight(rb), E.isLeft(rb) ? rb.left : "");

    const files = [
      "experiment.json",
      "results.json",
      "results.csv",
      ...["visible-only-s0", "masked-only-s0", "both-s0"].flatMap((id) => [
        `runs/${id}/metrics.jsonl`,
        `runs/${id}/eval.json`,
      ]),
      "plots/loss.svg",
      "plots/probe.svg",
      "plots/knn.png",
    ];
    for (const f of files) {
      assertEquals(read(`${b}/${f}`), read(`${a}/${f}`), `${f} differs between the two runs`);
    }

    // What the files say.
    const results = ra.right.results;
    assertEquals(results.runs.map((r) => r.id), ["visible-only-s0", "masked-only-s0", "both-s0"]);
    for (const r of results.runs) {
      assertEquals(r.steps, 4);
      assert(r.eval.probe !== null && r.eval.knn !== null);
      assertEquals([r.eval.trainImages, r.eval.valImages, r.eval.numClasses], [40, 20, 10]);
      assertMatch(r.eval.encoder, new RegExp(`^runs/${r.id}/checkpoints/step-000004\\.safetensors`));
      assertMatch(r.configHash, /^[0-9a-f]{16}$/);
    }
    // The visible-only run optimises (1 + Nv) / (1 + L) of the visible term: its loss is that share of it.
    const vis = results.runs[0];
    const metrics = Deno.readTextFileSync(`${a}/runs/visible-only-s0/metrics.jsonl`).trim().split("\n")
      .map((l) => JSON.parse(l));
    assertEquals(metrics.length, 4);
    const m = metrics[3];
    assert(Math.abs(m.loss - (11 / 17) * m.lossVisible) < 1e-5, JSON.stringify(m));
    assertEquals(vis.final.loss, m.loss);
    assertEquals(results.baselines.map((x) => x.model), ["micro"]);

    const runJson = JSON.parse(Deno.readTextFileSync(`${a}/runs/both-s0/run.json`));
    assertEquals(runJson.configHash, results.runs[2].configHash);
    assertEquals(runJson.versions.deno, Deno.version.deno);
    assertEquals(runJson.versions.tfjs["tfjs-core"], "4.22.0");
    assert(["webgpu", "wasm", "cpu"].includes(runJson.versions.backend.name));
    const git = await gitInfo(new URL("../", import.meta.url).pathname);
    assertEquals(runJson.versions.git.commit, git.commit);

    const report = Deno.readTextFileSync(`${a}/report.md`);
    assertStringIncludes(report, "| objective | seeds | final loss |");
    assertStringIncludes(report, "| visible only | 1 |");
    assertStringIncludes(report, "random init, micro (no pretraining)");
    for (const p of ["loss", "loss-visible", "loss-masked", "probe", "knn"]) {
      assertStringIncludes(report, `![${p}](plots/${p}.png)`);
      const png = read(`${a}/plots/${p}.png`);
      assertEquals([...png.subarray(1, 4)], [0x50, 0x4e, 0x47], `${p}.png is a PNG`);
      assertStringIncludes(Deno.readTextFileSync(`${a}/plots/${p}.svg`), "<svg");
    }
    assertStringIncludes(report, `deno task experiment alignment-ablation --size test`);

    // Rerun into the same folder: every run is reused, results unchanged.
    const again = await runExperiment(alignmentAblation, { ...opts, out: a }, quiet);
    assert(E.isRight(again), E.isLeft(again) ? again.left : "");
    assertEquals(again.right.reused.length, 3);
    assertEquals(read(`${a}/results.json`), read(`${b}/results.json`));

    // An interrupted run (its last checkpoint and evaluation gone) resumes from step 2 to the same bytes.
    for (
      const f of [
        "eval.json",
        "run.json",
        "checkpoints/step-000004.safetensors",
        "checkpoints/step-000004.json",
      ]
    ) {
      Deno.removeSync(`${b}/runs/masked-only-s0/${f}`);
    }
    const resumed = await runExperiment(alignmentAblation, { ...opts, out: b }, quiet);
    assert(E.isRight(resumed), E.isLeft(resumed) ? resumed.left : "");
    assertEquals(resumed.right.reused, ["visible-only-s0", "both-s0"]);
    for (const f of files.filter((f) => !f.endsWith(".png"))) {
      assertEquals(read(`${b}/${f}`), read(`${a}/${f}`), `${f} differs after the resume`);
    }

    // Another plan in the same folder is refused (nothing is overwritten).
    const other = await runExperiment(alignmentAblation, { ...opts, seeds: [1], out: a }, quiet);
    assert(E.isLeft(other));
    assertStringIncludes(other.left, "holds another plan");
    assertNotEquals(ra.right.results.planHash, "");
    assertGreater(Object.keys(ra.right.seconds).length, 3);
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});
