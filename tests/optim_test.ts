/**
 * The optimizer library against numbers someone else computed: PyTorch's AdamW step on the official CAE v2
 * fixtures, a hand-written float64 AdamW, numpy's run of the official cosine_scheduler; plus optax's
 * convergence tests (parabola, Rosenbrock) and the ownership rule (flat tensor count).
 */
import { tf } from "../lib/deps.ts";
import { assert, assertAlmostEquals, assertEquals, assertLess, assertThrows } from "../lib/core/std.ts";
import { disposeTree, flatten, type Params, unflatten } from "../lib/core/tree.ts";
import { adam, adamw } from "../lib/optim/adamw.ts";
import { scaleByAdam } from "../lib/optim/adam.ts";
import { applyUpdates } from "../lib/optim/apply.ts";
import { clipByGlobalNorm, globalNorm } from "../lib/optim/clip.ts";
import { addDecayedWeights, decayAll, officialDecayMask } from "../lib/optim/decay.ts";
import { scaleByLearningRate } from "../lib/optim/lr.ts";
import { constantSchedule, cosineSchedule } from "../lib/optim/schedule.ts";
import {
  chain,
  disposeState,
  type GradientTransformation,
  identity,
  tensorsIn,
} from "../lib/optim/transform.ts";

import { FIXTURES, fixtureStep, values } from "./optim_fixture.ts";
import { relativeError } from "../lib/core/compare.ts";

await tf.setBackend("cpu");

for (const name of FIXTURES) {
  Deno.test(`adamw with clip reproduces PyTorch's step on ${name} (cpu)`, async () => {
    const r = await fixtureStep(name);
    console.log(
      `${name}: ${r.count} tensors (clip ${r.clip}), grad-norm rel err ${r.normErr.toExponential(2)}, ` +
        `worst param ${r.worstParam.toExponential(2)} (${r.worstName}), worst step ${
          r.worstUpdate.toExponential(2)
        }`,
    );
    assertLess(r.normErr, 1e-5, "global norm vs output.grad_norm");
    assertLess(r.worstParam, 1e-4, `step1 params, worst ${r.worstName}`);
    assertLess(r.worstUpdate, 1e-4, "step1 - params vs our updates");
  });
}

Deno.test("the step comparison is sharp enough to see the decay mask (negative control)", async () => {
  // Decaying LayerNorm weights (= 1) too moves their step by wd / 1 = 5%: the param check alone would not see
  // it (5e-5 relative), the step check must.
  const r = await fixtureStep(FIXTURES[0], decayAll);
  assert(r.worstUpdate > 1e-2, `decaying every tensor should break parity, worst step ${r.worstUpdate}`);
});

// ---------------------------------------------------------------------------------------------------------
// A hand-written tree-map AdamW (PyTorch's `_single_tensor_adamw`, float64) against the chain, 3 steps.

type Host = Record<string, Float64Array>;

const pytorchAdamW = (
  p: Host,
  grads: Host[],
  o: {
    lr: (t: number) => number;
    b1: number;
    b2: number;
    eps: number;
    wd: number;
    decays: (n: string) => boolean;
  },
): Host => {
  const params = Object.fromEntries(Object.entries(p).map(([k, v]) => [k, Float64Array.from(v)]));
  const m = Object.fromEntries(Object.entries(p).map(([k, v]) => [k, new Float64Array(v.length)]));
  const v = Object.fromEntries(Object.entries(p).map(([k, x]) => [k, new Float64Array(x.length)]));
  grads.forEach((g, t) => {
    const step = t + 1, lr = o.lr(t);
    for (const k of Object.keys(params)) {
      const wd = o.decays(k) ? o.wd : 0;
      const bc1 = 1 - o.b1 ** step, bc2 = 1 - o.b2 ** step;
      for (let i = 0; i < params[k].length; i++) {
        params[k][i] *= 1 - lr * wd;
        m[k][i] = o.b1 * m[k][i] + (1 - o.b1) * g[k][i];
        v[k][i] = o.b2 * v[k][i] + (1 - o.b2) * g[k][i] * g[k][i];
        const denom = Math.sqrt(v[k][i]) / Math.sqrt(bc2) + o.eps;
        params[k][i] -= (lr / bc1) * m[k][i] / denom;
      }
    }
  });
  return params;
};

