/**
 * Any optimizer's state to a checkpoint and back (lib/optim/state_tree.ts, lib/train/opt_state.ts): AdamW,
 * LARS and fine-tuning's layer-decayed AdamW round-trip exactly; every mismatch is named; a checkpoint in the
 * older AdamW-only layout still resumes to exactly the uninterrupted run; and the one training state
 * (lib/optim/train_state.ts) steps as the optimizer does.
 */
import { tf } from "../lib/deps.ts";
import { assertEquals, assertThrows } from "../lib/core/std.ts";
import { disposeTree, type Params } from "../lib/core/tree.ts";
import { adamw } from "../lib/optim/adamw.ts";
import { lars } from "../lib/optim/lars.ts";
import { scaleByParamScale } from "../lib/optim/layer_decay.ts";
import { applyUpdates } from "../lib/optim/apply.ts";
import { chain, disposeState, type GradientTransformation, tensorsIn } from "../lib/optim/transform.ts";
import { flattenState, unflattenState } from "../lib/optim/state_tree.ts";
import { applyGradients, disposeTrainState, initTrainState } from "../lib/optim/train_state.ts";
import { optStateFromFlat, optStateToFlat } from "../lib/train/opt_state.ts";
import { loadCheckpoint, saveCheckpoint, toTensors } from "../lib/train/checkpoint.ts";
import { withTmp } from "./helpers.ts";

await tf.setBackend("cpu");

const params = (): Params => ({
  w: tf.tensor2d([[0.5, -1], [2, 0.25]]),
  b: tf.tensor1d([0.1, -0.2]),
  nested: { v: tf.tensor1d([3]) },
});
const grads = (k: number): Params => ({
  w: tf.tensor2d([[k, -0.5], [0.25, 1]]),
  b: tf.tensor1d([0.3, k]),
  nested: { v: tf.tensor1d([-k]) },
});

/** Runs `n` updates and returns the state (its params disposed). */
const stateAfter = <S>(opt: GradientTransformation<S>, n: number): S => {
  let p = params();
  let s = opt.init(p);
  for (let k = 1; k <= n; k++) {
    const g = grads(k);
    const [u, next] = opt.update(g, s, p);
    const stepped = applyUpdates(p, u);
    disposeTree(p, g, u);
    disposeState(s);
    [p, s] = [stepped, next];
  }
  disposeTree(p);
  return s;
};

/** Every tensor's values and every host value, in tree order. */
const snapshot = (s: unknown): string =>
  JSON.stringify({ host: flattenState(s).host, tensors: tensorsIn(s).map((t) => Array.from(t.dataSync())) });

const optimizers: [string, () => GradientTransformation<unknown>][] = [
  ["adamw (clip, moments, decay, lr)", () => adamw({ lr: 1e-2, clip: 1 })],
  ["lars (momentum, trust ratio)", () => lars({ lr: 0.1 })],
  [
    "fine-tuning's layer-decayed adamw",
    () => chain(adamw({ lr: 1e-2 }), scaleByParamScale((n) => (n === "b" ? 0.5 : 1))),
  ],
];

for (const [name, make] of optimizers) {
  Deno.test(`${name}: its state survives a checkpoint's flattening exactly`, async () => {
    const opt = make();
    const s = stateAfter(opt, 3);
    const before = snapshot(s);
    const flat = optStateToFlat(s);
    // Through JSON and copies, as a checkpoint file would carry it.
    const host = JSON.parse(JSON.stringify(flat.host));
    const copies = Object.fromEntries(Object.entries(flat.tensors).map(([n, t]) => [n, tf.clone(t)]));
    const p = params();
    const restored = optStateFromFlat(opt, p, copies, host, "ck");
    assertEquals(snapshot(restored), before);
    // And it goes on as the original does: one more update from each gives the same numbers.
    const g = grads(4);
    const [u1, s1] = opt.update(g, restored, p);
    const [u2, s2] = opt.update(g, s, p);
    assertEquals(snapshot([u1, s1]), snapshot([u2, s2]));
    disposeTree(p, g, u1, u2);
    for (const x of [s, s1, s2, restored]) disposeState(x);
    await Promise.resolve();
  });
}

