/**
 * The frozen-feature evaluations against hand computations: BatchNorm1d(affine=False) in training and
 * evaluation mode (PyTorch's biased/unbiased variances, momentum 0.1), soft-target cross-entropy and
 * label smoothing, top-k counting, k-NN against a brute-force DINO vote, pooling; the probe learns a
 * separable problem without leaking tensors.
 */
import { tf } from "../lib/deps.ts";
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "../lib/core/std.ts";
import { key, uniform } from "../lib/core/random.ts";
import { batchNormEval, batchNormInit, batchNormTrain, disposeBatchNorm } from "../lib/nn/batchnorm.ts";
import { countTopK, smoothTargets, softCrossEntropy } from "../lib/eval/heads.ts";
import { classesOf, type FeatureSet, pool } from "../lib/eval/features.ts";
import { knnClassify } from "../lib/eval/knn.ts";
import { disposeProbe, trainProbe } from "../lib/eval/probe.ts";

await tf.setBackend("cpu");

const rand = (seed: number, n: number) => Array.from(uniform(key(seed), n), (u) => u * 2 - 1);

Deno.test("batchnorm: training normalises by batch stats, running stats use the unbiased variance", async () => {
  const x = [[1, 10], [2, 20], [4, 60]]; // column means 7/3, 30; biased vars 14/9, 1400/3
  const xs = tf.tensor2d(x);
  const s0 = batchNormInit(2);
  const { y, state } = batchNormTrain(xs, s0, { eps: 1e-6 });
  const mean = [7 / 3, 30], vb = [14 / 9, 1400 / 3], vu = vb.map((v) => v * 3 / 2);
  const got = await y.data();
  x.forEach((row, i) =>
    row.forEach((v, j) => assertAlmostEquals(got[i * 2 + j], (v - mean[j]) / Math.sqrt(vb[j] + 1e-6), 1e-5))
  );
  const rm = await state.mean.data(), rv = await state.variance.data();
  [0, 1].forEach((j) => {
    assertAlmostEquals(rm[j], 0.1 * mean[j], 1e-5);
    assertAlmostEquals(rv[j], 0.9 + 0.1 * vu[j], 1e-3);
  });
  const e = await batchNormEval(tf.tensor2d([[rm[0], rm[1] + Math.sqrt(rv[1] + 1e-6)]]), state).data();
  assertAlmostEquals(e[0], 0, 1e-5);
  assertAlmostEquals(e[1], 1, 1e-5);
  assertThrows(() => batchNormTrain(tf.ones([1, 2]) as tf.Tensor2D, s0), Error, "at least 2");
  disposeBatchNorm(s0);
  disposeBatchNorm(state);
});

Deno.test("heads: smoothed targets, soft cross-entropy = label-smoothing CE, top-k with ties", async () => {
  const t = smoothTargets(Int32Array.from([2, 0]), 4, 0.1);
  assertEquals([...t].map((v) => +v.toFixed(6)), [0.025, 0.025, 0.925, 0.025, 0.925, 0.025, 0.025, 0.025]);
  assertThrows(() => smoothTargets(Int32Array.from([4]), 4), Error, "outside 0..3");
  const z = [[1, 2, 0.5, -1], [0, 0, 3, 1]];
  const loss = await softCrossEntropy(tf.tensor2d(z), tf.tensor2d(t, [2, 4])).data();
  // timm LabelSmoothingCrossEntropy: (1 - s) * nll + s * mean(-logp).
  const ls = z.map((row, i) => {
    const lse = Math.log(row.reduce((s, v) => s + Math.exp(v), 0));
    const logp = row.map((v) => v - lse);
    const y = [2, 0][i];
    return 0.9 * -logp[y] + 0.1 * -logp.reduce((a, b) => a + b, 0) / 4;
  });
  assertAlmostEquals(loss[0], (ls[0] + ls[1]) / 2, 1e-5);
  const logits = [0.1, 0.5, 0.5, 0.2, /**/ 1, 1, 1, 1];
  assertEquals(countTopK(logits, Int32Array.from([2, 3]), 4, 1), 0); // class 1 wins the tie; class 3 is last
  assertEquals(countTopK(logits, Int32Array.from([2, 3]), 4, 2), 1);
  assertEquals(countTopK(logits, Int32Array.from([1, 0]), 4, 1), 2);
});