const randomHost = (seed: number, shapes: Record<string, number[]>): Host => {
  let s = seed;
  const next = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
  return Object.fromEntries(
    Object.entries(shapes).map((
      [k, shape],
    ) => [k, Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, next)]),
  );
};

Deno.test("the chain matches a hand-written PyTorch AdamW over 3 steps (schedule, mask, decay)", async () => {
  const shapes: Record<string, number[]> = {
    "enc.fc.weight": [4, 3],
    "enc.fc.bias": [4],
    "enc.norm.weight": [3],
    "cls_token": [1, 1, 3],
  };
  const p0 = randomHost(1, shapes);
  const gs = [2, 3, 4].map((seed) => randomHost(seed, shapes));
  const toParams = (h: Host): Params =>
    unflatten(
      Object.fromEntries(
        Object.entries(h).map(([k, v]) => [k, tf.tensor(Float32Array.from(v), shapes[k])]),
      ),
    );
  const lr = cosineSchedule({ base: 0.1, final: 0.01, totalSteps: 5, warmupSteps: 2, warmupStart: 0.02 });
  const ref = pytorchAdamW(p0, gs, {
    lr,
    b1: 0.9,
    b2: 0.99,
    eps: 1e-6,
    wd: 0.3,
    decays: (n) => n !== "enc.fc.bias" && n !== "enc.norm.weight",
  });

  const opt = adamw({ lr, b2: 0.99, eps: 1e-6, weightDecay: 0.3 });
  let params = toParams(p0);
  let state = opt.init(params);
  for (const g of gs) {
    const grads = toParams(g);
    const [u, s] = opt.update(grads, state, params);
    const p = applyUpdates(params, u);
    disposeTree(grads, u, params);
    disposeState(state);
    [params, state] = [p, s];
  }
  const flat = flatten(params);
  for (const k of Object.keys(shapes)) assertLess(relativeError(await values(flat[k]), ref[k]), 1e-6, k);
  assertEquals(state.map((s) => ("count" in s ? s.count : -1)), [-1, 3, 3, 3]);
  disposeTree(params);
  disposeState(state);
});

// ---------------------------------------------------------------------------------------------------------
// optax's convergence tests (optax/_src/alias_test.py): parabola and Rosenbrock.

const minimise = async <S>(
  opt: GradientTransformation<S>,
  start: number[],
  grad: (x: Float32Array) => number[],
  steps: number,
): Promise<Float32Array> => {
  let params: Params = { x: tf.tensor1d(start) };
  let state = opt.init(params);
  for (let i = 0; i < steps; i++) {
    const x = flatten(params).x;
    const g = { x: tf.tensor1d(grad(await values(x))) };
    const [u, s] = opt.update(g, state, params);
    const p = applyUpdates(params, u);
    disposeTree(g, u, params);
    disposeState(state);
    [params, state] = [p, s];
  }
  const out = await values(flatten(params).x);
  disposeTree(params);
  disposeState(state);
  return out;
};

const parabolaTarget = [1, -1, 1];
const parabolaGrad = (x: Float32Array) => Array.from(x, (v, i) => 2 * (v - parabolaTarget[i]));
// Rosenbrock with a = 1, b = 100: minimum at (1, 1).
const rosenbrockGrad = ([x, y]: Float32Array) => [-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)];

const close = (x: Float32Array, target: number[], tol: number, what: string) =>
  target.forEach((t, i) => assertAlmostEquals(x[i], t, tol, `${what}[${i}] = ${x[i]}, expected ${t}`));

Deno.test("adam and adamw converge on a parabola", async () => {
  close(await minimise(adam({ lr: 0.1 }), [-1, 10, 1], parabolaGrad, 1000), parabolaTarget, 1e-2, "adam");
  const w = adamw({ lr: 0.1, weightDecay: 1e-4, mask: decayAll });
  close(await minimise(w, [-1, 10, 1], parabolaGrad, 1000), parabolaTarget, 1e-2, "adamw");
});

