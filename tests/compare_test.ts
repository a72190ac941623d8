/**
 * `deno task compare` (lib/experiment/compare.ts): the table and the chart of several runs, the refusal of an
 * existing output without --force (checked before anything is read), and the command line's errors. The
 * runs are written here (metrics.jsonl and config.json as a pretraining run writes them), so the test needs
 * no training.
 */
import { E } from "../lib/deps.ts";
import { assert, assertEquals, assertStringIncludes } from "../lib/core/std.ts";
import { encodeMetrics } from "../lib/train/metrics.ts";
import { compareRuns, compareTable, parseCompareArgs, readRuns } from "../lib/experiment/compare.ts";
import { left, right, withTmp } from "./helpers.ts";

/** A run directory: `steps` metrics lines with losses falling from `from`, and a config.json. */
const writeRun = async (dir: string, steps: number, from: number, config: Record<string, unknown>) => {
  await Deno.mkdir(dir, { recursive: true });
  const lines = Array.from({ length: steps }, (_, i) => {
    const loss = from / (i + 1);
    return encodeMetrics({
      step: i + 1,
      loss,
      lossVisible: loss * 0.8,
      lossMasked: loss * 1.2,
      lr: 1e-3,
      gradNorm: 1,
    });
  });
  await Deno.writeTextFile(`${dir}/metrics.jsonl`, lines.map((l) => `${l}\n`).join(""));
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2));
};

const task = (args: string[]) =>
  new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../tasks/compare.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output().then((o) => ({
    code: o.code,
    out: new TextDecoder().decode(o.stdout),
    err: new TextDecoder().decode(o.stderr),
  }));

Deno.test("compare: the command line (help, runs, --out, --metric aliases, unknown flags)", () => {
  const help = right(parseCompareArgs(["--help"]));
  assert(help.kind === "help" && help.text.includes("Usage: deno task compare RUN_DIR..."));
  const run = right(parseCompareArgs(["a", "b/", "--metric", "loss_visible", "--out", "x.PNG", "--force"]));
  assert(run.kind === "run");
  assertEquals(run.options, { runs: ["a", "b/"], out: "x.PNG", metric: "lossVisible", force: true });
  assertStringIncludes(left(parseCompareArgs([])), "no run directory given");
  assertStringIncludes(
    left(parseCompareArgs(["a", "--out", "x.pdf"])),
    "--out x.pdf: a file ending in .svg or .png",
  );
  assertStringIncludes(left(parseCompareArgs(["a", "--metrc", "loss"])), "unknown flag(s) --metrc");
});

Deno.test("compare: the table names each run's steps, first -> last losses, model, global batch and peak lr", async () => {
  await withTmp("caev2-compare-", async (dir) => {
    await writeRun(`${dir}/a/run`, 10, 1, { model: "micro", batchSize: 8, accumulate: 2 });
    await writeRun(`${dir}/b/run`, 4, 0.5, { model: "tiny", batchSize: 16, lr: 0.002 });
    await Deno.writeTextFile(`${dir}/b/run/distributed.json`, '{"worldSize":4}\n');
    await writeRun(`${dir}/old`, 2, 1, { model: "micro", someOldKey: 1 });
    const runs = right(await readRuns([`${dir}/a/run`, `${dir}/b/run`, `${dir}/old`]));
    const table = compareTable(runs).split("\n");
    assertEquals(table.length, 5);
    assertEquals(table[0].split("|").map((c) => c.trim()).filter((c) => c !== ""), [
      "run",
      "steps",
      "loss",
      "visible",
      "masked",
      "model",
      "batch",
      "peak lr",
    ]);
    const cells = (row: string) => row.split("|").map((c) => c.trim()).slice(1, -1);
    // Two runs named "run": their paths tell them apart. micro's default peak lr is 0.001; b's global batch
    // is 16 x 4 ranks and its lr the one it set.
    assertEquals(cells(table[2]), [
      `${dir}/a/run`,
      "10",
      "1.0000 -> 0.1000",
      "0.8000 -> 0.0800",
      "1.2000 -> 0.1200",
      "micro",
      "16",
      "0.001",
    ]);
    assertEquals(cells(table[3]).slice(0, 3), [`${dir}/b/run`, "4", "0.5000 -> 0.1250"]);
    assertEquals(cells(table[3]).slice(5), ["tiny", "64", "0.002"]);
    // A config.json this version cannot read leaves the settings unknown, not the run out.
    assertEquals(cells(table[4]).slice(0, 2), ["old", "2"]);
    assertEquals(cells(table[4]).slice(5), ["?", "?", "?"]);
  });
});

