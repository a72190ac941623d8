import { E, tf } from "../lib/deps.ts";
import { assert, assertEquals, assertStringIncludes } from "../lib/core/std.ts";
import {
  checkConfigHash,
  checkpointName,
  type CheckpointState,
  latestCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
  toTensors,
} from "../lib/train/checkpoint.ts";
import { readSafetensors, writeSafetensors } from "../lib/core/safetensors.ts";
import { openMetricsWriter, readMetrics, truncateMetricsAfter } from "../lib/train/metrics.ts";
import { createRunDir, resumeRunDir, runPaths } from "../lib/train/rundir.ts";
import { left, right, withTmp } from "./helpers.ts";

await tf.setBackend("cpu");

const stateAt = (step: number): CheckpointState => ({
  params: {
    "encoder.blocks.0.attn.qkv.weight": tf.tensor2d([[1, 2, 3], [4, 5, 6 + step]]),
    "encoder.cls_token": tf.tensor3d([[[0.5, -0.25]]]),
  },
  opt: {
    "mu.encoder.cls_token": tf.tensor3d([[[1e-3, 2e-3]]]),
    "count": tf.scalar(step, "int32"),
  },
  meta: {
    step,
    key: [0xdeadbeef, 7],
    configHash: "0123456789abcdef",
    dataPosition: { epoch: 1, index: 32 * step },
    optHost: { count: step, note: "host state" },
  },
});

const dispose = (s: CheckpointState) => tf.dispose([...Object.values(s.params), ...Object.values(s.opt)]);

Deno.test("a checkpoint round-trips params, optimizer state and meta", () =>
  withTmp("caev2-ckpt-", async (dir) => {
    const s = stateAt(123);
    const info = await saveCheckpoint(dir, 123, s);
    assertEquals(info.path, `${dir}/checkpoints/step-000123.safetensors`);
    assertEquals(info.indexPath, `${dir}/checkpoints/step-000123.json`);
    const loaded = right(await loadCheckpoint(info.path));
    assertEquals(loaded.step, 123);
    assertEquals(loaded.meta, s.meta);
    assertEquals(Object.keys(loaded.params).sort(), Object.keys(s.params).sort());
    assertEquals(Object.keys(loaded.opt).sort(), Object.keys(s.opt).sort());
    for (const [name, x] of Object.entries(s.params)) {
      assertEquals([...loaded.params[name].shape], x.shape);
      assertEquals([...loaded.params[name].data], [...(await x.data())]);
    }
    const restored = toTensors(loaded.opt);
    assertEquals(restored.count.dtype, "int32");
    assertEquals(await restored.count.data(), new Int32Array([123]));
    assertEquals(restored["mu.encoder.cls_token"].shape, [1, 1, 2]);
    // The .json path loads the same checkpoint.
    assertEquals(right(await loadCheckpoint(info.indexPath)).meta, s.meta);
    // The config-hash check that a resume performs.
    assert(E.isRight(checkConfigHash(loaded.meta, "0123456789abcdef", info.path)));
    assertStringIncludes(left(checkConfigHash(loaded.meta, "ffffffffffffffff", info.path)), "config hash");
    tf.dispose(Object.values(restored));
    dispose(s);
    // A file that lost a tensor its index lists: the error names the file and the tensor.
    const { metadata, tensors } = await readSafetensors(info.path);
    delete tensors["opt.count"];
    await writeSafetensors(info.path, tensors, metadata);
    const missing = left(await loadCheckpoint(info.path));
    assertStringIncludes(missing, `${info.path}: missing 1 tensors listed in ${info.indexPath}: opt.count`);
  }));

Deno.test("saving prunes older checkpoints beyond keep, only once the new one is complete", () =>
  withTmp("caev2-ckpt-", async (dir) => {
    for (const step of [10, 20, 30, 40]) {
      const s = stateAt(step);
      await saveCheckpoint(dir, step, s, 2);
      dispose(s);
    }
    const names = [...Deno.readDirSync(`${dir}/checkpoints`)].map((e) => e.name).sort();
    assertEquals(names, [
      "step-000030.json",
      "step-000030.safetensors",
      "step-000040.json",
      "step-000040.safetensors",
    ]);
    assertEquals(checkpointName(1234567), "step-1234567");
  }));