Deno.test("adam and adamw converge on Rosenbrock", async () => {
  close(await minimise(adam({ lr: 0.01 }), [0, 0], rosenbrockGrad, 3000), [1, 1], 1e-2, "adam");
  const w = adamw({ lr: 0.01, weightDecay: 1e-4, mask: decayAll, clip: 10 });
  close(await minimise(w, [0, 0], rosenbrockGrad, 3000), [1, 1], 2e-2, "adamw");
});

// ---------------------------------------------------------------------------------------------------------

Deno.test("cosineSchedule matches numpy's run of the official cosine_scheduler", () => {
  // Reference values: the official furnace/utils.py cosine_scheduler run in numpy 2.4 / CPython 3.11, with
  // base 1.5e-3, final 1e-5, 300 epochs, 7 iterations per epoch, 10 warmup epochs, start 0.
  const lr = cosineSchedule({ base: 1.5e-3, final: 1e-5, totalSteps: 300 * 7, warmupSteps: 10 * 7 });
  const expected: [number, number][] = [
    [0, 0],
    [1, 2.173913043478261e-05],
    [2, 4.347826086956522e-05],
    [35, 0.0007608695652173914],
    [68, 0.0014782608695652175],
    [69, 0.0015],
    [70, 0.0015],
    [71, 0.0014999991078582578],
    [500, 0.001341041240847132],
    [1000, 0.0008527182785331511],
    [2099, 1.0000892141742233e-05],
  ];
  for (const [i, v] of expected) assertAlmostEquals(lr(i), v, 1e-18, `step ${i}`);
  assertEquals(lr(5000), lr(2099), "past the end the last value holds");
  // No warmup, base == final: the official weight-decay schedule, constant 0.05.
  const wd = cosineSchedule({ base: 0.05, final: 0.05, totalSteps: 2100, warmupSteps: 0 });
  assertEquals([wd(0), wd(1234), wd(2099)], [0.05, 0.05, 0.05]);
  // warmup_start 0.25, 1 of 2 epochs at 3 iterations: [0.25, 0.625, 1.0, 1.0, 0.75, 0.2500000000000001].
  const s = cosineSchedule({ base: 1, final: 0, totalSteps: 6, warmupSteps: 3, warmupStart: 0.25 });
  [0.25, 0.625, 1, 1, 0.75, 0.2500000000000001].forEach((v, i) =>
    assertAlmostEquals(s(i), v, 1e-15, `step ${i}`)
  );
  assertEquals(constantSchedule(3)(17), 3);
  assertThrows(
    () => cosineSchedule({ base: 1, final: 0, totalSteps: 10, warmupSteps: 11 }),
    Error,
    "warmupSteps",
  );
  assertThrows(
    () => cosineSchedule({ base: 1, final: 0, totalSteps: 0, warmupSteps: 0 }),
    Error,
    "totalSteps",
  );
  assertThrows(() => lr(-1), Error, "step");
});

Deno.test("officialDecayMask: no decay for 1-D tensors and .bias, decay for the rest", () => {
  const cases: [string, number[], boolean][] = [
    ["encoder.blocks.0.attn.qkv.weight", [96, 32], true],
    ["encoder.blocks.0.attn.q_bias", [32], false],
    ["encoder.blocks.0.gamma_1", [32], false],
    ["encoder.norm.weight", [32], false],
    ["decoder.head.bias", [24], false],
    ["odd.bias", [2, 2], false],
    ["encoder.cls_token", [1, 1, 32], true],
    ["encoder.patch_embed.proj.weight", [32, 3, 8, 8], true],
  ];
  for (const [name, shape, decays] of cases) {
    const x = tf.zeros(shape);
    assertEquals(officialDecayMask(name, x), decays, name);
    x.dispose();
  }
});

Deno.test("addDecayedWeights adds rate * p only where the mask says, scheduled by count", async () => {
  const params = { a: { weight: tf.tensor2d([[1, 2]]), bias: tf.tensor1d([3]) } };
  const updates = { a: { weight: tf.tensor2d([[0, 0]]), bias: tf.tensor1d([1]) } };
  const t = addDecayedWeights((step) => (step + 1) * 0.5, officialDecayMask);
  const s0 = t.init(params);
  const [u1, s1] = t.update(updates, s0, params);
  const [u2] = t.update(updates, s1, params);
  assertEquals(Array.from(await values(flatten(u1)["a.weight"])), [0.5, 1]);
  assertEquals(Array.from(await values(flatten(u2)["a.weight"])), [1, 2]);
  assertEquals(Array.from(await values(flatten(u2)["a.bias"])), [1]);
  disposeTree(params, updates, u1, u2);
});

