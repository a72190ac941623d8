/**
 * `--precision f16` on the WebGPU adapter present (Mesa's lavapipe offers `shader-f16` on the CPU machines;
 * skipped where the adapter lacks it): the f16 matmul in every layout against tfjs's kernel on f16-rounded
 * operands, the overflow rule, the packed saved tensors (values, memory, gradients), parity against the
 * float64 fixtures within 2e-2, and pretraining runs: an overflow skips the update and halves the scale, a
 * resumed f16 run repeats the uninterrupted one exactly, and runs resume across precisions.
 *
 * @module
 */
import { E, tf } from "../../lib/deps.ts";
import { selectBackend } from "../../lib/core/backend.ts";
import { registerKernels, restoreStockKernels } from "../../lib/core/kernels/dispatch.ts";
import { restoreStockMatMul } from "../../lib/core/kernels/matmul.ts";
import { setPrecision } from "../../lib/core/precision.ts";
import { startRuntime } from "../../lib/core/runtime.ts";
import {
  checkHalfPack,
  checkMatMulF16,
  type CheckResult,
  formatChecks,
  smallMatMulCases,
} from "../../lib/bench/kernel_check.ts";
import { formatReport, PARITY_TOLERANCE_F16, runParity } from "../../lib/parity/check.ts";
import { relativeError } from "../../lib/core/compare.ts";
import { gradients } from "../../lib/core/autodiff.ts";
import { key, split } from "../../lib/core/random.ts";
import { mlp, mlpInit } from "../../lib/nn/mlp.ts";
import { attentionCore } from "../../lib/nn/sdpa.ts";
import { flatten, type Params } from "../../lib/core/tree.ts";
import { peakMemory, resetPeakMemory } from "../../lib/core/memory.ts";
import { resolvePretrainConfig } from "../../lib/config/pretrain.ts";
import { pretrain, type PretrainSummary } from "../../lib/train/pretrain.ts";
import { latestCheckpoint, loadCheckpoint } from "../../lib/train/checkpoint.ts";
import { assert, assertAlmostEquals, assertEquals, assertStringIncludes } from "../../lib/core/std.ts";
import { fixtures } from "../parity_fixture.ts";

const info = await selectBackend("webgpu").catch(() => undefined);
const hasF16 = info?.name === "webgpu" && (info.features ?? []).includes("shader-f16");

/** Runs `f` in f16 on the fused kernels, then puts f32 and the stock kernels back. */
const inF16 = async <T>(f: () => Promise<T>): Promise<T> => {
  await selectBackend("webgpu"); // another suite in this process may have switched backends
  registerKernels();
  setPrecision("f16");
  try {
    return await f();
  } finally {
    setPrecision("f32");
    restoreStockKernels();
  }
};

const gpuTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, ignore: !hasF16, sanitizeOps: false, sanitizeResources: false, fn });

const allPass = (rs: readonly CheckResult[]) => assert(rs.every((r) => r.ok), formatChecks(rs));

gpuTest("f16 matmul: f32 accumulation is exact on f16 operands, f16 accumulation within 3e-3", async () => {
  const before = tf.memory().numTensors;
  try {
    allPass(await inF16(() => checkMatMulF16(smallMatMulCases)));
  } finally {
    restoreStockMatMul();
  }
  assertEquals(tf.memory().numTensors, before, "tensors leaked");
});

gpuTest(
  "f16 matmul: an operand past f16's range (or NaN) makes its product NaN, 65504 does not",
  async () => {
    await inF16(async () => {
      const b = tf.ones([40, 8]);
      const product = async (v: number) => {
        const a = tf.tensor(Float32Array.from({ length: 5 * 40 }, (_, i) => (i === 3 ? v : 0.5)), [5, 40]);
        const y = tf.matMul(a, b);
        const d = await y.data();
        tf.dispose([a, y]);
        return d;
      };
      const big = await product(70000);
      assert(big.every(Number.isNaN), `70000: ${big.slice(0, 8).join(", ")}`);
      assert((await product(NaN)).every(Number.isNaN), "NaN operand");
      const max = await product(65504);
      assert(max.every(Number.isFinite), "65504 is f16's largest finite value");
      assertEquals(max[0], 65504 + 39 * 0.5);
      b.dispose();
    });
  },
);

gpuTest("f16 saved tensors: pack/unpack round as Math.f16round; overflow is an infinity", async () => {
  allPass(await inF16(() => checkHalfPack()));
});

