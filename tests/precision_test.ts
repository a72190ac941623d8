/**
 * `--precision` without a GPU: the dynamic loss scale's rule, the refusals where f16 cannot run (before
 * any work: no run directory, no output), the flags, the config hash (a run resumes across precisions) and
 * the loss scale in checkpoints. The f16 kernels, parity and f16 training run in tests/webgpu/precision.ts.
 *
 * @module
 */
import { E, tf } from "../lib/deps.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "../lib/core/std.ts";
import {
  DEFAULT_LOSS_SCALE,
  initialLossScale,
  type LossScale,
  nextLossScale,
} from "../lib/optim/loss_scale.ts";
import { precisionProblem } from "../lib/core/precision.ts";
import { configHash, resolvePretrainConfig } from "../lib/config/pretrain.ts";
import { parseParityArgs } from "../lib/parity/cli.ts";
import { loadCheckpoint, saveCheckpoint } from "../lib/train/checkpoint.ts";
import { exists } from "../lib/core/fs.ts";
import { selectBackend } from "../lib/core/backend.ts";
import { left, right, runTaskFile, withTmp } from "./helpers.ts";

Deno.test("loss scale: halved and counted on an overflow, doubled after growthInterval finite steps", () => {
  const cfg = { ...DEFAULT_LOSS_SCALE, growthInterval: 3 };
  let ls: LossScale = initialLossScale(cfg);
  assertEquals(ls, { scale: 65536, good: 0, skipped: 0, inARow: 0 });
  ls = nextLossScale(ls, false, cfg);
  ls = nextLossScale(ls, false, cfg);
  assertEquals(ls, { scale: 16384, good: 0, skipped: 2, inARow: 2 });
  ls = nextLossScale(ls, true, cfg);
  ls = nextLossScale(ls, true, cfg);
  assertEquals(ls, { scale: 16384, good: 2, skipped: 2, inARow: 0 });
  ls = nextLossScale(ls, true, cfg);
  assertEquals(ls, { scale: 32768, good: 0, skipped: 2, inARow: 0 }, "third finite step in a row grows it");
  ls = nextLossScale(nextLossScale(ls, true, cfg), false, cfg);
  assertEquals(
    ls,
    { scale: 16384, good: 0, skipped: 3, inARow: 1 },
    "an overflow resets the run of good steps",
  );
  // PyTorch GradScaler's defaults.
  assertEquals([DEFAULT_LOSS_SCALE.initial, DEFAULT_LOSS_SCALE.growthInterval, DEFAULT_LOSS_SCALE.factor], [
    2 ** 16,
    2000,
    2,
  ]);
});

Deno.test("f16 is refused where it cannot run, with what to use instead", () => {
  assertEquals(precisionProblem("f32", { name: "wasm" }), undefined);
  assertStringIncludes(precisionProblem("f16", { name: "wasm" })!, "needs the webgpu backend");
  assertStringIncludes(precisionProblem("f16", { name: "cpu" })!, "--precision f32");
  const noF16 = { name: "webgpu" as const, adapter: "some GPU", features: ["timestamp-query"] };
  assertStringIncludes(
    precisionProblem("f16", noF16)!,
    'shader-f16, which the adapter "some GPU" does not offer',
  );
  const f16 = { ...noF16, features: ["shader-f16"] };
  assertEquals(precisionProblem("f16", f16), undefined);
  assertStringIncludes(precisionProblem("f16", f16, "stock")!, "--kernels stock");
});

Deno.test("pretrain --precision f16 on wasm is refused before a run directory exists", () =>
  withTmp("caev2-precision-", async (dir) => {
    const out = `${dir}/run`;
    const r = await runTaskFile("pretrain", ["--precision", "f16", "--backend", "wasm", "--out", out]);
    assertEquals(r.code, 1, r.stdout + r.stderr);
    assertStringIncludes(r.stderr, "--precision f16 needs the webgpu backend");
    assert(!(await exists(out)), "no run directory");
  }));

Deno.test("knn --precision f16 on wasm is refused before any output is written", () =>
  withTmp("caev2-precision-", async (dir) => {
    const out = `${dir}/knn.json`;
    const r = await runTaskFile("knn", [
      "--checkpoint",
      "random",
      "--data",
      "synthetic:32",
      "--precision",
      "f16",
      "--backend",
      "wasm",
      "--out",
      out,
    ]);
    assertEquals(r.code, 1, r.stdout + r.stderr);
    assertStringIncludes(r.stderr, "--precision f16 needs the webgpu backend");
    assert(!(await exists(out)));
  }));

Deno.test("--precision and --loss-scale: validated, and outside the config hash (runs resume across them)", async () => {
  const base = right(resolvePretrainConfig(["--out", "r"]));
  const f16 = right(resolvePretrainConfig(["--out", "r", "--precision", "f16", "--loss-scale", "1024"]));
  assertEquals([base.precision, f16.precision, base.lossScale, f16.lossScale], ["f32", "f16", 65536, 1024]);
  assertEquals(await configHash(f16), await configHash(base));
  assertStringIncludes(left(resolvePretrainConfig(["--out", "r", "--precision", "f64"])), "f16");
  left(resolvePretrainConfig(["--out", "r", "--loss-scale", "0"]));
  const p = parseParityArgs(["--precision", "f16"]);
  assert(E.isRight(p) && p.right.precision === "f16");
  assert(E.isLeft(parseParityArgs(["--precision", "bf16"])));
});

Deno.test("parity --precision f16 on wasm exits 2 with the reason", async () => {
  const r = await runTaskFile("parity", ["--backend", "wasm", "--precision", "f16"]);
  assertEquals(r.code, 2, r.stdout + r.stderr);
  assertStringIncludes(r.stderr, "parity: --precision f16 needs the webgpu backend");
});

Deno.test("a checkpoint keeps the f16 loss scale; one without it (f32) loads without it", () =>
  withTmp("caev2-precision-", async (dir) => {
    await selectBackend("cpu");
    const meta = {
      step: 7,
      key: [1, 2] as [number, number],
      configHash: "0123456789abcdef",
      dataPosition: { epoch: 0, index: 28 },
      optHost: { count: 7 },
    };
    const params = { w: tf.tensor1d([1, 2]) };
    const lossScale = { scale: 2 ** 14, good: 5, skipped: 2, inARow: 0 };
    const a = await saveCheckpoint(`${dir}/a`, 7, { params, opt: {}, meta: { ...meta, lossScale } });
    const b = await saveCheckpoint(`${dir}/b`, 7, { params, opt: {}, meta });
    assertEquals(right(await loadCheckpoint(a.path)).meta.lossScale, lossScale);
    assertEquals(right(await loadCheckpoint(b.path)).meta.lossScale, undefined);
    // A scale that is not positive, or counts that are not whole, are refused before anything is written.
    for (const bad of [{ ...lossScale, scale: 0 }, { ...lossScale, good: 0.5 }]) {
      await assertRejects(
        () => saveCheckpoint(`${dir}/c`, 7, { params, opt: {}, meta: { ...meta, lossScale: bad } }),
        Error,
        "invalid meta",
      );
    }
    assert(!(await exists(`${dir}/c/checkpoints/step-000007.safetensors`)));
    tf.dispose(params.w);
  }));
