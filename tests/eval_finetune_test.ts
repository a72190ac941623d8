/**
 * Fine-tuning against the official rules, written out by hand: BEiT's layer ids and lr scales, the
 * no-decay set, one AdamW step with parameter groups (lr x scale, decay x lr x scale); timm's mixup and
 * CutMix (targets, box, corrected lam, Beta draws); and a short run on synthetic data that keeps its
 * tensor count flat.
 */
import { tf } from "../lib/deps.ts";
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "../lib/core/std.ts";
import { key, split } from "../lib/core/random.ts";
import { disposeTree, flatten, type Params, unflatten } from "../lib/core/tree.ts";
import { applyUpdates } from "../lib/optim/apply.ts";
import { disposeState } from "../lib/optim/transform.ts";
import { sampler } from "../lib/core/random.ts";
import {
  classifierApply,
  classifierInit,
  finetuneOptimizer,
  finetuneSchedule,
  finetuneSettings,
} from "../lib/eval/finetune.ts";
import { runFinetune } from "../lib/eval/finetune_run.ts";
import { finetuneDecayMask, layerIdOf, layerScaleOf } from "../lib/optim/layer_decay.ts";
import { disposeEncoder, randomEncoder } from "../lib/eval/load.ts";
import { betaSample, mixBatch } from "../lib/eval/mixup.ts";
import { studentPreset } from "../lib/models/presets.ts";

await tf.setBackend("cpu");

Deno.test("layer decay: BEiT's layer ids and scales decay^(L + 1 - id)", () => {
  const L = 12, d = 0.75;
  const official = Array.from({ length: L + 2 }, (_, i) => d ** (L + 1 - i)); // LayerDecayValueAssigner
  const cases: [string, number][] = [
    ["clsToken", 0],
    ["patchEmbed.kernel", 0],
    ["patchEmbed.bias", 0],
    ["blocks.0.attn.qkv.kernel", 1],
    ["blocks.11.gamma2", 12],
    ["fcNorm.scale", 13],
    ["head.kernel", 13],
  ];
  for (const [name, id] of cases) {
    assertEquals(layerIdOf(name, L), id, name);
    assertAlmostEquals(layerScaleOf(d, L)(name), official[id], 1e-15, name);
  }
  const t1 = tf.ones([4]), t2 = tf.ones([4, 4]), t3 = tf.ones([1, 1, 4]);
  assertEquals(finetuneDecayMask("blocks.0.attn.qBias", t1), false);
  assertEquals(finetuneDecayMask("head.bias", t1), false);
  assertEquals(finetuneDecayMask("clsToken", t3), false);
  assertEquals(finetuneDecayMask("blocks.0.mlp.fc1.kernel", t2), true);
  tf.dispose([t1, t2, t3]);
});

Deno.test("finetune optimizer: two steps equal PyTorch AdamW over BEiT's parameter groups", async () => {
  const depth = 2, decay = 0.8, wd = 0.05, lrs = [0.1, 0.05];
  const init: Record<string, number[][]> = {
    clsToken: [[0.5, -0.2]],
    "patchEmbed.kernel": [[0.3, 0.1], [-0.4, 0.2]],
    "blocks.1.mlp.fc1.kernel": [[1, 2], [3, 4]],
    "blocks.1.mlp.fc1.bias": [[0.1, 0.2]],
    "head.kernel": [[0.7, -0.7], [0.2, 0.1]],
  };
  const grads = [1, 2].map((s) =>
    Object.fromEntries(
      Object.entries(init).map(([n, v]) => [
        n,
        v.map((r, i) => r.map((_, j) => Math.sin(s * 3 + i * 2 + j + n.length))),
      ]),
    )
  );
  const shapeOf = (
    n: string,
    v: number[][],
  ) => (n === "clsToken" ? [1, 1, 2] : n.endsWith(".bias") ? [2] : [v.length, 2]);
  const toParams = (x: Record<string, number[][]>): Params =>
    unflatten(Object.fromEntries(Object.entries(x).map(([n, v]) => [n, tf.tensor(v.flat(), shapeOf(n, v))])));
  // PyTorch AdamW per group: p *= 1 - lr_g * wd_g; m, v; p -= lr_g * mhat / (sqrt(vhat) + eps).
  const expected: Record<string, number[]> = {};
  for (const [n, v] of Object.entries(init)) {
    const scale = decay ** (depth + 1 - layerIdOf(n, depth));
    const decays = n !== "clsToken" && !n.endsWith(".bias");
    let p = v.flat(), m = p.map(() => 0), s = p.map(() => 0);
    grads.forEach((g, t) => {
      const gf = g[n].flat(), lr = lrs[t] * scale;
      if (decays) p = p.map((x) => x * (1 - lr * wd));
      m = m.map((x, i) => 0.9 * x + 0.1 * gf[i]);
      s = s.map((x, i) => 0.999 * x + 0.001 * gf[i] ** 2);
      const bc1 = 1 - 0.9 ** (t + 1), bc2 = 1 - 0.999 ** (t + 1);
      p = p.map((x, i) => x - lr * (m[i] / bc1) / (Math.sqrt(s[i]) / Math.sqrt(bc2) + 1e-8));
    });
    expected[n] = p;
  }
  const opt = finetuneOptimizer({ lr: (i) => lrs[i], weightDecay: wd, layerDecay: decay, depth });
  let params = toParams(init);
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
  for (const [n, x] of Object.entries(flatten(params))) {
    const got = await x.data();
    expected[n].forEach((v, i) => assertAlmostEquals(got[i], v, 1e-6, `${n}[${i}]`));
  }
  disposeTree(params);
  disposeState(state);
  // The official cosine_scheduler with start_warmup_value 0.
  const s = finetuneSchedule({ lr: 1, minLr: 1e-6, totalSteps: 10, warmupSteps: 3 });
  assertEquals([s(0), s(1), s(2)], [0, 0.5, 1]);
  assertAlmostEquals(s(9), 1e-6 + 0.5 * (1 - 1e-6) * (1 + Math.cos(Math.PI * 6 / 7)), 1e-12);
});