Deno.test("latestCheckpoint skips tmp leftovers and falls back past a partial or corrupt newest one", () =>
  withTmp("caev2-ckpt-", async (dir) => {
    assertEquals((await latestCheckpoint(dir)).checkpoint, undefined);
    for (const step of [100, 200]) {
      const s = stateAt(step);
      await saveCheckpoint(dir, step, s);
      dispose(s);
    }
    const ck = `${dir}/checkpoints`;
    // Leftovers of a save killed mid-way: ignored without a word.
    await Deno.writeTextFile(`${ck}/step-000300.safetensors.tmp`, "partial");
    await Deno.writeTextFile(`${ck}/step-000300.json.tmp`, "{");
    let latest = await latestCheckpoint(dir);
    assertEquals(latest.checkpoint?.step, 200);
    assertEquals(latest.warnings, []);

    // Newest safetensors truncated (disk full, copy cut short): fall back to 100 with a warning.
    const st = await Deno.readFile(`${ck}/step-000200.safetensors`);
    await Deno.writeFile(`${ck}/step-000200.safetensors`, st.subarray(0, st.length - 5));
    latest = await latestCheckpoint(dir);
    assertEquals(latest.checkpoint?.step, 100);
    assertEquals(latest.checkpoint?.meta.dataPosition, { epoch: 1, index: 3200 });
    assertEquals(latest.warnings.length, 1);
    assertStringIncludes(latest.warnings[0], "skipping the checkpoint of step 200");
    assertStringIncludes(latest.warnings[0], "truncated");
    assertStringIncludes(latest.warnings[0], "using the checkpoint of step 100 instead");

    // A newer safetensors without its index (the process died between the two files), and a newer index
    // that is not JSON: both skipped, each with its reason.
    await Deno.writeFile(`${ck}/step-000300.safetensors`, st);
    await Deno.writeTextFile(`${ck}/step-000400.json`, '{"format": "caev2-checkpoint", "ste');
    latest = await latestCheckpoint(dir);
    assertEquals(latest.checkpoint?.step, 100);
    assertEquals(latest.warnings.length, 3);
    assertStringIncludes(latest.warnings[0], "step-000400.json: not valid JSON");
    assertStringIncludes(latest.warnings[1], "step-000300.json is missing (the save did not finish)");

    // Loading a damaged checkpoint directly names the file.
    const bad = left(await loadCheckpoint(`${ck}/step-000200.safetensors`));
    assertStringIncludes(bad, "step-000200.safetensors");
    assertStringIncludes(left(await loadCheckpoint(`${ck}/step-000999.safetensors`)), "checkpoint not found");
  }));

Deno.test("a fresh run directory is created once; a second fresh run there is refused", () =>
  withTmp("caev2-ckpt-", async (dir) => {
    const out = `${dir}/runs/a`;
    const run = right(await createRunDir(out, { model: "micro", steps: 3 }));
    assertEquals(run, runPaths(out));
    assertEquals(JSON.parse(await Deno.readTextFile(run.configPath)), { model: "micro", steps: 3 });
    assertEquals(await Deno.readTextFile(run.metricsPath), "");
    assert((await Deno.stat(run.checkpointsDir)).isDirectory);
    assertStringIncludes(left(await createRunDir(out, {})), `--resume ${out}`);
    assertStringIncludes(left(await resumeRunDir(`${dir}/nothing`, 0)), "is not a run directory");
  }));

Deno.test("resuming cuts metrics.jsonl back to the checkpoint: identical to an uninterrupted run's", () =>
  withTmp("caev2-ckpt-", async (dir) => {
    const line = (step: number) => ({ step, loss: 1 / step, lr: step * 1e-4, phase: "train" });
    // The uninterrupted run: steps 1..8.
    const full = right(await createRunDir(`${dir}/full`, {}));
    const w = await openMetricsWriter(full.metricsPath);
    for (let s = 1; s <= 8; s++) w.write(line(s));
    w.close();
    // The interrupted run: steps 1..6 then a line cut mid-write; its checkpoint is at step 4.
    const cut = right(await createRunDir(`${dir}/cut`, {}));
    const w2 = await openMetricsWriter(cut.metricsPath);
    for (let s = 1; s <= 6; s++) w2.write(line(s));
    w2.close();
    await Deno.writeTextFile(cut.metricsPath, '{"step":7,"lo', { append: true });
    const before = await readMetrics(cut.metricsPath);
    assertEquals(before.records.length, 6);
    assertEquals(before.skipped.map((s) => s.line), [7]);
    const resumed = right(await resumeRunDir(cut.dir, 4));
    assertEquals(resumed.droppedMetrics, 3);
    const w3 = await openMetricsWriter(cut.metricsPath);
    for (let s = 5; s <= 8; s++) w3.write(line(s));
    w3.close();
    assertEquals(await Deno.readTextFile(cut.metricsPath), await Deno.readTextFile(full.metricsPath));
    assertEquals(await truncateMetricsAfter(cut.metricsPath, 8), 0);
  }));

Deno.test("metrics keep non-finite numbers and reject writes after close", () =>
  withTmp("caev2-ckpt-", async (dir) => {
    const path = `${dir}/m.jsonl`;
    const w = await openMetricsWriter(path);
    w.write({ step: 1, loss: NaN, gradNorm: Infinity, note: "diverged" });
    w.close();
    assertEquals(
      await Deno.readTextFile(path),
      '{"step":1,"loss":"NaN","gradNorm":"Infinity","note":"diverged"}\n',
    );
    const back = (await readMetrics(path)).records[0];
    assert(Number.isNaN(back.loss));
    assertEquals(back.gradNorm, Infinity);
    let threw = false;
    try {
      w.write({ step: 2 });
    } catch {
      threw = true;
    }
    assert(threw);
    assertEquals((await readMetrics(`${dir}/absent.jsonl`)).records, []);
  }));
