/**
 * `--log-dir DIR` of the evaluation tasks (lib/eval/tb_log.ts): tiny runs of `deno task probe` (linear head
 * with the default recipe's lr search, attentive head with `logDir` from `--config FILE`), `finetune` and
 * `segment` whose event files are read back with the independent reader (tests/tb_reader.ts): the tags,
 * the steps, and values equal to what the task printed and wrote to `--out` / `--metrics`. Then the folder
 * checked before any work (a file, a folder below a file, the pretraining run's own TensorBoard folder, a
 * folder inside the data, an output's path), and a folder that cannot be created, which is warned about
 * while the task goes on.
 */
import { assert, assertAlmostEquals, assertEquals, assertStringIncludes } from "../lib/core/std.ts";
import { accuracyScalars, checkLogDir, openTaskEvents, settingsMarkdown } from "../lib/eval/tb_log.ts";
import { runTaskFile, TEST_BACKEND, withTmp } from "./helpers.ts";
import { type Event, eventFiles, readEventFile, tensorboardView } from "./tb_reader.ts";

const task = runTaskFile;

const random = [
  "--checkpoint",
  "random",
  "--image-size",
  "16",
  "--patch-size",
  "8",
  "--backend",
  TEST_BACKEND,
];
const probeArgs = [
  ...random,
  ...[
    "--data",
    "synthetic:200",
    "--max-train",
    "100",
    "--max-val",
    "50",
    "--epochs",
    "2",
    "--min-steps",
    "10",
  ],
];
const f32 = Math.fround;

/** The one event file of `dir`, the one the task named (`tensorboard: PATH`), and its events. */
const theFile = async (dir: string, stdout: string): Promise<Event[]> => {
  const files = await eventFiles(dir);
  assertEquals(files.length, 1, files.join(", "));
  assertStringIncludes(stdout, `tensorboard: ${files[0]}\n`);
  return readEventFile(files[0]);
};

/** A fresh file's head: file version, session START at 0, the settings as a text at step 0. */
const checkHead = (events: readonly Event[], taskName: string): string => {
  assertEquals(events[0].fileVersion, "brain.Event:2");
  assertEquals([events[1].sessionStatus, events[1].step], [1, 0]);
  const config = events[2].values![0];
  assertEquals([events[2].step, config.tag, config.plugin, config.tensor?.dtype], [0, "config", "text", 7]);
  const md = config.tensor!.strings[0];
  assertStringIncludes(md, "| setting | value |\n| --- | --- |\n");
  assertStringIncludes(md, `| task | \`"${taskName}"\` |`);
  return md;
};

/** The steps of a series. */
const steps = (s: readonly [number, number][] | undefined) => (s ?? []).map(([step]) => step);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