Deno.test("flattening names AdamW's tensors by their path in the state tree", () => {
  const opt = adamw({ lr: 1e-2 });
  const p = params();
  const s = opt.init(p);
  const { tensors, host } = optStateToFlat(s);
  assertEquals(Object.keys(tensors).sort(), [
    "1.mu.b",
    "1.mu.nested.v",
    "1.mu.w",
    "1.nu.b",
    "1.nu.nested.v",
    "1.nu.w",
  ]);
  assertEquals(host, {
    tree: [{}, {
      count: 0,
      mu: { w: null, b: null, nested: { v: null } },
      nu: { w: null, b: null, nested: { v: null } },
    }, {
      count: 0,
    }, { count: 0 }],
  });
  disposeTree(p);
  disposeState(s);
});

Deno.test("a state that does not fit the optimizer is refused, naming the part", () => {
  const opt = adamw({ lr: 1e-2 });
  const p = params();
  const s = opt.init(p);
  const flat = optStateToFlat(s);
  const without = (n: string) => Object.fromEntries(Object.entries(flat.tensors).filter(([k]) => k !== n));
  const cases: [string, Readonly<Record<string, tf.Tensor>>, unknown, string][] = [
    ["a missing moment", without("1.nu.w"), flat.host, `ck: optimizer state "1.nu.w" is missing`],
    [
      "a wrong shape",
      { ...flat.tensors, "1.mu.w": flat.tensors["1.mu.b"] },
      flat.host,
      `ck: optimizer state "1.mu.w" has shape [2], expected [2,2]`,
    ],
    [
      "a tensor of no part",
      { ...flat.tensors, "1.mu.extra": flat.tensors["1.mu.b"] },
      flat.host,
      "1 optimizer state tensor(s) belong to no part of this optimizer's state (1.mu.extra)",
    ],
    [
      "a count of the wrong type",
      flat.tensors,
      { tree: [{}, { count: "3", mu: {}, nu: {} }, { count: 0 }, { count: 0 }] },
      `ck: optimizer state "1.count" is a string, expected a number`,
    ],
    [
      "another optimizer's tree",
      flat.tensors,
      { tree: [{}, {}] },
      `ck: optimizer state "(root)" is a tuple of 2`,
    ],
    ["no tree at all", flat.tensors, { counts: 3 }, "ck: the optimizer state's host part is not { tree }"],
    [
      "a count left out",
      flat.tensors,
      { tree: [{}, { mu: {}, nu: {} }, { count: 0 }, { count: 0 }] },
      `ck: optimizer state "1.count" is missing, expected a number`,
    ],
  ];
  for (const [what, tensors, host, message] of cases) {
    const e = assertThrows(() => optStateFromFlat(opt, p, tensors, host, "ck"), Error);
    if (!e.message.includes(message)) throw new Error(`${what}: "${e.message}" lacks "${message}"`);
  }
  // LARS's state is not AdamW's.
  const e = assertThrows(() => optStateFromFlat(lars({ lr: 0.1 }), p, flat.tensors, flat.host, "ck"), Error);
  if (!e.message.startsWith("ck: optimizer state")) throw new Error(e.message);
  disposeTree(p);
  disposeState(s);
});

Deno.test("the older AdamW-only layout (mu.*, nu.*, counts) is read as the same state; never as LARS's", () => {
  const opt = adamw({ lr: 1e-2, clip: 1 });
  const s = stateAfter(opt, 2);
  const [, adam, decay, lr] = s;
  const tensors: Record<string, tf.Tensor> = {};
  for (const [n, t] of Object.entries(optStateToFlat(s).tensors)) tensors[n.replace(/^1\./, "")] = t;
  const legacyHost = { adam: adam.count, decay: decay.count, lr: lr.count };
  const p = params();
  const restored = optStateFromFlat(opt, p, tensors, legacyHost, "old ck");
  assertEquals(snapshot(restored), snapshot(s));
  const e = assertThrows(() => optStateFromFlat(lars({ lr: 0.1 }), p, tensors, legacyHost, "old ck"), Error);
  assertEquals(
    e.message,
    "old ck: its optimizer state is in the AdamW-only layout of older checkpoints, and this run's optimizer is not AdamW",
  );
  disposeTree(p);
  disposeState(s);
});