Deno.test("features: cls and mean pooling; labels give the class count", async () => {
  const tokens = tf.tensor3d([[[1, 2], [3, 4], [5, 8]]]);
  assertEquals([...await pool(tokens, "cls").data()], [1, 2]);
  assertEquals([...await pool(tokens, "mean").data()], [4, 6]);
  const set = (labels: number[]): FeatureSet => ({
    features: new Float32Array(labels.length),
    labels: Int32Array.from(labels),
    count: labels.length,
    dim: 1,
  });
  assertEquals(classesOf(set([0, 3]), set([7])), 8);
  assertThrows(() => classesOf(set([0, -1])), Error, "unlabelled");
});

Deno.test("knn: matches a brute-force DINO vote (cosine top-k, exp(sim / T) weights)", async () => {
  const n = 60, m = 25, d = 6, C = 4, k = 5, T = 0.07;
  const tr = rand(1, n * d), te = rand(2, m * d);
  const ytr = Int32Array.from({ length: n }, (_, i) => i % C),
    yte = Int32Array.from({ length: m }, (_, i) => (i * 3) % C);
  const unit = (v: number[]) => {
    const s = Math.sqrt(v.reduce((a, b) => a + b * b, 0));
    return v.map((x) => x / s);
  };
  let hits = 0;
  for (let i = 0; i < m; i++) {
    const q = unit(te.slice(i * d, i * d + d));
    const sims = Array.from({ length: n }, (_, j) => {
      const r = unit(tr.slice(j * d, j * d + d));
      return { j, s: r.reduce((a, v, c) => a + v * q[c], 0) };
    }).sort((a, b) => b.s - a.s).slice(0, k);
    const votes = new Array(C).fill(0);
    for (const { j, s } of sims) votes[ytr[j]] += Math.exp(s / T);
    if (votes.indexOf(Math.max(...votes)) === yte[i]) hits++;
  }
  const acc = await knnClassify(
    { features: Float32Array.from(tr), labels: ytr, count: n, dim: d },
    { features: Float32Array.from(te), labels: yte, count: m, dim: d },
    { numClasses: C, k, temperature: T, chunk: 7 },
  );
  assertAlmostEquals(acc.top1, 100 * hits / m, 1e-9);
  assertEquals(acc.count, m);
});

Deno.test("probe: learns separable classes with the official recipe; no tensor leaks", async () => {
  // Four Gaussian clusters in 8-D, shifted far from the origin (BatchNorm has to centre them).
  const C = 4, d = 8, per = 64;
  const make = (seed: number): FeatureSet => {
    const noise = rand(seed, C * per * d);
    const f = new Float32Array(C * per * d), labels = new Int32Array(C * per);
    for (let i = 0; i < C * per; i++) {
      labels[i] = i % C;
      for (let j = 0; j < d; j++) f[i * d + j] = 5 + (j === labels[i] ? 2 : 0) + 0.5 * noise[i * d + j];
    }
    return { features: f, labels, count: C * per, dim: d };
  };
  const before = tf.memory().numTensors;
  const r = await trainProbe(make(1), make(2), {
    numClasses: C,
    epochs: 40,
    batchSize: 32,
    blr: 40,
    warmupEpochs: 3,
    key: key(0),
  });
  assertEquals(r.stepsPerEpoch, 8);
  assertAlmostEquals(r.lr, 40 * 32 / 256, 1e-12);
  assert(r.accuracy.top1 > 95, `top1 ${r.accuracy.top1}`);
  assertEquals(r.accuracy.top5, 100);
  disposeProbe(r.probe);
  assertEquals(tf.memory().numTensors, before);
});
