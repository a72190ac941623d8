/**
 * Pretraining end to end, on the real model and the real synthetic data at a small size: the reducer keeps
 * the tensor count flat, gradient accumulation averages, a run killed with SIGKILL resumes to exactly the
 * metrics of an uninterrupted run, and a non-finite loss stops the run naming the step.
 */
import { TEST_BACKEND } from "./helpers.ts";
import { E, tf } from "../lib/deps.ts";
import { assert, assertEquals, assertGreater, assertLess, assertStringIncludes } from "../lib/core/std.ts";
import { selectBackend } from "../lib/core/backend.ts";
import { registerDeviceGradients } from "../lib/core/gradients.ts";
import { key, split } from "../lib/core/random.ts";
import { disposeTree, flatten } from "../lib/core/tree.ts";
import { caev2Buffers, caev2Init } from "../lib/models/caev2.ts";
import { clipInit } from "../lib/models/clip.ts";
import { clipMicro, studentPreset } from "../lib/models/presets.ts";
import { clipOpenAiName, toOfficial } from "../lib/models/names.ts";
import { writeSafetensors } from "../lib/core/safetensors.ts";
import { adamw } from "../lib/optim/adamw.ts";
import { disposeState } from "../lib/optim/transform.ts";
import { readMetrics, type StepBatch, trainStep } from "../lib/train/step.ts";
import { resolvePretrainConfig } from "../lib/config/pretrain.ts";
import { pretrain } from "../lib/train/pretrain.ts";

await selectBackend(TEST_BACKEND);
registerDeviceGradients();

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
];

const tinySetup = () => {
  const teacher = clipMicro(IMG, PATCH);
  const student = studentPreset("micro", { imageSize: IMG, patchSize: PATCH, outDim: teacher.outDim });
  const [k1, k2, k3] = split(key(5), 3);
  const opt = adamw({ lr: 1e-3, clip: 3 });
  const params = caev2Init(k1, student);
  const cfg = {
    student,
    teacher,
    teacherParams: clipInit(k2, teacher),
    buffers: caev2Buffers(student),
    optimizer: opt,
  };
  const L = (IMG / PATCH) ** 2;
  const mask = new Uint8Array(B * L);
  for (let b = 0; b < B; b++) for (let i = 0; i < 6; i++) mask[b * L + ((i * 5 + b) % L)] = 1;
  const batch: StepBatch = {
    studentImages: tf.randomNormal([B, IMG, IMG, 3], 0, 1, "float32", 1) as tf.Tensor4D,
    teacherImages: tf.randomNormal([B, IMG, IMG, 3], 0, 1, "float32", 2) as tf.Tensor4D,
    mask,
  };
  const dispose = () => {
    disposeTree(cfg.teacherParams);
    tf.dispose([cfg.buffers.pos, cfg.buffers.regressorPos, batch.studentImages, batch.teacherImages]);
  };
  return { cfg, state: { params, opt: opt.init(params), step: 0, key: k3 }, batch, dispose };
};

Deno.test("the step is a pure reducer: 20 steps keep the live tensor count flat and the input intact", async () => {
  const { cfg, state: s0, batch, dispose } = tinySetup();
  const step = trainStep(cfg);
  let state = s0;
  const counts: number[] = [];
  const firstParam = Object.values(flatten(s0.params))[0];
  const before = await firstParam.data();
  const r0 = step(state, [batch]);
  // The input state is untouched by the step (not mutated, not disposed).
  assertEquals(Array.from(await firstParam.data()), Array.from(before));
  disposeTree(state.params);
  disposeState(state.opt);
  r0.metrics.dispose();
  state = r0.state;
  let loss0 = NaN, lossN = NaN;
  for (let i = 0; i < 20; i++) {
    const r = step(state, [batch]);
    const m = await readMetrics(r.metrics);
    if (i === 0) loss0 = m.loss;
    lossN = m.loss;
    r.metrics.dispose();
    disposeTree(state.params);
    disposeState(state.opt);
    state = r.state;
    counts.push(tf.memory().numTensors);
  }
  assertEquals(new Set(counts).size, 1, `tensor count moved: ${counts.join(",")}`);
  assertEquals(state.step, 21);
  assertLess(lossN, loss0, "20 steps on one batch must lower the loss");
  disposeTree(state.params);
  disposeState(state.opt);
  dispose();
});

