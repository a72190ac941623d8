/**
 * The autotune pass (lib/bench/tune.ts) and the tile table's install (lib/core/kernels/tile_table.ts) on
 * the WebGPU adapter present (llvmpipe on the CPU machines): small shapes and a two-tile space, so that
 * the suite takes a few seconds there. Pure logic (parser, lookup, candidates) is in
 * tests/tile_table_test.ts. Skipped where no WebGPU adapter exists.
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { selectBackend } from "../../lib/core/backend.ts";
import { planMatMul, registerFastMatMul, runMatMul, setGemmChooser } from "../../lib/core/kernels/matmul.ts";
import { activeTileTable, installTileTable, readTileTable } from "../../lib/core/kernels/tile_table.ts";
import {
  QUICK_TIMING,
  recordShapes,
  stepShapes,
  tileTableOf,
  type TuneOptions,
  tuneShapes,
  writeTileTable,
} from "../../lib/bench/tune.ts";
import { withTmp } from "../helpers.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "../../lib/core/std.ts";

const info = await selectBackend("webgpu").catch(() => undefined);
const hasWebGPU = info !== undefined && tf.getBackend() === "webgpu";

const SMALL = { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 }; // the default rule's tile for these shapes
const T32 = { bm: 32, bn: 32, bk: 16, tm: 4, tn: 4 };
const opts: TuneOptions = {
  space: {
    tiles: [SMALL, T32],
    splits: [1, 4],
    accumulate: ["f32"],
    buffers: [1, 2],
    unroll: true,
    subgroup: true,
    top: 1,
  },
  timing: { ...QUICK_TIMING, steps: 3, targetMs: 2, budgetMs: 100 },
};
const shape = (m: number, n: number, k: number, batch: number, transA: boolean, transB: boolean) => ({
  m,
  n,
  k,
  batch,
  transA,
  transB,
  precision: "f32" as const,
});
const shapes = [
  { shape: shape(40, 36, 64, 1, false, false), calls: 2 },
  { shape: shape(37, 37, 16, 3, false, true), calls: 1 },
  { shape: shape(48, 32, 1024, 1, true, false), calls: 1 }, // a weight gradient: split K is tried
];

/** Runs `f` with environment variables set, then puts them back (this process runs every suite). */
const withEnv = async (vars: Record<string, string>, f: () => Promise<void>) => {
  const before = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  for (const [k, v] of Object.entries(vars)) Deno.env.set(k, v);
  try {
    await f();
  } finally {
    for (const [k, v] of Object.entries(before)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  }
};

const webgpuTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, ignore: !hasWebGPU, sanitizeOps: false, sanitizeResources: false, fn });

webgpuTest("tune: picks a correct candidate per shape and writes a table that reads back", async () => {
  const sofar: number[] = [];
  const r = await tuneShapes(shapes, "f32", {
    ...opts,
    onShape: (partial, total) => {
      assertEquals(total, 3);
      sofar.push(partial.entries.length);
    },
  });
  assertEquals(sofar, [1, 2, 3], "the table so far after each shape (what bench --tune writes)");
  assertEquals(r.entries.length, 3);
  for (const o of r.outcomes) {
    const ok = o.candidates.filter((c) => c.ms !== undefined);
    assert(ok.length >= 2, `${o.candidates.length} candidates ran`);
    assert(ok.every((c) => c.relErr! <= 1e-4), "every accepted candidate matches the default plan");
    const chosen = o.entry!.choice;
    assert(
      ok.some((c) => c.choice.tile.bm === chosen.tile.bm && c.choice.splits === chosen.splits),
      "the entry is one of the candidates that ran",
    );
    assertEquals(o.entry!.calls, o.calls);
  }
  assert(r.outcomes[2].candidates.some((c) => c.choice.splits > 1), "split K tried for the long K");
  assert(
    r.outcomes.every((o) =>
      o.candidates.some((c) => c.choice.buffers === 2 && c.ms !== undefined) &&
      o.candidates.some((c) => c.choice.unroll && c.ms !== undefined)
    ),
    "double-buffered and unrolled candidates ran (and matched the default plan)",
  );
  if ((info?.features ?? []).includes("subgroups")) {
    assert(
      r.outcomes.every((o) => o.candidates.some((c) => c.choice.subgroup > 0 && c.ms !== undefined)),
      "subgroup candidates ran (and matched the default plan)",
    );
  }
  assert(r.stepTunedMs <= r.stepDefaultMs * 1.0001);
  await withTmp("caev2-tune-", async (dir) => {
    const table = tileTableOf(info!.adapter ?? "?", "test", r);
    await writeTileTable(`${dir}/t.json`, table, false);
    assertEquals(await readTileTable(`${dir}/t.json`), table);
    await assertRejects(() => writeTileTable(`${dir}/t.json`, table, false), Error, "pass --force");
    await writeTileTable(`${dir}/t.json`, { ...table, tuned: "again" }, true);
    assertEquals((await readTileTable(`${dir}/t.json`)).tuned, "again");
  });
});