Deno.test("deno task compare: writes the SVG and prints the table; an existing --out is refused before any work", async () => {
  await withTmp("caev2-compare-", async (dir) => {
    await writeRun(`${dir}/official`, 30, 1, { model: "micro", batchSize: 8 });
    await writeRun(`${dir}/masked-only`, 30, 2, { model: "micro", batchSize: 8, visibleWeight: 0 });
    const runs = [`${dir}/official`, `${dir}/masked-only`];
    const r = await task([...runs, "--metric", "loss_masked", "--out", `${dir}/cmp.svg`]);
    assertEquals(r.code, 0, r.err);
    assertStringIncludes(r.out, "| official    |    30 | 1.0000 -> 0.0333 |");
    assertStringIncludes(r.out, "| masked-only |    30 | 2.0000 -> 0.0667 |");
    assertStringIncludes(r.out, `compare: wrote ${dir}/cmp.svg`);
    const svg = await Deno.readTextFile(`${dir}/cmp.svg`);
    assert(svg.startsWith("<svg"), svg.slice(0, 40));
    for (const s of ["official", "masked-only", "lossMasked of 2 runs", "masked latent alignment"]) {
      assertStringIncludes(svg, s);
    }

    // Again without --force: refused, the file kept; checked before the runs are read (a missing run is
    // not even looked at).
    const again = await task([...runs, `${dir}/no-such-run`, "--out", `${dir}/cmp.svg`]);
    assertEquals(again.code, 1);
    assertStringIncludes(again.err, `--out ${dir}/cmp.svg: the file exists; pass --force to overwrite it`);
    assert(!again.err.includes("no-such-run"), again.err);
    assertEquals(await Deno.readTextFile(`${dir}/cmp.svg`), svg);
    const forced = await task([...runs, "--out", `${dir}/cmp.svg`, "--force"]);
    assertEquals(forced.code, 0, forced.err);
    assert((await Deno.readTextFile(`${dir}/cmp.svg`)) !== svg, "--metric loss draws another chart");

    // Without --out: the table alone. A missing run and an unknown metric are named.
    const plain = await task(runs);
    assertEquals(plain.code, 0, plain.err);
    assert(!plain.out.includes("wrote"));
    const missing = await task([...runs, `${dir}/no-such-run`]);
    assertEquals(missing.code, 1);
    assertStringIncludes(missing.err, `${dir}/no-such-run: no metrics.jsonl there`);
    const bad = await task([...runs, "--metric", "accuracy"]);
    assertStringIncludes(
      bad.err,
      "--metric accuracy: not in the runs' metrics.jsonl; they hold loss, lossVisible",
    );
  });
});

Deno.test("compare: a PNG chart", async () => {
  await withTmp("caev2-compare-", async (dir) => {
    await writeRun(`${dir}/a`, 5, 1, { model: "micro" });
    const r = await compareRuns({ runs: [`${dir}/a`], out: `${dir}/a.png`, metric: "loss", force: false });
    assert(E.isRight(r), E.isLeft(r) ? r.left : "");
    const png = await Deno.readFile(`${dir}/a.png`);
    assertEquals([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]);
    // --out is never a file of a run, even with --force.
    const input = await compareRuns({
      runs: [`${dir}/a`],
      out: `${dir}/a/config.json`,
      metric: "loss",
      force: true,
    });
    assert(E.isLeft(input));
    assertStringIncludes(input.left, "writing it would destroy the input");
  });
});
