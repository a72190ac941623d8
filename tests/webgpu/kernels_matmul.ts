/**
 * The tiled WebGPU matmul (lib/core/kernels/matmul.ts) against tfjs's own kernel on random inputs, in
 * every load/store layout, with broadcasting, split K and through gradients, and the fused `x W + b` of the
 * linear layers (f32 and f16, bias in the epilogue or the split-sum pass); on the WebGPU adapter present
 * (llvmpipe on the CPU machines; `deno task bench --check` runs the model-scale cases on the H200).
 * Skipped where no WebGPU adapter exists. The 128 x 128 tile takes ~30 s to compile on llvmpipe, so it is
 * checked here only with CAEV2_FULL_KERNEL_TESTS=1 (and always by `bench --check`).
 *
 * @module
 */
import { tf, type WebGPUBackend } from "../../lib/deps.ts";
import { selectBackend } from "../../lib/core/backend.ts";
import {
  type GemmChoice,
  type GemmChooser,
  gemmChooser,
  matMulActGrad,
  matMulBias,
  planMatMul,
  restoreStockMatMul,
  setGemmChooser,
  setMatMulPrecision,
  subgroupLanes,
} from "../../lib/core/kernels/matmul.ts";
import { SUBGROUP_DECLARATIONS, subgroupMinSize } from "../../lib/core/webgpu_features.ts";
import { webgpuDevice } from "../../lib/core/webgpu_errors.ts";
import { headAttention } from "../../lib/nn/sdpa.ts";
import { registerKernels, restoreStockKernels } from "../../lib/core/kernels/dispatch.ts";
import {
  BindingSizeError,
  checkBindable,
  type Program,
  runProgram,
  toTensor,
} from "../../lib/core/kernels/program.ts";
import {
  checkMatMul,
  checkMatMulBias,
  checkMatMulGrad,
  checkResidualEpilogue,
  formatChecks,
  modelMatMulBiasCases,
  modelMatMulCases,
  smallMatMulBiasCases,
  smallMatMulCases,
} from "../../lib/bench/kernel_check.ts";
import { relativeError } from "../../lib/core/compare.ts";
import { key, seedOf, split } from "../../lib/core/random.ts";
import { linear, type LinearParams, linearReference } from "../../lib/nn/linear.ts";
import { residualLinear } from "../../lib/nn/residual.ts";
import { mlp, mlpInit } from "../../lib/nn/mlp.ts";
import { fusedActivation } from "../../lib/core/kernels/dispatch.ts";
import { assert, assertEquals, assertThrows } from "../../lib/core/std.ts";
import { gpu, hasF16 } from "../webgpu_env.ts";

const full = Deno.env.get("CAEV2_FULL_KERNEL_TESTS") === "1";

Deno.test({
  name: "tiled matmul matches tfjs's kernel in every layout, and its gradients too",
  ...gpu,
  fn: async () => {
    try {
      const rs = [
        ...await checkMatMul(full ? [...smallMatMulCases, modelMatMulCases[0]] : smallMatMulCases),
        ...await checkMatMulGrad(),
      ];
      assert(rs.every((r) => r.ok), formatChecks(rs));
    } finally {
      restoreStockMatMul();
    }
  },
});

Deno.test({
  name: "fused x W + b matches matMul then add: epilogue (vec4, scalar), split K (vec4, scalar), f32 and f16",
  ...gpu,
  fn: async () => {
    const before = tf.memory().numTensors;
    try {
      // f16 where the adapter has shader-f16 (lavapipe does): checkMatMulBias's default.
      const rs = await checkMatMulBias(
        full ? [...smallMatMulBiasCases, modelMatMulBiasCases[0]] : smallMatMulBiasCases,
      );
      assert(rs.length >= smallMatMulBiasCases.length, "every case checked");
      assert(rs.every((r) => r.ok), formatChecks(rs));
    } finally {
      restoreStockMatMul();
    }
    assertEquals(tf.memory().numTensors, before, "tensors leaked");
  },
});

