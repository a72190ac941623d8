/**
 * TensorBoard event files (lib/core/tensorboard.ts), read back by a reader written independently of the
 * writer (tests/tb_reader.ts): its own CRC32C (bitwise, no table), its own protobuf decoding, its own
 * TFRecord framing. The reader is first shown to read real files written by TensorFlow and by tensorboardX
 * (tests/fixtures/tensorboard/README.md), then checks every record the writer makes (both checksums) and what a pretraining run and a resumed run
 * write, including TensorBoard's purge of the points an interrupted run logged after its checkpoint.
 */
import { E, encodePng } from "../lib/deps.ts";
import { assert, assertEquals, assertStringIncludes } from "../lib/core/std.ts";
import { crc32c, maskedCrc32c, openEventWriter, tolerantEventWriter } from "../lib/core/tensorboard.ts";
import { resolvePretrainConfig } from "../lib/config/pretrain.ts";
import { formatSummary, pretrain } from "../lib/train/pretrain.ts";
import { readMetrics } from "../lib/train/metrics.ts";
import { TEST_BACKEND, withTmp } from "./helpers.ts";
import { crcBitwise, eventFiles, mask, readEventFile, tensorboardView } from "./tb_reader.ts";

// ---- tests ----

const TBX = new URL("./fixtures/tensorboard/tensorboardx/", import.meta.url).pathname.replace(/\/$/, "");

Deno.test("the test's reader reads tensorboardX's scalars, text and purge_step START", async () => {
  const [first, second] = await eventFiles(TBX);
  const a = await readEventFile(first), b = await readEventFile(second);
  assertEquals(a[0].fileVersion, "brain.Event:2");
  assertEquals(a.slice(1, 6).map((e) => [e.step, e.values?.[0].tag, e.values?.[0].simple]), [
    [1, "train/loss", 1],
    [2, "train/loss", 0.5],
    [3, "train/loss", Math.fround(1 / 3)],
    [4, "train/loss", 0.25],
    [5, "train/loss", Math.fround(0.2)],
  ]);
  const t = a[6].values![0];
  assertEquals([a[6].step, t.tag, t.plugin, t.tensor?.dtype, t.tensor?.strings], [
    0,
    "config/text_summary",
    "text",
    7,
    ["| a | b |"],
  ]);
  // purge_step 4: a second file_version event at step 4, then session_log START (field 7) at step 4.
  assertEquals([b[0].fileVersion, b[1].fileVersion, b[1].step], ["brain.Event:2", "brain.Event:2", 4]);
  assertEquals([b[2].sessionStatus, b[2].step], [1, 4]);
  assertEquals(b.slice(3).map((e) => [e.step, e.values?.[0].simple]), [
    [4, Math.fround(0.5 / 4)],
    [5, Math.fround(0.1)],
    [6, Math.fround(0.5 / 6)],
  ]);
});

