/**
 * Training memory at the level users meet it: `--remat` trains exactly as without it and holds less; a step
 * estimated not to fit the backend is refused before any run directory or parameter exists, naming the
 * estimate, the limit and the fixes; the estimate (lib/train/footprint.ts) tracks the measured peak; the
 * step's peak with the project's backward pass stays well below tfjs's own.
 */
import { TEST_BACKEND } from "./helpers.ts";
import { E, tf } from "../lib/deps.ts";
import { assert, assertEquals, assertStringIncludes } from "../lib/core/std.ts";
import { selectBackend } from "../lib/core/backend.ts";
import { registerDeviceGradients } from "../lib/core/gradients.ts";
import { key, split } from "../lib/core/random.ts";
import { disposeTree } from "../lib/core/tree.ts";
import { peakMemory, resetPeakMemory } from "../lib/core/memory.ts";
import { caev2Buffers, caev2Init } from "../lib/models/caev2.ts";
import { clipInit } from "../lib/models/clip.ts";
import { clipMicro, studentPreset } from "../lib/models/presets.ts";
import { fusedAdamw } from "../lib/optim/fused_adamw.ts";
import { disposeState } from "../lib/optim/transform.ts";
import { type StepBatch, trainStep } from "../lib/train/step.ts";
import { checkFits, stepFootprint, WASM_HEAP_BYTES } from "../lib/train/footprint.ts";
import { resolvePretrainConfig } from "../lib/config/pretrain.ts";
import { pretrain } from "../lib/train/pretrain.ts";
import { randomMask } from "../lib/bench/step.ts";

await selectBackend(TEST_BACKEND);
registerDeviceGradients();

/** One step of the micro student at 64 px (depth 4), with drop path on; returns the peak and the new params. */
const oneStep = async (remat: boolean) => {
  const IMG = 64, PATCH = 8, B = 8;
  const teacher = clipMicro(IMG, PATCH);
  const student = studentPreset("micro", {
    imageSize: IMG,
    patchSize: PATCH,
    outDim: teacher.outDim,
    dropPath: 0.1,
  });
  const [k1, k2, k3, k4] = split(key(11), 4);
  const optimizer = fusedAdamw({ lr: 1e-3, clip: 3 });
  const params = caev2Init(k1, student);
  const teacherParams = clipInit(k2, teacher);
  const buffers = caev2Buffers(student);
  const images = tf.randomNormal([B, IMG, IMG, 3], 0, 1, "float32", 3) as tf.Tensor4D;
  const batch: StepBatch = { studentImages: images, teacherImages: images, mask: randomMask(k3, B, 64, 26) };
  const step = trainStep({ student, teacher, teacherParams, buffers, optimizer, remat });
  const state = { params, opt: optimizer.init(params), step: 0, key: k4 };
  resetPeakMemory();
  const base = peakMemory().tensorBytes;
  const r = step(state, [batch]);
  const metrics = [...await r.metrics.data()];
  const peak = peakMemory().peakTensorBytes - base;
  const bufferPeak = peakMemory().peakBufferBytes;
  const values = await Promise.all(
    Object.values(r.state.params.encoder.blocks["0"].attn.qkv).map((t) => t.data()),
  );
  disposeTree(params, teacherParams, r.state.params);
  disposeState([state.opt, r.state.opt]);
  tf.dispose([images, buffers.pos, buffers.regressorPos, r.metrics]);
  return { peak, bufferPeak, metrics, values, footprint: stepFootprint(student, teacher, B, 26, remat) };
};

Deno.test("--remat: the same step bit for bit (drop path on), with a lower peak", async () => {
  const plain = await oneStep(false);
  const remat = await oneStep(true);
  assertEquals(remat.metrics, plain.metrics);
  assertEquals(remat.values, plain.values);
  // Measured on wasm and cpu: 0.53 of the plain step's peak over the state (the micro teacher is small,
  // so the student's activations dominate).
  assert(remat.peak < plain.peak * 0.8, `remat peak ${remat.peak} vs ${plain.peak}`);
});