/** Gradients of a stack of MLPs and an attention core on the tape; the peak of live tensor bytes. */
const stackGrads = (params: Params[], x: tf.Tensor) => {
  resetPeakMemory();
  const r = gradients(() => {
    let h = x;
    for (const p of params) h = mlp(p as ReturnType<typeof mlpInit>, h);
    const [b, n, d] = [32, 64, 128];
    const q = tf.reshape(h, [b, 4, n, d / 4]) as tf.Tensor4D;
    return tf.sum(tf.square(attentionCore(q, q, q)));
  }, params.flatMap((p) => Object.values(flatten(p))));
  const peak = peakMemory().peakTensorBytes;
  return { r, peak };
};

gpuTest(
  "f16 keeps the tape's saved activations in half the bytes; gradients within 1e-2 of f32",
  async () => {
    await selectBackend("webgpu");
    registerKernels();
    const keys = split(key(3), 7);
    // Activations much larger than the parameters: [2048, 128] through MLPs of 512 hidden units.
    const params = keys.slice(1).map((k) => mlpInit(k, 128, 512));
    const x = tf.randomNormal([2048, 128], 0, 1, "float32", 5);
    const grads = async () => {
      const { r, peak } = stackGrads(params, x);
      const data = await Promise.all(r.grads.map((g) => g.data()));
      tf.dispose([r.value, ...r.grads]);
      return { data, peak };
    };
    try {
      setPrecision("f32");
      const f32 = await grads();
      setPrecision("f16");
      const f16 = await grads();
      const worst = Math.max(...f32.data.map((g, i) => relativeError(f16.data[i], g)));
      assert(worst < 1e-2, `gradient relative error ${worst}`);
      assert(worst > 0, "f16 changed nothing: are the f16 products on?");
      // The tape's largest entries (each linear's input, GELU's input, q/k/v) are packed to f16.
      assert(
        f16.peak < 0.75 * f32.peak,
        `peak live tensor bytes f16 ${f16.peak} vs f32 ${f32.peak} (ratio ${
          (f16.peak / f32.peak).toFixed(3)
        })`,
      );
    } finally {
      setPrecision("f32");
      restoreStockKernels();
      tf.dispose([x, ...params.flatMap((p) => Object.values(flatten(p)))]);
    }
  },
);

for (const file of fixtures) {
  gpuTest(`parity --precision f16 within ${PARITY_TOLERANCE_F16}: ${file.split("/").pop()}`, async () => {
    const report = await inF16(() => runParity(file));
    const text = formatReport(report).join("\n");
    assert(report.pass, text);
    assertEquals(report.precision, "f16");
    assertEquals(report.tolerance, PARITY_TOLERANCE_F16);
    // f16 rounding shows (f32 lands near 1e-6): the check ran the f16 products.
    assert(report.worst > 1e-4 && report.worst < PARITY_TOLERANCE_F16, text);
  });
}

// ---------------------------------------------------------------------------------------------------
// Pretraining in f16 (micro student, 32 px, batch 4; in this process, so compiled shaders are reused)

const small = ["--image-size", "32", "--patch-size", "8", "--batch-size", "4", "--backend", "webgpu"];

const run = async (
  args: string[],
  stopAfter?: number,
): Promise<{ log: string; summary: PretrainSummary }> => {
  const cfg = resolvePretrainConfig([...small, ...args]);
  if (E.isLeft(cfg)) throw new Error(cfg.left);
  const lines: string[] = [];
  const r = await pretrain(cfg.right, { log: (l) => lines.push(l), tty: false, stopAfter });
  if (E.isLeft(r)) throw new Error(`${r.left}\n${lines.join("\n")}`);
  return { log: lines.join("\n"), summary: r.right };
};

const metrics = async (dir: string) =>
  (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));

const tmp = () => Deno.makeTempDir({ prefix: "caev2-f16-" });