Deno.test("CRC32C: the check value, and the writer's table-driven one agrees with the bitwise one", () => {
  assertEquals(crcBitwise(new TextEncoder().encode("123456789")), 0xe3069283);
  let seed = 7;
  for (let n = 0; n < 300; n += 7) {
    const b = Uint8Array.from({ length: n }, () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
    assertEquals(crc32c(b), crcBitwise(b));
    assertEquals(maskedCrc32c(b), mask(crcBitwise(b)));
  }
});

Deno.test("the writer's events decode: file version, scalars, text for the Text tab, session START", async () => {
  await withTmp("caev2-tb-", async (dir) => {
    let t = 1700000000.25;
    const w = await openEventWriter(`${dir}/tb`, { wallTime: () => (t += 1), hostname: "box" });
    w.scalars(1, { "train/loss": 0.75, "train/lr": 1e-3, nan: NaN });
    w.text(0, "config", "| a | b |\n| --- | --- |\n| x | `1` |");
    w.sessionStart(7);
    w.scalars(2 ** 40, { big: -2.5 });
    w.close();
    w.close();
    assertEquals(w.path, `${dir}/tb/events.out.tfevents.1700000001.box`);
    const ev = await readEventFile(w.path);
    assertEquals(ev.length, 5);
    assertEquals([ev[0].fileVersion, ev[0].step, ev[0].wallTime], ["brain.Event:2", 0, 1700000002.25]);
    assertEquals(ev[1].step, 1);
    assertEquals(ev[1].values?.map((v) => v.tag), ["train/loss", "train/lr", "nan"]);
    assertEquals(ev[1].values?.[0].simple, 0.75);
    assertEquals(ev[1].values?.[1].simple, Math.fround(1e-3));
    assert(Number.isNaN(ev[1].values?.[2].simple));
    const txt = ev[2].values![0];
    assertEquals([txt.tag, txt.plugin, txt.tensor?.dtype, txt.tensor?.dims], ["config", "text", 7, 0]);
    assertEquals(txt.tensor?.strings, ["| a | b |\n| --- | --- |\n| x | `1` |"]);
    assertEquals([ev[3].step, ev[3].sessionStatus, ev[3].values], [7, 1, undefined]);
    assertEquals([ev[4].step, ev[4].values?.[0].simple], [2 ** 40, -2.5]);
    // A second file opened in the same second gets a name that sorts after the first.
    t = 1700000000.25;
    const w2 = await openEventWriter(`${dir}/tb`, { wallTime: () => (t += 1), hostname: "box" });
    w2.close();
    assertEquals(w2.path, `${w.path}.1`);
    assertEquals(await eventFiles(`${dir}/tb`), [w.path, w2.path]);
  });
});

Deno.test("a folder that cannot be written is warned about once, and writing goes on as nothing", async () => {
  await withTmp("caev2-tb-", async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "not a folder");
    const warnings: string[] = [];
    const w = await tolerantEventWriter(`${dir}/file/tb`, (m) => warnings.push(m));
    w.scalars(1, { x: 1 });
    w.text(0, "t", "x");
    w.sessionStart(2);
    w.close();
    assertEquals(warnings.length, 1);
    assertStringIncludes(warnings[0], "TensorBoard events are not written");
  });
});

const IMG = 32, PATCH = 8, B = 4;
const small = [
  "--image-size",
  `${IMG}`,
  "--patch-size",
  `${PATCH}`,
  "--batch-size",
  `${B}`,
  "--backend",
  TEST_BACKEND,
  "--model",
  "micro",
];

/** 8 small PNGs and one file that is not an image, in `dir/a/` (9 training files, none held out). */
const writeFolder = async (dir: string) => {
  await Deno.mkdir(`${dir}/a`, { recursive: true });
  for (let i = 0; i < 8; i++) {
    const d = new Uint8ClampedArray(16 * 12 * 4);
    for (let p = 0; p < 16 * 12; p++) d.set([(p * 7 + i * 40) % 256, (p * 13) % 256, i * 20, 255], p * 4);
    await Deno.writeFile(`${dir}/a/${i}.png`, new Uint8Array(await encodePng(new ImageData(d, 16, 12))));
  }
  await Deno.writeFile(`${dir}/a/broken.png`, new TextEncoder().encode("not a PNG"));
};

const run = async (args: string[], hooks = {}) => {
  const cfg = resolvePretrainConfig(args);
  if (E.isLeft(cfg)) throw new Error(cfg.left);
  const lines: string[] = [];
  const r = await pretrain(cfg.right, { log: (l) => lines.push(l), tty: false }, hooks);
  if (E.isLeft(r)) throw new Error(r.left);
  return { summary: r.right, lines };
};

