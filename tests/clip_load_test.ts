/**
 * The CLIP teacher loads from both published namings: OpenAI's `visual.*` and Hugging Face's
 * `CLIPVisionModelWithProjection` (`vision_model.*`, separate q/k/v projections, `visual_projection.weight`
 * as `[out, W]`), to the same tower; the parity fixture's teacher loads and reproduces its features.
 */
import { tf } from "../lib/deps.ts";
import { assertEquals, assertRejects } from "../lib/core/std.ts";
import { selectBackend } from "../lib/core/backend.ts";
import { key } from "../lib/core/random.ts";
import { disposeTree, flatten } from "../lib/core/tree.ts";
import { writeSafetensors } from "../lib/core/safetensors.ts";
import { clipApply, clipInit } from "../lib/models/clip.ts";
import { loadClip } from "../lib/models/clip_load.ts";
import { clipOpenAiName, toOfficial } from "../lib/models/names.ts";
import type { ClipConfig } from "../lib/models/config.ts";
import { relativeError } from "../lib/parity/check.ts";

await selectBackend("cpu");

// Width 128 -> 2 heads of 64, as every released CLIP (heads = width / 64).
const cfg: ClipConfig = {
  imageSize: 32,
  patchSize: 8,
  width: 128,
  layers: 2,
  heads: 2,
  outDim: 24,
  eps: 1e-5,
};

/** OpenAI names -> Hugging Face names, written independently of the loader's mapping. */
const toHuggingFace = (openai: Record<string, tf.Tensor>): Record<string, tf.Tensor> => {
  const out: Record<string, tf.Tensor> = {};
  const v = "vision_model.";
  for (const [n, x] of Object.entries(openai)) {
    const m = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(n);
    if (m) {
      const l = `${v}encoder.layers.${m[1]}.`;
      if (m[2].startsWith("attn.in_proj_")) {
        const kind = m[2].endsWith("weight") ? "weight" : "bias";
        const [q, k, vv] = tf.split(x, 3, 0);
        out[`${l}self_attn.q_proj.${kind}`] = q;
        out[`${l}self_attn.k_proj.${kind}`] = k;
        out[`${l}self_attn.v_proj.${kind}`] = vv;
        continue;
      }
      const rest = m[2].replace("attn.out_proj", "self_attn.out_proj").replace("ln_1", "layer_norm1")
        .replace("ln_2", "layer_norm2").replace("mlp.c_fc", "mlp.fc1").replace("mlp.c_proj", "mlp.fc2");
      out[l + rest] = x;
      continue;
    }
    const top: Record<string, string> = {
      "conv1.weight": "embeddings.patch_embedding.weight",
      "class_embedding": "embeddings.class_embedding",
      "positional_embedding": "embeddings.position_embedding.weight",
      "ln_pre.weight": "pre_layrnorm.weight",
      "ln_pre.bias": "pre_layrnorm.bias",
      "ln_post.weight": "post_layernorm.weight",
      "ln_post.bias": "post_layernorm.bias",
    };
    if (n === "proj") out["visual_projection.weight"] = tf.transpose(x);
    else out[v + top[n]] = x;
  }
  return out;
};

Deno.test("CLIP loads from OpenAI and Hugging Face names to the same tower", async () => {
  const p = clipInit(key(7), cfg);
  const openai = toOfficial(p, clipOpenAiName, cfg.patchSize) as Record<string, tf.Tensor>;
  const hf = toHuggingFace(openai);
  const dir = await Deno.makeTempDir();
  const images = tf.randomNormal([2, 32, 32, 3], 0, 1, "float32", 3) as tf.Tensor4D;
  try {
    await writeSafetensors(
      `${dir}/openai.safetensors`,
      Object.fromEntries(Object.entries(openai).map(([n, x]) => [`visual.${n}`, x])),
    );
    await writeSafetensors(`${dir}/hf.safetensors`, hf);
    const ref = await clipApply(p, cfg, images).data();
    for (const [file, naming] of [["openai", "openai"], ["hf", "huggingface"]] as const) {
      const loaded = await loadClip(`${dir}/${file}.safetensors`);
      assertEquals(loaded.naming, naming);
      assertEquals(loaded.config, cfg);
      assertEquals(Object.keys(flatten(loaded.params)).sort(), Object.keys(flatten(p)).sort());
      const out = await clipApply(loaded.params, loaded.config, images).data();
      const err = relativeError(out, ref);
      if (!(err < 1e-6)) throw new Error(`${naming}: features differ by ${err}`);
      disposeTree(loaded.params);
    }
    await Deno.writeTextFile(`${dir}/not-clip.safetensors`, "");
    await assertRejects(() => loadClip(`${dir}/not-clip.safetensors`), Error, "not-clip.safetensors");
  } finally {
    disposeTree(p);
    tf.dispose([images, ...Object.values(openai), ...Object.values(hf)]);
    await Deno.remove(dir, { recursive: true });
  }
});