Deno.test("gradient accumulation averages the micro-batches (the same batch twice = one step)", async () => {
  const { cfg, state, batch, dispose } = tinySetup();
  // Drop path draws differ per micro-batch, so compare without it.
  const c = { ...cfg, student: { ...cfg.student, dropPath: 0 } };
  const one = trainStep(c)(state, [batch]);
  const two = trainStep(c)(state, [batch, batch]);
  const a = flatten(one.state.params), b = flatten(two.state.params);
  for (const n of Object.keys(a)) {
    const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a[n], b[n]))).dataSync()[0]);
    assert(d < 1e-6, `${n} differs by ${d}`);
  }
  const [m1, m2] = [await readMetrics(one.metrics), await readMetrics(two.metrics)];
  assert(Math.abs(m1.loss - m2.loss) < 1e-6);
  for (const r of [one, two]) {
    r.metrics.dispose();
    disposeTree(r.state.params);
    disposeState(r.state.opt);
  }
  disposeTree(state.params);
  disposeState(state.opt);
  dispose();
});

const runTask = (args: string[]) =>
  new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../tasks/pretrain.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { CAEV2_BACKEND: Deno.env.get("CAEV2_BACKEND") ?? "auto" },
  });

Deno.test("a run killed with SIGKILL resumes to exactly the uninterrupted run's metrics", async () => {
  const dir = await Deno.makeTempDir({ prefix: "caev2-resume-" });
  try {
    const common = [
      ...small,
      "--steps",
      "12",
      "--checkpoint-every",
      "4",
      "--keep-checkpoints",
      "5",
      "--seed",
      "3",
    ];
    const full = await runTask([...common, "--out", `${dir}/full`]).output();
    assertEquals(full.code, 0, new TextDecoder().decode(full.stderr));
    const ref = await Deno.readTextFile(`${dir}/full/metrics.jsonl`);
    assertEquals(ref.trim().split("\n").length, 12);

    // Start the same run and kill it hard once the step-8 checkpoint is complete and step 9 has run.
    const child = runTask([...common, "--out", `${dir}/killed`]).spawn();
    const deadline = Date.now() + 120_000;
    for (;;) {
      const m = await Deno.readTextFile(`${dir}/killed/metrics.jsonl`).catch(() => "");
      if (m.trim().split("\n").length >= 9) break;
      assert(Date.now() < deadline, "the run did not reach step 9 in time");
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill("SIGKILL");
    const status = await child.status;
    assert(!status.success);
    const partial = await Deno.readTextFile(`${dir}/killed/metrics.jsonl`);
    assertLess(partial.trim().split("\n").length, 12);

    const resumed = await runTask(["--resume", `${dir}/killed`]).output();
    const out = new TextDecoder().decode(resumed.stdout);
    assertEquals(resumed.code, 0, new TextDecoder().decode(resumed.stderr));
    assertStringIncludes(out, "resuming");
    assertEquals(await Deno.readTextFile(`${dir}/killed/metrics.jsonl`), ref);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a non-finite loss stops the run naming the step, and keeps what was written", async () => {
  const dir = await Deno.makeTempDir({ prefix: "caev2-nan-" });
  try {
    // A teacher whose projection is NaN: the targets, so the loss, are NaN from the first step.
    const teacher = clipMicro(IMG, PATCH);
    const p = clipInit(key(1), teacher);
    const bad = { ...p, proj: tf.fill([teacher.width, teacher.outDim], NaN) as tf.Tensor2D };
    const official = toOfficial(bad, clipOpenAiName);
    await writeSafetensors(
      `${dir}/nan-clip.safetensors`,
      Object.fromEntries(Object.entries(official).map(([n, t]) => [`visual.${n}`, t])),
    );
    tf.dispose(Object.values(official));
    disposeTree(p);
    bad.proj.dispose();
    const cfg = resolvePretrainConfig([
      ...small,
      "--steps",
      "3",
      "--out",
      `${dir}/run`,
      "--teacher",
      `${dir}/nan-clip.safetensors`,
    ]);
    assert(E.isRight(cfg), E.isLeft(cfg) ? cfg.left : "");
    let message = "";
    try {
      const r = await pretrain(cfg.right, { log: () => {}, tty: false });
      if (E.isLeft(r)) message = r.left;
    } catch (e) {
      message = (e as Error).message;
    }
    assertStringIncludes(message, "the loss became NaN at step 1");
    // config.json stays, and nothing of the bad step reached metrics.jsonl.
    assertGreater((await Deno.stat(`${dir}/run/config.json`)).size, 0);
    assertEquals(await Deno.readTextFile(`${dir}/run/metrics.jsonl`), "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