/** A linear layer and an input on 64 x 64 tiles (M N < 256^2), N % 4 == 0, ragged M. */
const linearCase = () => {
  const [k1, k2, k3, k4] = split(key(71), 4);
  const p: LinearParams = {
    kernel: tf.randomNormal([24, 36], 0, 0.3, "float32", seedOf(k1)) as tf.Tensor2D,
    bias: tf.randomNormal([36], 0, 1, "float32", seedOf(k2)) as tf.Tensor1D,
  };
  const x = tf.randomNormal([2, 19, 24], 0, 1, "float32", seedOf(k3));
  const w = tf.randomNormal([2, 19, 36], 0, 1, "float32", seedOf(k4));
  return { p, x, w, dispose: () => tf.dispose([p.kernel, p.bias!, x, w]) };
};

Deno.test({
  name:
    "linear on WebGPU with the kernels registered matches linearReference on stock kernels, with gradients",
  ...gpu,
  fn: async () => {
    const c = linearCase();
    const run = async (f: typeof linear) => {
      const loss = (x: tf.Tensor, k: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(f({ kernel: k as tf.Tensor2D, bias: b as tf.Tensor1D }, x), c.w));
      const y = tf.tidy(() => f(c.p, c.x));
      const gs = tf.grads(loss)([c.x, c.p.kernel, c.p.bias!]);
      const out = await Promise.all([y, ...gs].map((t) => t.data()));
      tf.dispose([y, ...gs]);
      return out;
    };
    try {
      restoreStockKernels();
      const ref = await run(linearReference);
      registerKernels();
      const got = await run(linear);
      ["y", "dx", "dW", "db"].forEach((n, i) => {
        const e = relativeError(got[i], ref[i]);
        assert(e < 1e-5, `${n}: relative error ${e}`);
      });
    } finally {
      restoreStockKernels();
      c.dispose();
    }
  },
});

Deno.test({
  name: "linear's forward is one CaeMatMulBias kernel (no BatchMatMul, no Add), asking the chooser once",
  ...gpu,
  fn: async () => {
    const c = linearCase();
    const saved = gemmChooser();
    let asked = 0;
    const counting: GemmChooser = (s) => (asked++, saved?.(s));
    try {
      registerKernels();
      setGemmChooser(counting);
      assertEquals(gemmChooser(), counting, "gemmChooser returns what setGemmChooser installed");
      const names = async (f: () => tf.Tensor) => {
        let y: tf.Tensor | undefined;
        const info = await tf.profile(() => (y = f()));
        await y!.data();
        y!.dispose();
        return info.kernels.map((k) => k.name);
      };
      // Off the tape (inference) and on it (the custom op's forward inside a gradient).
      const off = await names(() => linear(c.p, c.x));
      assert(off.includes("CaeMatMulBias"), `kernels: ${off}`);
      assert(!off.includes("Add") && !off.includes("BatchMatMul"), `kernels: ${off}`);
      assertEquals(asked, 1, "one product planned once");
      const on = await names(() => tf.grad((x: tf.Tensor) => tf.sum(linear(c.p, x)))(c.x));
      assert(on.includes("CaeMatMulBias") && !on.includes("Add"), `kernels: ${on}`);
      // The stock path where the tiled matmul is off: matMulBias declines.
      restoreStockKernels();
      const x2 = c.x.reshape([38, 24]) as tf.Tensor2D;
      assertEquals(matMulBias(x2, c.p.kernel, c.p.bias!), undefined);
      x2.dispose();
      const stock = await names(() => linear(c.p, c.x));
      assert(stock.includes("Add") && stock.includes("BatchMatMul"), `kernels: ${stock}`);
    } finally {
      setGemmChooser(saved);
      restoreStockKernels();
      c.dispose();
    }
  },
});