Deno.test("flattenState refuses what JSON cannot hold", () => {
  assertThrows(() => flattenState({ count: NaN }), Error, `"count" is NaN, which JSON cannot hold`);
  assertThrows(() => flattenState([{ f: () => 1 }]), Error, `"0.f" is a function`);
  assertThrows(
    () => unflattenState({ a: tf.scalar(1) }, { tensors: {}, host: { a: null, b: 1 } }, "x"),
    Error,
    `x: optimizer state "(root)" has entries this optimizer does not: b`,
  );
});

Deno.test("the training state steps as the optimizer does, counts its updates, and frees the gradients", async () => {
  const opt = adamw({ lr: 0.1 });
  let s = initTrainState(opt, params(), [1, 2]);
  const live = tf.memory().numTensors;
  for (let k = 1; k <= 3; k++) {
    const next = applyGradients(opt, s, grads(k));
    disposeTrainState(s);
    s = next;
    assertEquals(tf.memory().numTensors, live);
  }
  assertEquals(s.step, 3);
  assertEquals(s.key, [1, 2]);
  const ref = stateAfter(opt, 3);
  assertEquals(snapshot(s.opt), snapshot(ref));
  disposeTrainState(s);
  disposeState(ref);
  await Promise.resolve();
});

const runTask = (args: string[]) =>
  new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../tasks/pretrain.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();

Deno.test("a run whose checkpoint has the older AdamW-only layout resumes to exactly the uninterrupted run", async () => {
  await withTmp("caev2-legacy-opt-", async (dir) => {
    const common = ["--image-size", "32", "--patch-size", "8", "--batch-size", "4", "--steps", "8"];
    const more = ["--checkpoint-every", "4", "--keep-checkpoints", "5", "--seed", "7", "--backend", "cpu"];
    const full = await runTask([...common, ...more, "--out", `${dir}/full`]);
    assertEquals(full.code, 0, new TextDecoder().decode(full.stderr));
    const ref = await Deno.readTextFile(`${dir}/full/metrics.jsonl`);

    // The same run, rolled back to its step-4 checkpoint rewritten as the older layout wrote it.
    await Deno.mkdir(`${dir}/old/checkpoints`, { recursive: true });
    for (const e of Deno.readDirSync(`${dir}/full`)) {
      if (e.isFile) await Deno.copyFile(`${dir}/full/${e.name}`, `${dir}/old/${e.name}`);
    }
    const loaded = await loadCheckpoint(`${dir}/full/checkpoints/step-000004.safetensors`);
    if (loaded._tag === "Left") throw new Error(loaded.left);
    const ck = loaded.right;
    const tree =
      (ck.meta.optHost as { tree: [unknown, { count: number }, { count: number }, { count: number }] }).tree;
    const opt = toTensors(ck.opt);
    const legacy = Object.fromEntries(Object.entries(opt).map(([n, t]) => [n.replace(/^1\./, ""), t]));
    assertEquals(Object.keys(legacy).every((n) => /^(mu|nu)\./.test(n)), true);
    const params = toTensors(ck.params);
    await saveCheckpoint(`${dir}/old`, 4, {
      params,
      opt: legacy,
      meta: { ...ck.meta, optHost: { adam: tree[1].count, decay: tree[2].count, lr: tree[3].count } },
    });
    tf.dispose([...Object.values(params), ...Object.values(opt)]);

    const resumed = await runTask(["--resume", `${dir}/old`, "--backend", "cpu"]);
    assertEquals(resumed.code, 0, new TextDecoder().decode(resumed.stderr));
    assertEquals(await Deno.readTextFile(`${dir}/old/metrics.jsonl`), ref);
    // What it writes from then on is the state-tree layout.
    const last = await loadCheckpoint(`${dir}/old/checkpoints/step-000008.safetensors`);
    if (last._tag === "Left") throw new Error(last.left);
    assertEquals("tree" in (last.right.meta.optHost as object), true);
    assertEquals(Object.keys(last.right.opt).every((n) => n.startsWith("1.")), true);
  });
});