gpuTest(
  "f16 pretraining: an overflow skips the update and halves the loss scale, then training goes on",
  async () => {
    const dir = await tmp();
    try {
      // 2^28: the scaled gradients overflow f16 until the scale has fallen far enough (a few steps).
      const { log } = await run([
        "--precision",
        "f16",
        "--loss-scale",
        String(2 ** 28),
        "--steps",
        "8",
        "--checkpoint-every",
        "1",
        "--keep-checkpoints",
        "10",
        "--out",
        `${dir}/r`,
      ]);
      assertStringIncludes(log, "update skipped, loss scale 268435456 -> 134217728");
      const m = await metrics(`${dir}/r`);
      const first = m.findIndex((r) => r.gradNorm !== "NaN");
      assert(first >= 2 && first < 8, `the first finite step is step ${first + 1} of 8`);
      assertEquals(m[first].skippedSteps, first);
      assertEquals(m[first].lossScale, 2 ** (28 - first));
      assert(m[m.length - 1].loss < m[first].loss, "training went on");
      // A skipped update leaves the parameters as they were: steps 1 and 2 hold the same values.
      const [c1, c2] = await Promise.all(
        [1, 2].map((s) =>
          loadCheckpoint(`${dir}/r/checkpoints/step-${String(s).padStart(6, "0")}.safetensors`)
        ),
      );
      if (E.isLeft(c1) || E.isLeft(c2)) {
        throw new Error("checkpoint unreadable");
      }
      for (const [name, t] of Object.entries(c1.right.params)) {
        assertEquals(c2.right.params[name].data, t.data, name);
      }
      assertEquals(c2.right.meta.lossScale?.skipped, 2);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

gpuTest("f16 pretraining resumes exactly (loss scale included), and across precisions", async () => {
  const dir = await tmp();
  try {
    const steps = ["--steps", "4", "--checkpoint-every", "2"];
    // 2^27: a skipped step or two before the cut, so the resumed scale and counts matter.
    await run([...steps, "--precision", "f16", "--loss-scale", String(2 ** 27), "--out", `${dir}/whole`]);
    await run([...steps, "--precision", "f16", "--loss-scale", String(2 ** 27), "--out", `${dir}/cut`], 2);
    const { log } = await run(["--resume", `${dir}/cut`, "--precision", "f16"]);
    assertStringIncludes(log, "(from the checkpoint)");
    assertEquals(await metrics(`${dir}/cut`), await metrics(`${dir}/whole`));

    // f32 -> f16 -> f32 over one run: each checkpoint resumes in the other precision.
    const six = ["--steps", "6", "--checkpoint-every", "2"];
    await run([...six, "--out", `${dir}/mixed`], 2);
    const toF16 = await run(["--resume", `${dir}/mixed`, "--precision", "f16"], 2);
    assertStringIncludes(toF16.log, "loss scale 65536 (initial)");
    const latest = await latestCheckpoint(`${dir}/mixed`);
    assertEquals(latest.checkpoint?.meta.lossScale?.scale, 65536);
    await run(["--resume", `${dir}/mixed`]);
    const m = await metrics(`${dir}/mixed`);
    assertEquals(m.map((r) => r.step), [1, 2, 3, 4, 5, 6]);
    assertEquals(m.map((r) => r.lossScale), [undefined, undefined, 65536, 65536, undefined, undefined]);
    // Within 2% of the same run in f32 throughout.
    await run([...six, "--out", `${dir}/f32`]);
    const ref = await metrics(`${dir}/f32`);
    assertAlmostEquals(m[5].loss, ref[5].loss, 0.02 * ref[5].loss);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

gpuTest("startRuntime refuses f16 with stock kernels, before any work", async () => {
  const e = await startRuntime("webgpu", { kernels: "stock", precision: "f16" }).catch((e) => e as Error);
  assert(e instanceof Error, "refused");
  assertStringIncludes(e.message, "--kernels stock");
  await startRuntime("webgpu", { precision: "f32" });
  restoreStockKernels();
});

// The check of the default run (150 steps at 64 px, batch 16): about 8 minutes per precision on
// lavapipe, so only with CAEV2_SLOW_TESTS=1. Measured 2026-11-30: f32 0.228502, f16 0.228504 (docs/precision.md).
Deno.test({
  name: "the default 150-step run in f16 ends within 2% of the f32 loss (CAEV2_SLOW_TESTS=1)",
  ignore: !hasF16 || Deno.env.get("CAEV2_SLOW_TESTS") !== "1",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await tmp();
    try {
      const last = async (args: string[]) => {
        const cfg = resolvePretrainConfig(["--backend", "webgpu", ...args]);
        if (E.isLeft(cfg)) throw new Error(cfg.left);
        const r = await pretrain(cfg.right, { log: () => {}, tty: false });
        if (E.isLeft(r)) throw new Error(r.left);
        return r.right.last!;
      };
      const f32 = await last(["--out", `${dir}/f32`]);
      const f16 = await last(["--out", `${dir}/f16`, "--precision", "f16"]);
      assertEquals([f32.step, f16.step], [150, 150]);
      assertAlmostEquals(f16.loss, f32.loss, 0.02 * f32.loss);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