Deno.test({
  name: "off the tape, the MLP's first layer, bias and GELU / QuickGELU are one kernel with the same values",
  ...gpu,
  fn: async () => {
    await selectBackend("webgpu");
    registerKernels();
    const [k1, k2] = split(key(23));
    // 96 -> 40: vec4 epilogue; 2048 rows x 8 into 30: a long K, few tiles (split K), scalar epilogue.
    const cases = [
      { x: [3, 37, 96], hidden: 40 },
      { x: [8, 2048], hidden: 30 },
    ];
    try {
      for (const c of cases) {
        const dim = c.x[c.x.length - 1];
        const p = mlpInit(k1, dim, c.hidden);
        const x = tf.randomNormal(c.x, 0, 1, "float32", seedOf(k2));
        for (const act of ["gelu", "quickGelu"] as const) {
          for (const precision of hasF16 ? ["f32", "f16"] as const : ["f32"] as const) {
            setMatMulPrecision(precision);
            // The separate kernels: the fused linear, then the fused activation.
            const h = linear(p.fc1, x);
            const a = fusedActivation(h, act === "quickGelu")!;
            const want = await linear(p.fc2, a).data();
            const profile = await tf.profile(async () => {
              const y = mlp(p, x, act);
              const got = await y.data();
              assertEquals(got, want, `${act} ${precision} [${c.x}] -> ${c.hidden}`);
              y.dispose();
            });
            const kernels = profile.kernelNames;
            assert(!kernels.includes("CaeGelu"), `one kernel for fc1 and ${act}: ${kernels}`);
            tf.dispose([h, a]);
          }
        }
        tf.dispose([x, p.fc1.kernel, p.fc1.bias!, p.fc2.kernel, p.fc2.bias!]);
      }
      assert(planMatMul([8, 2048], [2048, 30], false, false)!.splits > 1, "the second case splits K");
    } finally {
      setMatMulPrecision("f32");
      restoreStockKernels();
    }
  },
});

Deno.test("binding-size guard refuses tensors larger than one binding", () => {
  assertThrows(
    () => checkBindable("test", [1024, 1024, 64], 128 * 2 ** 20),
    BindingSizeError,
    "maxStorageBufferBindingSize",
  );
  checkBindable("test", [1024, 1024, 32], 128 * 2 ** 20);
});

Deno.test("planMatMul: tile by size, split K for long thin products, fallbacks", () => {
  assertEquals(planMatMul([50432, 768], [768, 2304], false, false)!.tile.bm, 128);
  assertEquals(planMatMul([3072, 167, 16], [3072, 167, 16], false, true)!.tile.bm, 64);
  assert(planMatMul([25344, 768], [25344, 2304], true, false)!.splits > 1, "weight gradient splits K");
  assertEquals(planMatMul([3168, 768], [768, 2304], false, false)!.splits, 1);
  assertEquals(planMatMul([2, 3, 4, 5], [3, 2, 5, 4], false, false), null, "general broadcast: stock");
});

Deno.test({
  name: "wasm: transposed products routed through an explicit transpose equal the stock kernel's",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const ok = await selectBackend("wasm").then(() => tf.getBackend() === "wasm", () => false);
    if (!ok) return;
    const a = tf.randomNormal([33, 20], 0, 1, "float32", 1),
      b = tf.randomNormal([33, 12], 0, 1, "float32", 2);
    const run = async () => {
      const ys = [tf.matMul(a, b, true, false), tf.matMul(b, a, true, false), tf.matMul(a, a, false, true)];
      const out = await Promise.all(ys.map((y) => y.data()));
      tf.dispose(ys);
      return out;
    };
    restoreStockKernels();
    const ref = await run();
    registerKernels();
    const got = await run();
    restoreStockKernels();
    ref.forEach((r, i) => assert(relativeError(got[i], r) < 1e-6, `product ${i}`));
    tf.dispose([a, b]);
  },
});

/**
 * The outputs of every kind of product under one table choice (K split 4 where K is long, as the default
 * rule would): the small cases through `tf.matMul`, the fused `x W + b`, the activation-gradient epilogue,
 * and self-attention's products on views of one qkv projection, scaled (lib/core/kernels/heads.ts).
 */