Deno.test("a step that cannot fit the backend is refused before a run directory exists", async () => {
  const dir = await Deno.makeTempDir({ prefix: "caev2-fit-" });
  try {
    // ViT-L at 224 px, batch 512: tens of GiB of activations.
    const cfg = resolvePretrainConfig([
      "--model",
      "large",
      "--image-size",
      "224",
      "--patch-size",
      "16",
      "--batch-size",
      "512",
      "--steps",
      "1",
      "--backend",
      "wasm",
      "--out",
      `${dir}/run`,
    ]);
    assert(E.isRight(cfg), E.isLeft(cfg) ? cfg.left : "");
    const before = tf.memory().numTensors;
    const t0 = performance.now();
    const r = await pretrain(cfg.right, { log: () => {}, tty: false });
    assert(E.isLeft(r), "expected a refusal");
    for (const part of ["--batch-size 512", "GiB", "estimate", "wasm", "--remat", "--accumulate"]) {
      assertStringIncludes(r.left, part);
    }
    assert(performance.now() - t0 < 30_000, "refused before any work");
    assertEquals(tf.memory().numTensors, before);
    let exists = true;
    await Deno.stat(`${dir}/run`).catch(() => (exists = false));
    assert(!exists, "no run directory was created");
  } finally {
    await Deno.remove(dir, { recursive: true });
    await selectBackend(TEST_BACKEND);
  }
});

Deno.test("the footprint estimate tracks the measured peak and the fit check's limits", async () => {
  // The measured distinct-data peak of one micro step (state included) against the estimate.
  for (const remat of [false, true]) {
    const r = await oneStep(remat);
    const ratio = r.footprint.peakBytes / r.bufferPeak;
    console.log(`remat ${remat}: estimate / measured peak = ${ratio.toFixed(2)}`);
    assert(ratio > 0.8 && ratio < 1.5, `estimate ${r.footprint.peakBytes} vs measured ${r.bufferPeak}`);
  }
  // ViT-B at batch 2 fits the wasm heap (it runs: BENCHMARKS.md "Memory"); at batch 64 it does not.
  const base = studentPreset("base", { outDim: 512 });
  const clip = { imageSize: 224, patchSize: 16, width: 768, layers: 12, heads: 12, outDim: 512, eps: 1e-5 };
  const wasm = { backend: "wasm", totalBytes: WASM_HEAP_BYTES };
  assertEquals(checkFits(stepFootprint(base, clip, 2, 98, false), wasm, false), undefined);
  assertStringIncludes(
    checkFits(stepFootprint(base, clip, 64, 98, false), wasm, false)!,
    "more than the wasm",
  );
  // With --remat the message does not suggest it again.
  assert(!checkFits(stepFootprint(base, clip, 64, 98, true), wasm, true)!.includes("--remat"));
  // A WebGPU binding too small for the largest tensor.
  const gpu = { backend: "webgpu", tensorBytes: 2 ** 20 };
  assertStringIncludes(checkFits(stepFootprint(base, clip, 64, 98, false), gpu, false)!, "buffer binding");
});

Deno.test("a bad CAEV2_GPU_POOL_MIB is refused before any backend starts, not a reason to fall back", async () => {
  const before = Deno.env.get("CAEV2_GPU_POOL_MIB");
  try {
    Deno.env.set("CAEV2_GPU_POOL_MIB", "lots");
    const err = await selectBackend("wasm").then(() => undefined, (e: Error) => e.message);
    assertStringIncludes(err ?? "accepted", 'CAEV2_GPU_POOL_MIB="lots"');
  } finally {
    if (before === undefined) Deno.env.delete("CAEV2_GPU_POOL_MIB");
    else Deno.env.set("CAEV2_GPU_POOL_MIB", before);
    await selectBackend(TEST_BACKEND);
  }
});
