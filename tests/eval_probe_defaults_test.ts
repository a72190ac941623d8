/**
 * The linear probe's guards: non-finite features, losses or logits stop it naming the model, and the task
 * refuses an existing `--out` before any work.
 */
import { assert, assertEquals, assertRejects } from "../lib/core/std.ts";
import { key, uniform } from "../lib/core/random.ts";
import type { FeatureSet } from "../lib/eval/features.ts";
import { trainProbe } from "../lib/eval/probe.ts";
import { startRuntime } from "../lib/core/runtime.ts";
import { TEST_BACKEND, withTmp } from "./helpers.ts";

await startRuntime(TEST_BACKEND);

const clusters = (seed: number, perClass: number): FeatureSet => {
  const C = 4, d = 16, n = C * perClass;
  const u = uniform(key(seed), n * d);
  const features = new Float32Array(n * d), labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % C;
    for (let j = 0; j < d; j++) {
      features[i * d + j] = 0.3 * (u[i * d + j] * 2 - 1) + (j === labels[i] ? 0.6 : 0);
    }
  }
  return { features, labels, count: n, dim: d };
};

Deno.test("probe: non-finite features, losses or logits stop it, naming the model", async () => {
  const train = clusters(8, 16), val = clusters(9, 4);
  const o = { numClasses: 4, epochs: 1, lr: 0.01, key: key(0), modelName: "runs/x step 3" };
  const bad = { ...train, features: train.features.slice() };
  bad.features[5] = NaN;
  await assertRejects(() => trainProbe(bad, val, o), Error, "training features of runs/x step 3");
  const inf = { ...val, features: val.features.slice() };
  inf.features[0] = -Infinity;
  await assertRejects(() => trainProbe(train, inf, o), Error, "held-out features of runs/x step 3");
  // An lr that overflows the head: its loss, or its held-out logits, are not finite.
  await assertRejects(() => trainProbe(train, val, { ...o, epochs: 3, lr: 1e39 }), Error, "runs/x step 3");
});

Deno.test("probe task: an existing --out is refused before any work", async () => {
  await withTmp("probe-task-", async (dir) => {
    const out = `${dir}/r.json`;
    await Deno.writeTextFile(out, "{}");
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "tasks/probe.ts", "--checkpoint", "random", "--data", "synthetic:40", "--out", out],
      stdout: "piped",
      stderr: "piped",
      env: { CAEV2_BACKEND: TEST_BACKEND },
    }).output();
    const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
    assertEquals(r.code, 1);
    assert(text.includes("--force") && !text.includes("features:"), text);
    assertEquals(await Deno.readTextFile(out), "{}");
  });
});