const choiceOutputs = async (choice: Omit<GemmChoice, "splits">): Promise<Float32Array[]> => {
  setGemmChooser((s) => ({ ...choice, splits: s.k >= 1024 ? 4 : 1 }));
  const [ka, kb, kc, kd, ke, kf] = split(key(41), 6);
  const x = tf.randomNormal([70, 36], 0, 1, "float32", seedOf(ka)) as tf.Tensor2D;
  const w = tf.randomNormal([36, 52], 0, 1, "float32", seedOf(kb)) as tf.Tensor2D;
  const bias = tf.randomNormal([52], 0, 1, "float32", seedOf(kc)) as tf.Tensor1D;
  const u = tf.randomNormal([70, 52], 0, 1, "float32", seedOf(kd)) as tf.Tensor2D;
  const g = tf.randomNormal([70, 36], 0, 1, "float32", seedOf(ke)) as tf.Tensor2D;
  const qkv = tf.randomNormal([2, 37, 3 * 16], 0, 1, "float32", seedOf(kf)) as tf.Tensor3D;
  const out: Float32Array[] = [];
  let k = key(43);
  for (const c of smallMatMulCases) {
    const [k1, k2, next] = split(k, 3);
    k = next;
    const a = tf.randomNormal(c.a, 0, 1, "float32", seedOf(k1));
    const b = tf.randomNormal(c.b, 0, 1, "float32", seedOf(k2));
    const y = tf.matMul(a, b, c.ta, c.tb);
    out.push(await y.data() as Float32Array);
    tf.dispose([a, b, y]);
  }
  const wt = tf.transpose(w) as tf.Tensor2D;
  for (
    const y of [
      matMulBias(x, w, bias)!,
      matMulActGrad(g, wt, u, "gelu")!,
      headAttention([qkv], { q: [0, 0], k: [0, 16], v: [0, 32] }, 2),
    ]
  ) {
    out.push(await y.data() as Float32Array);
    y.dispose();
  }
  tf.dispose([x, w, wt, bias, u, g, qkv]);
  return out;
};

/** Asserts two {@link choiceOutputs} are equal bit for bit. */
const sameOutputs = (a: Float32Array[], b: Float32Array[], what: string) => {
  assertEquals(a.length, smallMatMulCases.length + 3);
  a.forEach((o, i) => assertEquals(relativeError(b[i], o), 0, `${what}: output ${i}`));
};

Deno.test({
  name:
    "double-buffered tiles and written-out slice loops give the plain kernel's values: every layout, split K, f16, epilogues",
  ...gpu,
  fn: async () => {
    await selectBackend("webgpu");
    registerKernels();
    const saved = gemmChooser();
    // A small tile (quick to compile on llvmpipe); K split 4 where K is long, as the default rule would.
    const tile = { bm: 32, bn: 32, bk: 8, tm: 4, tn: 4 };
    const run = (buffers: 1 | 2, accumulate: "f32" | "f16", unroll = false) =>
      choiceOutputs({ tile, accumulate, buffers, unroll });
    try {
      for (const [precision, accumulate] of [["f32", "f32"], ["f16", "f32"], ["f16", "f16"]] as const) {
        if (precision === "f16" && !hasF16) continue;
        setMatMulPrecision(precision);
        const one = await run(1, accumulate);
        for (const [buffers, unroll] of [[2, false], [1, true], [2, true]] as const) {
          sameOutputs(
            one,
            await run(buffers, accumulate, unroll),
            `${precision}/${accumulate}, ${buffers} buffers, unroll ${unroll}`,
          );
        }
      }
    } finally {
      setMatMulPrecision("f32");
      setGemmChooser(saved);
      restoreStockKernels();
    }
  },
});

Deno.test({
  name:
    "the subgroup variant (A shared by subgroupShuffle) gives the plain kernel's values: every layout, split K, heads in place, f16, epilogues; and its shared-path fallback too",
  ...gpu,
  ignore: gpu.ignore || subgroupMinSize(webgpuDevice()) === undefined,
  fn: async () => {
    await selectBackend("webgpu");
    registerKernels();
    const saved = gemmChooser();
    const minSize = subgroupMinSize(webgpuDevice())!;
    // 8 lanes where the subgroups have 8 or more (lavapipe: 8; the shuffles run); 16 lanes on a tile 16
    // threads wide, which on an 8-lane device takes the shared path (the check in the kernel) and on a
    // device of 16 or more lanes the shuffles.
    const T8 = { bm: 32, bn: 32, bk: 8, tm: 4, tn: 4 };
    const lanes = subgroupLanes(T8, minSize);
    assertEquals(lanes, Math.min(8, 2 ** Math.floor(Math.log2(minSize))));
    const [run, same] = [choiceOutputs, sameOutputs];
    try {
      for (const [precision, accumulate] of [["f32", "f32"], ["f16", "f32"], ["f16", "f16"]] as const) {
        if (precision === "f16" && !hasF16) continue;
        setMatMulPrecision(precision);
        const plain = await run({ tile: T8, accumulate });
        for (const [buffers, unroll] of [[1, false], [2, true]] as const) {
          const other = await run({ tile: T8, accumulate, buffers, unroll, subgroup: lanes });
          same(
            plain,
            other,
            `${precision}/${accumulate}, ${buffers} buffers, unroll ${unroll}, ${lanes} lanes`,
          );
        }
      }
      setMatMulPrecision("f32");
      // A tile 16 threads wide (and few, for llvmpipe's compile time).
      const T16 = { bm: 16, bn: 64, bk: 16, tm: 4, tn: 4 };
      same(await run({ tile: T16 }), await run({ tile: T16, subgroup: 16 }), "16 threads a row, 16 lanes");
      assertThrows(
        () => planMatMul([64, 64], [64, 64], false, false, { tile: T8, subgroup: 16 }),
        Error,
        "lanes",
      );
    } finally {
      setMatMulPrecision("f32");
      setGemmChooser(saved);
      restoreStockKernels();
    }
  },
});