webgpuTest("tune: a candidate that throws is reported and never chosen", async () => {
  const r = await tuneShapes(shapes.slice(0, 1), "f32", {
    ...opts,
    execute: (backend, a, b, plan) => {
      if (plan.tile.bm === 32) throw new Error("refused by the driver (test)");
      return runMatMul(backend, a, b, plan);
    },
  });
  const failed = r.outcomes[0].candidates.filter((c) => c.error !== undefined);
  assertEquals(failed.length, 1);
  assertStringIncludes(failed[0].error!, "refused by the driver (test)");
  assertEquals(r.entries[0].choice.tile, SMALL);
});

Deno.test({
  name: "tune: f16 operands, both accumulations tried, checked against the f32 default",
  ignore: !hasWebGPU || !(info?.features ?? []).includes("shader-f16"),
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const r = await tuneShapes(shapes.slice(0, 1), "f16", {
      ...opts,
      space: {
        ...opts.space,
        tiles: [SMALL],
        accumulate: ["f32", "f16"],
        buffers: [1],
        unroll: false,
        subgroup: false,
      },
    });
    const o = r.outcomes[0];
    assertEquals(o.shape.precision, "f16");
    assertEquals(o.candidates.map((c) => c.choice.accumulate).sort(), ["f16", "f32"]);
    assert(
      o.candidates.every((c) => c.error !== undefined || c.relErr! <= 1e-2),
      JSON.stringify(o.candidates),
    );
    assert(o.entry!.choice.accumulate !== undefined, "f16 entries say how they accumulate");
  },
});

webgpuTest("tune: the recorder sees a product and both of its gradients", async () => {
  registerFastMatMul();
  const x = tf.randomNormal([20, 12]), w = tf.randomNormal([12, 8]);
  const seen = await recordShapes(async () => {
    const gs = tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.sum(tf.matMul(x, w)))([x, w]);
    await Promise.all(gs.map((g) => g.data()));
    tf.dispose(gs);
  });
  tf.dispose([x, w]);
  const key = (s: { m: number; n: number; k: number; transA: boolean; transB: boolean }) =>
    `${s.m}x${s.n}x${s.k}${+s.transA}${+s.transB}`;
  assertEquals(seen.map((c) => key(c.shape)).sort(), ["12x8x20" + "10", "20x12x8" + "01", "20x8x12" + "00"]);
});

webgpuTest("tune: one micro training step's matmuls, teacher and gradients included", async () => {
  const found = await stepShapes({ model: "micro", batch: 1, teacher: "micro" });
  const all = found.map((c) => c.shape);
  assert(
    all.some((s) => s.k === 768 && s.n === 128 && !s.transA),
    "the teacher's patch embedding (768 -> 128)",
  );
  assert(all.some((s) => s.transA) && all.some((s) => s.transB), "both gradient products");
  assert(all.some((s) => s.batch > 1), "attention's batched products");
  assert(found.every((c) => c.calls >= 1));
});

