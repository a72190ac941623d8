/**
 * `deno task export`: the student encoder of a pretraining run under the official CAE names reads back
 * through the toolkit's own loader (lib/eval/load.ts) to the same features on the same images; under
 * timm's names it has exactly timm's `VisionTransformer` names and shapes for the micro preset (written out
 * here from timm's timm/models/vision_transformer.py, timm/layers/attention.py, layer_scale.py,
 * patch_embed.py and mlp.py), one qkv bias `concat(q_bias, zeros, v_bias)`, and a patch embedding in
 * PyTorch's `[out, in, kh, kw]` layout (checked by a convolution written here by hand against the
 * toolkit's patch embedding). An existing `--out` is refused without `--force`; a missing checkpoint is
 * named.
 */
import { TEST_BACKEND, withTmp } from "./helpers.ts";
import { E, tf } from "../lib/deps.ts";
import { assert, assertAlmostEquals, assertEquals, assertStringIncludes } from "../lib/core/std.ts";
import { selectBackend } from "../lib/core/backend.ts";
import { registerDeviceGradients } from "../lib/core/gradients.ts";
import { readSafetensors } from "../lib/core/safetensors.ts";
import { resolvePretrainConfig } from "../lib/config/pretrain.ts";
import { pretrain } from "../lib/train/pretrain.ts";
import { disposeEncoder, loadEncoderEither } from "../lib/eval/load.ts";
import type { EncoderModel } from "../lib/models/encoder_model.ts";
import { encoder } from "../lib/models/encoder.ts";
import { patchEmbed } from "../lib/nn/patch_embed.ts";

await selectBackend(TEST_BACKEND);
registerDeviceGradients();

const IMG = 32, PATCH = 8, DIM = 64, DEPTH = 4, HIDDEN = 256, TOKENS = (IMG / PATCH) ** 2 + 1;

/** A 3-step micro run (its q and v biases have moved off zero), in `dir`/run. */
const trainedRun = async (dir: string): Promise<string> => {
  const out = `${dir}/run`;
  const cfg = resolvePretrainConfig([
    ...["--image-size", `${IMG}`, "--patch-size", `${PATCH}`, "--batch-size", "4", "--steps", "3"],
    ...["--backend", TEST_BACKEND, "--out", out],
  ]);
  if (E.isLeft(cfg)) throw new Error(cfg.left);
  const r = await pretrain(cfg.right, { log: () => {}, tty: false });
  if (E.isLeft(r)) throw new Error(r.left);
  return out;
};

/** `deno task export ARGS`: exit code and everything it printed. */
const runExport = async (args: string[]): Promise<{ code: number; text: string }> => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../tasks/export.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, text: dec.decode(out.stdout) + dec.decode(out.stderr) };
};

const load = async (spec: string): Promise<EncoderModel> => {
  const m = await loadEncoderEither(spec);
  if (E.isLeft(m)) throw new Error(m.left);
  return m.right;
};

/** Every token of the encoder (cls and all patches, after the final norm) on fixed images. */
const features = async (m: EncoderModel): Promise<Float32Array> => {
  const images = tf.randomNormal([2, m.config.imageSize, m.config.imageSize, 3], 0, 1, "float32", 3);
  const y = encoder(m.params, m.config, images as tf.Tensor4D, m.pos, undefined, { training: false });
  const v = (await y.data()) as Float32Array;
  tf.dispose([images, y]);
  return v;
};

/** timm's VisionTransformer state dict for the micro preset at 32 px, patch 8, num_classes=0. */
const timmMicro = (): Record<string, number[]> => {
  const names: Record<string, number[]> = {
    "cls_token": [1, 1, DIM],
    "pos_embed": [1, TOKENS, DIM],
    "patch_embed.proj.weight": [DIM, 3, PATCH, PATCH],
    "patch_embed.proj.bias": [DIM],
    "norm.weight": [DIM],
    "norm.bias": [DIM],
  };
  for (let i = 0; i < DEPTH; i++) {
    Object.assign(names, {
      [`blocks.${i}.norm1.weight`]: [DIM],
      [`blocks.${i}.norm1.bias`]: [DIM],
      [`blocks.${i}.attn.qkv.weight`]: [3 * DIM, DIM],
      [`blocks.${i}.attn.qkv.bias`]: [3 * DIM],
      [`blocks.${i}.attn.proj.weight`]: [DIM, DIM],
      [`blocks.${i}.attn.proj.bias`]: [DIM],
      [`blocks.${i}.ls1.gamma`]: [DIM],
      [`blocks.${i}.norm2.weight`]: [DIM],
      [`blocks.${i}.norm2.bias`]: [DIM],
      [`blocks.${i}.mlp.fc1.weight`]: [HIDDEN, DIM],
      [`blocks.${i}.mlp.fc1.bias`]: [HIDDEN],
      [`blocks.${i}.mlp.fc2.weight`]: [DIM, HIDDEN],
      [`blocks.${i}.mlp.fc2.bias`]: [DIM],
      [`blocks.${i}.ls2.gamma`]: [DIM],
    });
  }
  return names;
};