Deno.test({
  name: "the subgroup builtins reach a program through tfjs's entry point: lane, size, and a shuffle",
  ...gpu,
  ignore: gpu.ignore || subgroupMinSize(webgpuDevice()) === undefined,
  fn: async () => {
    await selectBackend("webgpu");
    const backend = tf.backend() as WebGPUBackend;
    // Each invocation writes its lane, the subgroup size, and the invocation index of the lane after it
    // (cyclically), as the subgroup variant's check reads its partners.
    const program: Program = {
      variableNames: [],
      outputShape: [3 * 64],
      shaderKey: "caeTestSubgroupBuiltins",
      dispatchLayout: { x: [0] },
      dispatch: [1, 1, 1],
      workgroupSize: [64, 1, 1],
      getUserCode: () =>
        `${SUBGROUP_DECLARATIONS}
fn main(index: i32) {
  // (uniforms read: a module that binds nothing at 1 fails tfjs's bind group)
  if (i32(localIndex) * 3 >= uniforms.outShape) { return; }
  let next = subgroupShuffle(localIndex, (sgLane + 1u) % sgSize);
  result[localIndex * 3u] = f32(sgLane);
  result[localIndex * 3u + 1u] = f32(sgSize);
  result[localIndex * 3u + 2u] = f32(next);
}`,
    };
    const out = toTensor(runProgram(backend, program, []));
    const v = await out.data();
    out.dispose();
    const size = v[1];
    assert(size >= subgroupMinSize(webgpuDevice())! && 64 % size === 0, `subgroup size ${size}`);
    for (let i = 0; i < 64; i++) {
      assertEquals(v[3 * i + 1], size, `invocation ${i}: size`);
      // The invocations this device groups: consecutive ones (what the kernel's check assumes; a device that
      // groups otherwise is told apart by that check, not by this test).
      assertEquals(v[3 * i], i % size, `invocation ${i}: lane`);
      assertEquals(v[3 * i + 2], i - (i % size) + ((i + 1) % size), `invocation ${i}: shuffled`);
    }
  },
});

Deno.test({
  name: "off the tape, a residual add is the epilogue of the branch's last product: the same values, no Add",
  ...gpu,
  fn: async () => {
    await selectBackend("webgpu");
    registerKernels();
    const c = linearCase();
    const r = tf.randomNormal([...c.x.shape.slice(0, -1), c.p.kernel.shape[1]], 0, 1, "float32", 9);
    try {
      const info = await tf.profile(() => residualLinear(c.p, c.x, { x: r }));
      const fused = info.result as tf.Tensor;
      const names = info.kernels.map((k) => k.name);
      assert(names.includes("CaeMatMulBias") && !names.includes("Add"), `kernels: ${names}`);
      const plain = linear(c.p, c.x), ref = tf.add(r, plain);
      assertEquals(relativeError(await fused.data(), await ref.data()), 0);
      // On the tape the add is a separate op (nothing fused), with the same value and gradients.
      const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(residualLinear(c.p, x, { x: r }), c.w)))(c.x);
      const gRef = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.add(r, linear(c.p, x)), c.w)))(c.x);
      assertEquals(relativeError(await g.data(), await gRef.data()), 0);
      tf.dispose([fused, plain, ref, g, gRef]);
      // bench --check's comparison, on ragged rows.
      const rs = await checkResidualEpilogue([{ rows: 76, dim: 24, out: 36 }], 0);
      assert(rs.length === 2 && rs.every((r) => r.ok), formatChecks(rs));
    } finally {
      restoreStockKernels();
      r.dispose();
      c.dispose();
    }
  },
});