webgpuTest(
  "tile table: installed from CAEV2_TILE_TABLE, planMatMul follows it; none, missing, malformed",
  async () => {
    const adapter = info!.adapter ?? "?";
    const odd = { bm: 32, bn: 64, bk: 16, tm: 4, tn: 4 };
    const entry = {
      shape: shape(300, 300, 300, 1, false, false),
      choice: { tile: odd, splits: 1 },
      ms: 1,
      tflops: 0.054,
      defaultMs: 1.2,
    };
    await withTmp("caev2-tune-", async (dir) => {
      await writeTileTable(
        `${dir}/t.json`,
        tileTableOf(adapter, "test", { timer: "kernel", entries: [entry] }),
        false,
      );
      try {
        await withEnv({ CAEV2_TILE_TABLE: `${dir}/t.json` }, async () => {
          const note = await installTileTable(info!);
          assertStringIncludes(note!, `CAEV2_TILE_TABLE=${dir}/t.json (1 shapes`);
          assertEquals(planMatMul([300, 300], [300, 300], false, false)!.tile, odd);
          assertEquals(
            planMatMul([300, 300], [300, 300], false, true)!.tile.bm,
            128,
            "other transposes: the default rule",
          );
          assertEquals(activeTileTable()?.table.entries.length, 1);
        });
        await withEnv({ CAEV2_TILE_TABLE: "none" }, async () => {
          assertStringIncludes((await installTileTable(info!))!, "none");
          assertEquals(planMatMul([300, 300], [300, 300], false, false)!.tile.bm, 128, "the default rule");
          assertEquals(activeTileTable(), undefined);
        });
        // The user cache, found by the adapter's name.
        await withEnv({ XDG_CACHE_HOME: `${dir}/cache` }, async () => {
          const note = await installTileTable(info!);
          assertStringIncludes(note!, "no tuned table for this adapter");
          const cached = `${dir}/cache/caev2/tiles/${
            adapter.toLowerCase().replace(/[^a-z0-9._]+/g, "-").replace(/^[-.]+|-+$/g, "")
          }.json`;
          await writeTileTable(
            cached,
            tileTableOf(adapter, "cached", { timer: "kernel", entries: [entry] }),
            false,
          );
          assertStringIncludes((await installTileTable(info!))!, cached);
          assertEquals(planMatMul([300, 300], [300, 300], false, false)!.tile, odd);
        });
        await withEnv({ CAEV2_TILE_TABLE: `${dir}/missing.json` }, async () => {
          await assertRejects(
            () => installTileTable(info!),
            Error,
            `tile table ${dir}/missing.json: cannot read it`,
          );
        });
        await Deno.writeTextFile(`${dir}/bad.json`, '{"format": "caev2-tile-table", "version": 1}');
        await withEnv({ CAEV2_TILE_TABLE: `${dir}/bad.json` }, async () => {
          await assertRejects(
            () => installTileTable(info!),
            Error,
            `${dir}/bad.json: at adapter: expected string`,
          );
        });
      } finally {
        setGemmChooser(undefined);
      }
    });
  },
);

webgpuTest(
  "bench --tune cut short (SIGKILL) leaves the table of the shapes it measured, marked partial",
  async () => {
    await withTmp("caev2-tune-kill-", async (dir) => {
      const out = `${dir}/tiles.json`;
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../../tasks/bench.ts", import.meta.url).pathname,
          "--backend",
          "webgpu",
          "--tune",
          "--tune-quick",
          "--model",
          "micro",
          "--teacher",
          "micro",
          "--batch",
          "2",
          "--max-shapes",
          "4",
          "--out",
          out,
        ],
        env: { NO_COLOR: "1" },
        stdout: "null",
        stderr: "piped",
      }).spawn();
      // Killed once the second shape's line is out: the first shape's table was written before it began.
      let text = "";
      const decoder = new TextDecoder();
      for await (const chunk of child.stderr) {
        text += decoder.decode(chunk, { stream: true });
        if (text.includes("tune 2/4")) break;
      }
      child.kill("SIGKILL");
      const status = await child.status;
      assert(!status.success, `bench ended by itself before the kill:\n${text}`);
      const table = await readTileTable(out);
      assertStringIncludes(table.tuned, "partial:");
      assertStringIncludes(table.tuned, "of 4 shapes");
      assert(table.entries.length >= 1, JSON.stringify(table));
    });
  },
);