Deno.test("pretraining writes its scalars, evaluations and config to TensorBoard; a file skipped in 3 epochs counts once", async () => {
  await withTmp("caev2-tb-run-", async (dir) => {
    await writeFolder(`${dir}/data`);
    const probe = {
      name: "probe",
      every: 3,
      run: ({ step }: { step: number }) => Promise.resolve({ top1: step * 10 }),
    };
    // 6 steps of 4 images from 8 usable files: 3 epochs, each meeting broken.png.
    const { summary } = await run([
      ...small,
      "--steps",
      "6",
      "--data",
      `folder:${dir}/data`,
      "--out",
      `${dir}/run`,
    ], {
      evaluators: [probe],
    });
    assertEquals(summary.steps, 6);
    assertEquals(summary.skipped, 1, "broken.png is one skipped file, however many epochs met it");
    assertStringIncludes(formatSummary(summary), "; 1 skipped file(s);");
    const ck = JSON.parse(await Deno.readTextFile(`${dir}/run/checkpoints/step-000006.json`));
    assert(JSON.stringify(ck).includes('"epoch":2'), "the data stream reached its third epoch");

    const files = await eventFiles(`${dir}/run/tensorboard`);
    assertEquals(files.length, 1);
    assert(/\/events\.out\.tfevents\.\d{10}\.[^/]+$/.test(files[0]), files[0]);
    const events = await readEventFile(files[0]);
    assertEquals(events[0].fileVersion, "brain.Event:2");
    assertEquals(
      [events[1].sessionStatus, events[1].step],
      [1, 0],
      "a fresh run starts its session at step 0",
    );
    const config = events[2].values![0];
    assertEquals([events[2].step, config.tag, config.plugin], [0, "config", "text"]);
    assertStringIncludes(config.tensor!.strings[0], "| batchSize | `4` |");
    const view = await tensorboardView(`${dir}/run/tensorboard`);
    const metrics = (await readMetrics(`${dir}/run/metrics.jsonl`)).records;
    for (
      const [tag, key] of [
        ["train/loss", "loss"],
        ["train/loss_visible", "lossVisible"],
        ["train/loss_masked", "lossMasked"],
        ["train/lr", "lr"],
        ["train/grad_norm", "gradNorm"],
      ]
    ) {
      assertEquals(view.get(tag), metrics.map((m) => [m.step as number, Math.fround(m[key] as number)]), tag);
    }
    assertEquals(view.get("perf/images_per_second")?.length, 6);
    assertEquals(view.get("probe/top1"), [[3, 30], [6, 60]]);
  });
});

Deno.test("a resumed run starts a new event file with session START, and TensorBoard then shows metrics.jsonl", async () => {
  await withTmp("caev2-tb-resume-", async (dir) => {
    const out = `${dir}/run`;
    await run([...small, "--steps", "6", "--checkpoint-every", "3", "--keep-checkpoints", "5", "--out", out]);
    // As if killed after step 6 was logged but before its checkpoint was saved: resume from step 3.
    await Deno.remove(`${out}/checkpoints/step-000006.safetensors`);
    await Deno.remove(`${out}/checkpoints/step-000006.json`);
    const before = await tensorboardView(`${out}/tensorboard`);
    const { lines } = await run(["--resume", out, "--backend", TEST_BACKEND]);
    assert(lines.some((l) => l.startsWith(`resuming ${out} from step 3`)), lines.join("\n"));

    const files = await eventFiles(`${out}/tensorboard`);
    assertEquals(files.length, 2);
    const resumed = await readEventFile(files[1]);
    assertEquals(resumed[0].fileVersion, "brain.Event:2");
    assertEquals([resumed[1].sessionStatus, resumed[1].step], [1, 4], "START at the first step logged again");
    assertEquals(resumed.slice(2).map((e) => e.step), [4, 5, 6]);
    // Without the purge steps 4..6 would show twice; with it, TensorBoard shows exactly metrics.jsonl.
    const view = await tensorboardView(`${out}/tensorboard`);
    const metrics = (await readMetrics(`${out}/metrics.jsonl`)).records;
    assertEquals(
      view.get("train/loss"),
      metrics.map((m) => [m.step as number, Math.fround(m.loss as number)]),
    );
    assertEquals(
      view.get("train/loss"),
      before.get("train/loss"),
      "the resumed run logs what the first one did",
    );
    assertEquals(view.get("perf/images_per_second")?.map(([s]) => s), [1, 2, 3, 4, 5, 6]);
  });
});