Deno.test("probe --log-dir: per-epoch loss, lr, top-1/top-5 and the lr search, as printed and in --out", () =>
  withTmp("caev2-evtb-probe-", async (dir) => {
    // An existing folder that already holds a file is a fine log folder.
    await Deno.mkdir(`${dir}/tb`);
    await Deno.writeTextFile(`${dir}/tb/notes.txt`, "other runs' files live here too");
    const r = await task("probe", [...probeArgs, "--out", `${dir}/p.json`, "--log-dir", `${dir}/tb`]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    const j = JSON.parse(await Deno.readTextFile(`${dir}/p.json`));
    assertEquals([j.head, j.recipe, j.numClasses], ["linear", "default", 10]);
    const events = await theFile(`${dir}/tb`, r.stdout);
    const md = checkHead(events, "probe");
    assertStringIncludes(md, "| minSteps | `10` |");
    const v = await tensorboardView(`${dir}/tb`);
    assertEquals(
      [...v.keys()].sort(),
      ["lr_search/loss", "lr_search/lr", "train/loss", "train/lr", "val/top1", "val/top5"],
    );
    for (const tag of ["train/loss", "train/lr", "val/top1", "val/top5"]) {
      assertEquals(steps(v.get(tag)), range(1, j.epochs), tag);
    }
    // The last epoch is the result; the best top-1 over the epochs is bestTop1.
    assertEquals(v.get("val/top1")!.at(-1)![1], f32(j.top1));
    assertEquals(v.get("val/top5")!.at(-1)![1], f32(j.top5));
    assertEquals(Math.max(...v.get("val/top1")!.map(([, x]) => x)), f32(j.bestTop1));
    // Each candidate of the lr search at its index, with its held-back loss.
    assertEquals(v.get("lr_search/lr"), j.lrSearch.lrs.map((lr: number, i: number) => [i, f32(lr)]));
    assertEquals(v.get("lr_search/loss"), j.lrSearch.losses.map((l: number, i: number) => [i, f32(l)]));
    const search = events.flatMap((e) => e.values ?? []).find((x) => x.tag === "lr_search");
    assertStringIncludes(search!.tensor!.strings[0], `lr ${j.lr}: the smallest within one standard error`);
    // The printed epochs say what the events hold.
    const printed = [
      ...r.stdout.matchAll(/^epoch (\d+)\/\d+ loss (\S+) lr (\S+) val top1=(\S+) top5=(\S+)$/gm),
    ];
    assert(printed.length >= 2, r.stdout);
    const at = (tag: string, step: number) => v.get(tag)!.find(([s]) => s === step)![1];
    for (const [, e, loss, lr, top1, top5] of printed) {
      const step = Number(e);
      assertEquals(at("train/loss", step).toFixed(4), loss, `epoch ${e}`);
      assertEquals(at("train/lr", step).toExponential(2), lr, `epoch ${e}`);
      assertEquals(at("val/top1", step).toFixed(2), top1, `epoch ${e}`);
      assertEquals(at("val/top5", step).toFixed(2), top5, `epoch ${e}`);
    }
  }));

Deno.test("probe --head attentive with logDir from --config FILE: the same per-epoch scalars, no lr search", () =>
  withTmp("caev2-evtb-att-", async (dir) => {
    await Deno.writeTextFile(`${dir}/c.json`, JSON.stringify({ logDir: `${dir}/tb/attentive` }));
    const r = await task("probe", [
      ...probeArgs,
      ...["--head", "attentive", "--config", `${dir}/c.json`, "--out", `${dir}/a.json`],
    ]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    const j = JSON.parse(await Deno.readTextFile(`${dir}/a.json`));
    const md = checkHead(await theFile(`${dir}/tb/attentive`, r.stdout), "probe");
    assertStringIncludes(md, '| head | `"attentive"` |');
    const v = await tensorboardView(`${dir}/tb/attentive`);
    assertEquals([...v.keys()].sort(), ["train/loss", "train/lr", "val/top1", "val/top5"]);
    for (const tag of v.keys()) assertEquals(steps(v.get(tag)), range(1, j.epochs), tag);
    assertEquals(v.get("val/top1")!.at(-1)![1], f32(j.top1));
    assertEquals(v.get("val/top5")!.at(-1)![1], f32(j.top5));
    assertEquals(Math.max(...v.get("val/top1")!.map(([, x]) => x)), f32(j.bestTop1));
    assertEquals(
      r.stdout.trim().split("\n").at(-1),
      `probe top1=${j.top1.toFixed(2)} top5=${j.top5.toFixed(2)}`,
    );
  }));

Deno.test("finetune --log-dir: loss and lr every step, top-1/top-5 at each evaluation, as in --metrics", () =>
  withTmp("caev2-evtb-ft-", async (dir) => {
    const r = await task("finetune", [
      ...random,
      ...["--data", "synthetic:40", "--batch-size", "8", "--steps", "6", "--eval-every", "3"],
      ...["--out", `${dir}/m.safetensors`, "--log-dir", `${dir}/tb`],
    ]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    const lines = (await Deno.readTextFile(`${dir}/m.metrics.jsonl`)).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    const results = JSON.parse(await Deno.readTextFile(`${dir}/m.results.json`));
    assertEquals(lines.map((l) => l.step), [3, 6]);
    const md = checkHead(await theFile(`${dir}/tb`, r.stdout), "finetune");
    assertStringIncludes(md, '| preset | `"micro"` |');
    assertStringIncludes(md, `| lr | \`${results.lr}\` |`, "the resolved lr, not the flag's absence");
    const v = await tensorboardView(`${dir}/tb`);
    assertEquals([...v.keys()].sort(), ["train/loss", "train/lr", "val/top1", "val/top5"]);
    assertEquals(steps(v.get("train/loss")), range(1, 6));
    assertEquals(steps(v.get("train/lr")), range(1, 6));
    assertEquals(v.get("val/top1"), lines.map((l) => [l.step, f32(l.top1)]));
    assertEquals(v.get("val/top5"), lines.map((l) => [l.step, f32(l.top5)]));
    // A metrics line's loss is the mean of the steps since the previous one; its lr the last step's.
    const loss = v.get("train/loss")!.map(([, x]) => x), lr = v.get("train/lr")!;
    for (const [i, l] of lines.entries()) {
      const mean = loss.slice(3 * i, 3 * i + 3).reduce((a, b) => a + b, 0) / 3;
      assertAlmostEquals(mean, l.loss, 1e-6 * Math.abs(l.loss));
      assertEquals(lr[3 * i + 2], [l.step, f32(l.lr)]);
    }
    assertEquals(v.get("val/top1")!.at(-1)![1], f32(results.top1));
    assertEquals(
      r.stdout.trim().split("\n").at(-1),
      `finetune top1=${results.top1.toFixed(2)} top5=${results.top5.toFixed(2)}`,
    );
  }));

Deno.test("segment --log-dir: loss and lr every step, then mIoU, mAcc and aAcc, as printed and in --out", () =>
  withTmp("caev2-evtb-seg-", async (dir) => {
    const r = await task("segment", [
      ...random,
      ...["--data", "synthetic-seg:8", "--epochs", "2", "--batch-size", "4"],
      ...["--out", `${dir}/seg.json`, "--log-dir", `${dir}/tb`],
    ]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    const j = JSON.parse(await Deno.readTextFile(`${dir}/seg.json`));
    assertEquals(j.steps, 4);
    const md = checkHead(await theFile(`${dir}/tb`, r.stdout), "segment");
    assertStringIncludes(md, "| numClasses | `3` |");
    const v = await tensorboardView(`${dir}/tb`);
    assertEquals(
      [...v.keys()].sort(),
      ["train/loss", "train/lr", "val/aAcc", "val/mAcc", "val/mIoU"],
    );
    assertEquals(steps(v.get("train/loss")), range(1, 4));
    assertEquals(steps(v.get("train/lr")), range(1, 4));
    assert(v.get("train/lr")!.every(([, x]) => x >= 0 && x <= 1e-2));
    // lastLoss is the mean of the last epoch's 2 steps.
    const last = v.get("train/loss")!.slice(2).map(([, x]) => x);
    assertAlmostEquals((last[0] + last[1]) / 2, j.lastLoss, 1e-6 * Math.abs(j.lastLoss));
    for (const k of ["mIoU", "mAcc", "aAcc"]) assertEquals(v.get(`val/${k}`), [[4, f32(j[k])]], k);
    assertEquals(
      r.stdout.trim().split("\n").at(-1),
      `segment mIoU=${j.mIoU.toFixed(2)} mAcc=${j.mAcc.toFixed(2)} aAcc=${j.aAcc.toFixed(2)}`,
    );
  }));

Deno.test("--log-dir is checked before any work: a file, a folder below a file, the run's own TensorBoard folder, data, an output", () =>
  withTmp("caev2-evtb-check-", async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "");
    const refused = async (name: string, args: string[], words: string) => {
      const r = await task(name, args);
      assertEquals(r.code, 1, `${name} ${args.join(" ")}\n${r.stdout}${r.stderr}`);
      assertStringIncludes(r.stderr, words);
      assert(!r.stdout.includes("backend:"), `refused before any work: ${r.stdout}`);
    };
    await refused("probe", [...probeArgs, "--log-dir", `${dir}/file`], `--log-dir ${dir}/file: is a file`);
    await refused(
      "finetune",
      [...random, "--data", "synthetic:40", "--log-dir", `${dir}/file/tb`],
      `--log-dir ${dir}/file/tb: ${dir}/file is a file`,
    );
    await refused(
      "segment",
      [...random, "--data", "synthetic-seg:8", "--log-dir", `${dir}/file`],
      "is a file",
    );
    // A pretraining run's own tensorboard/ folder (the check reads the run's files only by name).
    await Deno.mkdir(`${dir}/run/tensorboard`, { recursive: true });
    await Deno.writeTextFile(`${dir}/run/config.json`, "{}");
    await refused(
      "probe",
      ["--checkpoint", `${dir}/run`, "--log-dir", `${dir}/run/tensorboard/`],
      "is the TensorBoard folder of the pretraining run this task reads",
    );
    await Deno.mkdir(`${dir}/data/a`, { recursive: true });
    await refused(
      "probe",
      [...random, "--data", `folder:${dir}/data`, "--log-dir", `${dir}/data/tb`],
      `lies in ${dir}/data, a folder of data this task reads`,
    );
    await refused(
      "finetune",
      [...random, "--out", `${dir}/m.safetensors`, "--log-dir", `${dir}/m.safetensors`],
      "the same path as the output",
    );
    // The same rules in-process, and a subfolder of the run's tensorboard/ is a run of its own.
    assertEquals((await checkLogDir(`${dir}/run/tensorboard/eval`))._tag, "Right");
    assertEquals((await checkLogDir(`${dir}/new/deep/tb`))._tag, "Right");
  }));

Deno.test("--log-dir that cannot be created: warned about once, and the task goes on to its result", () =>
  withTmp("caev2-evtb-warn-", async (dir) => {
    // A name too long for the file system: the check cannot tell, the writer fails on its first mkdir.
    const logDir = `${dir}/${"x".repeat(300)}/tb`;
    const r = await task("probe", [...probeArgs, "--out", `${dir}/p.json`, "--log-dir", logDir]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    const warnings = r.stdout.split("\n").filter((l) => l.includes("TensorBoard events are not written"));
    assertEquals(warnings.length, 1, r.stdout);
    assert(warnings[0].startsWith("warning: ") && warnings[0].endsWith("; the task goes on"), warnings[0]);
    assert(!r.stdout.includes("tensorboard: "), r.stdout);
    const j = JSON.parse(await Deno.readTextFile(`${dir}/p.json`));
    assertEquals(
      r.stdout.trim().split("\n").at(-1),
      `probe top1=${j.top1.toFixed(2)} top5=${j.top5.toFixed(2)}`,
    );
  }));

Deno.test("tb_log: top-5 only with 6 classes or more; settings as a table; no --log-dir writes nothing", async () => {
  const acc = { top1: 40, top5: 90, count: 10 };
  assertEquals(accuracyScalars(acc, 6), { "val/top1": 40, "val/top5": 90 });
  assertEquals(accuracyScalars(acc, 5), { "val/top1": 40 });
  assertEquals(
    settingsMarkdown({ a: 1, b: undefined, c: "x|y" }, "note"),
    '| setting | value |\n| --- | --- |\n| a | `1` |\n| c | `"x\\|y"` |\n\nnote',
  );
  const lines: string[] = [];
  const none = await openTaskEvents(undefined, { settings: {}, log: (l) => lines.push(l) });
  none.step({ step: 1, loss: 1, lr: 1 });
  none.close();
  assertEquals([none.path, lines], [undefined, []]);
  await withTmp("caev2-evtb-unit-", async (dir) => {
    const ev = await openTaskEvents(`${dir}/tb`, { settings: { task: "x" }, log: (l) => lines.push(l) });
    ev.epoch({ epoch: 0, epochs: 1, loss: 0.5, lr: 0.1, accuracy: acc }, 3);
    ev.close();
    ev.scalars(2, { "after/close": 1 }); // nothing, and no throw
    const e = await readEventFile(ev.path!);
    assertEquals(e[3].values?.map((x) => [x.tag, x.simple]), [
      ["train/loss", 0.5],
      ["train/lr", f32(0.1)],
      ["val/top1", 40],
    ]);
    assertEquals(e.length, 4);
    assertEquals(lines, [`tensorboard: ${ev.path}`]);
  });
});
