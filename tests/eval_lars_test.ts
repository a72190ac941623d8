/**
 * LARS against a float64 transcription of the official PyTorch loop (facebookresearch/mae util/lars.py,
 * the MoCo v3 code): 2-D params adapted and decayed, 1-D params plain momentum SGD, a zero param keeping
 * trust ratio 1, a schedule read per step. Plus the probe's half-cycle cosine against MAE's lr_sched
 * formula, convergence, and the ownership rule.
 */
import { tf } from "../lib/deps.ts";
import { assertAlmostEquals, assertEquals, assertLess } from "../lib/core/std.ts";
import { disposeTree, flatten, type Params } from "../lib/core/tree.ts";
import { key, uniform } from "../lib/core/random.ts";
import { applyUpdates } from "../lib/optim/apply.ts";
import { lars, larsOfficialMask, scaleByLars } from "../lib/optim/lars.ts";
import { disposeState } from "../lib/optim/transform.ts";
import { halfCycleCosine } from "../lib/optim/schedule.ts";

await tf.setBackend("cpu");

type Host = { data: number[]; shape: number[] };

/** The official `LARS.step`, float64, for a dict of params (ndim from the shape). */
const officialLars = (
  params: Record<string, Host>,
  grads: Record<string, number[]>[],
  lrs: number[],
  wd: number,
  momentum = 0.9,
  eta = 0.001,
) => {
  const p = Object.fromEntries(Object.entries(params).map(([k, v]) => [k, [...v.data]]));
  const mu: Record<string, number[]> = {};
  const norm = (x: number[]) => Math.sqrt(x.reduce((s, v) => s + v * v, 0));
  grads.forEach((g, step) => {
    for (const name of Object.keys(p)) {
      let dp = [...g[name]];
      if (params[name].shape.length > 1) {
        dp = dp.map((v, i) => v + wd * p[name][i]);
        const pn = norm(p[name]), un = norm(dp);
        const q = pn > 0 ? (un > 0 ? eta * pn / un : 1) : 1;
        dp = dp.map((v) => v * q);
      }
      mu[name] ??= dp.map(() => 0);
      mu[name] = mu[name].map((m, i) => m * momentum + dp[i]);
      p[name] = p[name].map((v, i) => v - lrs[step] * mu[name][i]);
    }
  });
  return p;
};

const rand = (seed: number, n: number, scale = 1) =>
  Array.from(uniform(key(seed), n), (u) => (u * 2 - 1) * scale);

Deno.test("lars: matches the official PyTorch step over 4 steps (decay, 1-D params, zero param, schedule)", async () => {
  const shapes: Record<string, number[]> = {
    "head.kernel": [5, 3],
    "head.bias": [3],
    "zero.kernel": [2, 2],
    "bn.scale": [4],
  };
  const host: Record<string, Host> = {};
  Object.entries(shapes).forEach(([n, s], i) => {
    const size = s.reduce((a, b) => a * b, 1);
    host[n] = { shape: s, data: n === "zero.kernel" ? new Array(size).fill(0) : rand(10 + i, size) };
  });
  const grads = [0, 1, 2, 3].map((step) =>
    Object.fromEntries(
      Object.entries(shapes).map(([n, s], i) => [
        n,
        rand(100 + 10 * step + i, s.reduce((a, b) => a * b, 1), 0.5),
      ]),
    )
  );
  const lrs = [0.5, 1.0, 0.75, 0.25];
  const wd = 0.05;
  const expected = officialLars(host, grads, lrs, wd);

  const toParams = (x: Record<string, number[]>): Params => {
    const out: Record<string, Record<string, tf.Tensor>> = {};
    for (const [n, v] of Object.entries(x)) {
      const [a, b] = n.split(".");
      (out[a] ??= {})[b] = tf.tensor(v, shapes[n]);
    }
    return out;
  };
  const opt = lars({ lr: (i) => lrs[i], weightDecay: wd });
  let params = toParams(Object.fromEntries(Object.entries(host).map(([n, h]) => [n, h.data])));
  let state = opt.init(params);
  for (const g of grads) {
    const gp = toParams(g);
    const [u, next] = opt.update(gp, state, params);
    const stepped = applyUpdates(params, u);
    disposeTree(params, gp, u);
    disposeState(state);
    params = stepped;
    state = next;
  }
  for (const [name, x] of Object.entries(flatten(params))) {
    const got = await x.data();
    expected[name].forEach((v, i) => assertAlmostEquals(got[i], v, 1e-5, `${name}[${i}]`));
  }
  disposeTree(params);
  disposeState(state);
});

Deno.test("lars: the official mask adapts only tensors with more than one dimension", () => {
  const t1 = tf.ones([3]), t2 = tf.ones([2, 2]);
  assertEquals(larsOfficialMask("x.bias", t1), false);
  assertEquals(larsOfficialMask("x.kernel", t2), true);
  tf.dispose([t1, t2]);
});

Deno.test("lars: converges on a least-squares problem and keeps the tensor count flat", async () => {
  // min ||X w - y||^2 with w [3, 1]: LARS steps are eta * lr * ||w|| sized, so it needs a large lr.
  const X = tf.tensor2d(rand(1, 40 * 3), [40, 3]);
  const wTrue = tf.tensor2d([[1.5], [-2], [0.5]]);
  const y = tf.matMul(X, wTrue);
  const opt = lars({ lr: 20 });
  let params: Params = { w: tf.tensor2d([[0.1], [0.1], [0.1]]) };
  let state = opt.init(params);
  const loss = (p: Params) => tf.mean(tf.square(tf.sub(tf.matMul(X, p.w as tf.Tensor2D), y))) as tf.Scalar;
  const first = (await loss(params).data())[0];
  let count = 0;
  for (let i = 0; i < 400; i++) {
    const g = tf.tidy(() => ({ w: tf.grad((w: tf.Tensor) => loss({ w }))(params.w as tf.Tensor) }));
    const [u, next] = opt.update(g, state, params);
    const stepped = applyUpdates(params, u);
    disposeTree(params, g, u);
    disposeState(state);
    params = stepped;
    state = next;
    if (i === 10) count = tf.memory().numTensors;
  }
  assertEquals(tf.memory().numTensors, count, "tensor count drifted");
  const last = (await loss(params).data())[0];
  assertLess(last, first * 1e-3);
  disposeTree(params);
  disposeState(state);
  tf.dispose([X, wTrue, y]);
});

Deno.test("lars: scaleByLars updates are not the state (disposing them keeps the momentum)", async () => {
  const t = scaleByLars();
  const params = { w: tf.ones([2, 2]) };
  const [u, s] = t.update({ w: tf.ones([2, 2]) }, t.init(params), params);
  disposeTree(u);
  const mu = await (s.mu.w as tf.Tensor).data();
  assertAlmostEquals(mu[0], 0.001 * 2 / 2, 1e-7); // q = eta * ||p|| / ||g|| = 0.001, dp = g * q
});

Deno.test("probe schedule: MAE's lr_sched at fractional epochs", () => {
  const s = halfCycleCosine({ lr: 0.4, minLr: 0.01, epochs: 90, warmupEpochs: 10, itersPerEpoch: 7 });
  const official = (epoch: number) =>
    epoch < 10 ? 0.4 * epoch / 10 : 0.01 + (0.4 - 0.01) * 0.5 * (1 + Math.cos(Math.PI * (epoch - 10) / 80));
  for (const step of [0, 1, 6, 7, 69, 70, 71, 300, 629]) {
    assertAlmostEquals(s(step), official(step / 7), 1e-15);
  }
});