Deno.test("mixup: timm's batch mixing, CutMix box and corrected lam, Beta draws", () => {
  const H = 8, W = 8, B = 4, px = H * W * 3;
  const images = new Float32Array(B * px).map((_, i) => Math.floor(i / px)); // image i is all i
  const labels = Int32Array.from([0, 1, 2, 3]);
  const mix = mixBatch(
    images,
    labels,
    H,
    W,
    { mixup: 0.8, cutmix: 0, smoothing: 0.1, numClasses: 4 },
    key(1),
  );
  assert(!mix.cutmix && mix.lam > 0 && mix.lam < 1);
  assertAlmostEquals(mix.images[0], 3 * (1 - mix.lam), 1e-6); // image 0 mixed with image 3 (x.flip(0))
  const off = 0.1 / 4, on = 0.9 + off;
  assertAlmostEquals(mix.targets[0], mix.lam * on + (1 - mix.lam) * off, 1e-6);
  assertAlmostEquals(mix.targets[3], mix.lam * off + (1 - mix.lam) * on, 1e-6);
  for (let seed = 0; seed < 20; seed++) {
    const cut = mixBatch(
      images,
      labels,
      H,
      W,
      { mixup: 0, cutmix: 1, smoothing: 0, numClasses: 4 },
      key(seed),
    );
    assert(cut.cutmix);
    // lam is the share of image 1's own pixels after pasting image 2's box.
    let own = 0;
    for (let p = 0; p < H * W; p++) if (cut.images[px + 3 * p] === 1) own++;
    assertAlmostEquals(cut.lam, own / (H * W), 1e-12);
    assertAlmostEquals(cut.targets[4 + 1] + cut.targets[4 + 2], 1, 1e-6);
  }
  const none = mixBatch(images, labels, H, W, { mixup: 0, cutmix: 0, smoothing: 0, numClasses: 4 }, key(0));
  assertEquals(none.lam, 1);
  assertEquals([...none.targets.slice(0, 4)], [1, 0, 0, 0]);
  // Beta(a, b) has mean a / (a + b); alpha < 1 takes the boosted Gamma path.
  for (const [a, b] of [[0.8, 0.8], [0.2, 0.2], [2, 5]]) {
    const s = sampler(key(42));
    let sum = 0;
    const n = 4000;
    for (let i = 0; i < n; i++) sum += betaSample(s, a, b);
    assertAlmostEquals(sum / n, a / (a + b), 0.02, `Beta(${a}, ${b})`);
  }
});

Deno.test("finetune: the classifier copies the encoder (fc_norm from its norm) and needs a key for drop path", async () => {
  const cfg = studentPreset("micro", { imageSize: 16, patchSize: 8, dropPath: 0 });
  const enc = randomEncoder(cfg, key(3));
  const p = classifierInit(key(4), enc, 5);
  assertEquals(p.head.kernel.shape, [64, 5]);
  assertEquals([...await p.head.bias!.data()], [0, 0, 0, 0, 0]);
  assertEquals(await p.fcNorm.scale.data(), await enc.params.norm.scale.data());
  assert(p.clsToken !== enc.params.clsToken);
  const images = tf.zeros([2, 16, 16, 3]) as tf.Tensor4D;
  assertEquals(classifierApply(p, cfg, enc.pos, images, { training: false }).shape, [2, 5]);
  assertThrows(
    () => classifierApply(p, { ...cfg, dropPath: 0.1 }, enc.pos, images, { training: true }),
    Error,
    "a key is required",
  );
  disposeTree(p);
  disposeEncoder(enc);
  images.dispose();
});

Deno.test("finetune: a short run on synthetic data scores the held-out split and keeps the tensor count flat", async () => {
  const cfg = studentPreset("micro", { imageSize: 16, patchSize: 8, dropPath: 0 });
  const enc = randomEncoder(cfg, split(key(5))[0]);
  const before = tf.memory().numTensors;
  const counts: number[] = [];
  const evals: number[] = [];
  const r = await runFinetune(enc, {
    source: { kind: "synthetic", size: 24 },
    numClasses: 10,
    settings: { ...finetuneSettings.micro, batchSize: 8, epochs: 1 },
    key: key(0),
    onStep: ({ loss }) => {
      assert(Number.isFinite(loss));
      counts.push(tf.memory().numTensors);
    },
    onEval: ({ accuracy }) => evals.push(accuracy.count),
  });
  assertEquals(r.steps, 3);
  assertEquals(counts[2], counts[1]);
  assertEquals(evals, [3]); // the held-out split of 24 synthetic images is ceil(24 / 10)
  disposeTree(r.params);
  assertEquals(tf.memory().numTensors, before);
  disposeEncoder(enc);
});