Deno.test("export: official names read back to the same features; timm names, shapes and layouts", async () => {
  await withTmp("caev2-export-", async (dir) => {
    const run = await trainedRun(dir);

    // Official names, read back by the toolkit's own loader.
    const official = `${dir}/official.safetensors`;
    const o = await runExport([
      "--checkpoint",
      run,
      "--to",
      "official",
      "--out",
      official,
      "--backend",
      "cpu",
    ]);
    assertEquals(o.code, 0, o.text);
    assertStringIncludes(o.text, `wrote ${official}: 66 tensors under the official CAE names`);
    const file = await readSafetensors(official);
    assertEquals(file.metadata?.naming, "official");
    for (
      const n of ["encoder.patch_embed.proj.weight", "encoder.blocks.0.attn.q_bias", "encoder.pos_embed"]
    ) {
      assert(n in file.tensors, `${n} missing`);
    }
    assertEquals(file.tensors["encoder.patch_embed.proj.weight"].shape, [DIM, 3, PATCH, PATCH]);
    const fromRun = await load(run);
    const fromExport = await load(official);
    try {
      assertEquals(fromExport.config.imageSize, IMG); // from encoder.pos_embed
      const [a, b] = [await features(fromRun), await features(fromExport)];
      assertEquals(a.length, 2 * TOKENS * DIM);
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
      assertEquals(worst, 0, "the same weights give the same features");
    } finally {
      disposeEncoder(fromExport);
    }

    // timm's names and shapes, exactly.
    const timm = `${dir}/timm.safetensors`;
    const t = await runExport(["--checkpoint", run, "--to", "timm", "--out", timm, "--backend", "cpu"]);
    assertEquals(t.code, 0, t.text);
    assertStringIncludes(t.text, "VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=4");
    const tf32 = await readSafetensors(timm);
    const shapes = Object.fromEntries(Object.entries(tf32.tensors).map(([n, h]) => [n, [...h.shape]]));
    assertEquals(shapes, timmMicro());
    assertEquals(JSON.parse(tf32.metadata?.timm ?? "{}").num_heads, 4);
    try {
      const p = fromRun.params;
      // One qkv bias: q, zeros for k, v.
      const q = (await p.blocks["1"].attn.qBias!.data()) as Float32Array;
      const v = (await p.blocks["1"].attn.vBias!.data()) as Float32Array;
      assert(q.some((x) => x !== 0) && v.some((x) => x !== 0), "the run moved the q and v biases");
      const qkv = tf32.tensors["blocks.1.attn.qkv.bias"].data as Float32Array;
      assertEquals([...qkv], [...q, ...new Array(DIM).fill(0), ...v]);
      // Layer scale and Linear layouts.
      assertEquals([...(tf32.tensors["blocks.2.ls2.gamma"].data as Float32Array)], [
        ...((await p.blocks["2"].gamma2.data()) as Float32Array),
      ]);
      const fc1 = (await p.blocks["0"].mlp.fc1.kernel.data()) as Float32Array; // [in, out]
      const fc1T = tf32.tensors["blocks.0.mlp.fc1.weight"].data as Float32Array; // [out, in]
      assertEquals(fc1T[5 * DIM + 7], fc1[7 * HIDDEN + 5]);
      // The patch embedding as PyTorch's Conv2d computes it: out[d] = b[d] + sum W[d, c, i, j] x[i, j, c]
      // over the first patch (rows i, columns j of the image), against the toolkit's patch embedding.
      const w = tf32.tensors["patch_embed.proj.weight"].data as Float32Array;
      const bias = tf32.tensors["patch_embed.proj.bias"].data as Float32Array;
      const image = tf.randomNormal([1, IMG, IMG, 3], 0, 1, "float32", 11) as tf.Tensor4D;
      const x = (await image.data()) as Float32Array; // NHWC
      const ours = patchEmbed(p.patchEmbed, image, PATCH);
      const first = ((await ours.data()) as Float32Array).subarray(0, DIM);
      tf.dispose([image, ours]);
      for (const d of [0, 17, DIM - 1]) {
        let s = bias[d];
        for (let c = 0; c < 3; c++) {
          for (let i = 0; i < PATCH; i++) {
            for (let j = 0; j < PATCH; j++) {
              s += w[((d * 3 + c) * PATCH + i) * PATCH + j] * x[(i * IMG + j) * 3 + c];
            }
          }
        }
        assertAlmostEquals(first[d], s, 1e-4);
      }
    } finally {
      disposeEncoder(fromRun);
    }

    // An existing --out needs --force (checked before any work); with it the file is replaced.
    const again = await runExport(["--checkpoint", run, "--to", "timm", "--out", timm]);
    assertEquals(again.code, 1);
    assertStringIncludes(again.text, "--force");
    assertStringIncludes(again.text, timm);
    const forced = await runExport(["--checkpoint", run, "--to", "official", "--out", timm, "--force"]);
    assertEquals(forced.code, 0, forced.text);
    assertEquals((await readSafetensors(timm)).metadata?.naming, "official");
  });
});

Deno.test("export: a missing checkpoint is named; --to and --out are required", async () => {
  await withTmp("caev2-export-", async (dir) => {
    const missing = `${dir}/no-such-run`;
    const r = await runExport(["--checkpoint", missing, "--to", "timm", "--out", `${dir}/x.safetensors`]);
    assertEquals(r.code, 1);
    assertStringIncludes(r.text, `--checkpoint ${missing}: no such file or directory`);
    const noTo = await runExport(["--checkpoint", missing, "--out", `${dir}/x.safetensors`]);
    assertEquals(noTo.code, 1);
    assertStringIncludes(noTo.text, "--to is required: official");
    const badTo = await runExport(["--checkpoint", missing, "--to", "hf", "--out", `${dir}/x.safetensors`]);
    assertStringIncludes(badTo.text, 'flags: --to: expected one of "official" | "timm", got "hf"');
    const noOut = await runExport(["--checkpoint", missing, "--to", "timm"]);
    assertStringIncludes(noOut.text, "--out FILE.safetensors is required");
    assertEquals(await Deno.stat(`${dir}/x.safetensors`).catch(() => undefined), undefined);
  });
});