Deno.test("clipByGlobalNorm: PyTorch clip_grad_norm_ semantics, on and off", async () => {
  const g = { a: tf.tensor1d([3, 0]), b: { c: tf.tensor2d([[0, 4]]) } }; // norm 5
  assertAlmostEquals((await globalNorm(g).data())[0], 5, 1e-6);
  const [on] = clipByGlobalNorm(1).update(g, {}, g);
  const scale = 1 / (5 + 1e-6);
  assertAlmostEquals((await values(flatten(on).a))[0], 3 * scale, 1e-7);
  assertAlmostEquals((await globalNorm(on).data())[0], 5 * scale, 1e-6);
  const [off] = clipByGlobalNorm(10).update(g, {}, g); // norm below the limit: untouched
  assertEquals(Array.from(await values(flatten(off)["b.c"])), [0, 4]);
  assertEquals((await globalNorm({}).data())[0], 0);
  // Many leaves: the norm is summed in groups (the WebGPU AddN kernel binds at most ~8 inputs).
  const many = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`p${i}`, tf.fill([2], 1)]));
  assertAlmostEquals((await globalNorm(many).data())[0], 10, 1e-5);
  assertThrows(() => clipByGlobalNorm(0), Error, "maxNorm");
  disposeTree(g, on, off, many);
});

Deno.test("chain: typed tuple state, fresh tensors, inputs untouched, helpful errors", async () => {
  const params = { w: tf.tensor1d([1, -2]) };
  const grads = { w: tf.tensor1d([0.5, 0.5]) };
  const opt = chain(identity(), scaleByAdam(), scaleByLearningRate(constantSchedule(0.1)));
  const state = opt.init(params);
  const [updates, next] = opt.update(grads, state, params);
  const [, adamState, lrState] = next;
  assertEquals([adamState.count, lrState.count], [1, 1]);
  // Adam's first step is -lr * sign(g) up to eps.
  const u = await values(flatten(updates).w);
  assertAlmostEquals(u[0], -0.1, 1e-6);
  const inputs = new Set([...tensorsIn(params), ...tensorsIn(grads), ...tensorsIn(state)]);
  for (const t of [...tensorsIn(updates), ...tensorsIn(next)]) {
    assert(!inputs.has(t), "an output aliases an input");
  }
  for (const t of inputs) assert(!t.isDisposed, "update disposed one of its inputs");
  // @ts-expect-error: a state of the wrong shape is a type error, and a runtime error for untyped callers
  assertThrows(() => opt.update(grads, [state[1], state[2]], params), Error, "3 members");
  assertThrows(
    () => opt.update({ v: grads.w }, state, params),
    Error,
    '"v" is in the updates but not in the Adam state',
  );
  disposeTree(params, grads, updates);
  disposeState(state);
  disposeState(next);
});

Deno.test("the tensor count stays flat over 20 adamw updates", () => {
  const params0 = { enc: { weight: tf.randomNormal([8, 4], 0, 1, "float32", 1), bias: tf.zeros([8]) } };
  const opt = adamw({
    lr: cosineSchedule({ base: 1e-3, final: 1e-5, totalSteps: 20, warmupSteps: 5 }),
    clip: 1,
  });
  let params: Params = params0;
  let state = opt.init(params);
  const counts: number[] = [];
  for (let i = 0; i < 20; i++) {
    const grads = { enc: { weight: tf.fill([8, 4], 0.1 * (i + 1)), bias: tf.fill([8], -0.2) } };
    const [u, s] = opt.update(grads, state, params);
    const p = applyUpdates(params, u);
    disposeTree(grads, u, params);
    disposeState(state);
    [params, state] = [p, s];
    counts.push(tf.memory().numTensors);
  }
  assertEquals(new Set(counts).size, 1, `tensor counts per step: ${counts.join(", ")}`);
  disposeTree(params);
  disposeState(state);
});
