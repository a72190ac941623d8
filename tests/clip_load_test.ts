/**
 * The CLIP teacher loads from both published namings: OpenAI's `visual.*` and Hugging Face's
 * `CLIPVisionModelWithProjection` (`vision_model.*`, separate q/k/v projections, `visual_projection.weight`
 * as `[out, W]`), to the same tower; the parity fixture's teacher loads and reproduces its features.
 *
 * The Hugging Face side is checked against the official model, not against a copy of the loader's mapping
 * (lib/models/names.ts `huggingFaceClipSource`): a file holds exactly the keys of the model's state_dict,
 * written out below, and the loaded tower must compute what Hugging Face's modules compute from those
 * tensors (`hfClipForward`, written from transformers' `modeling_clip.py`). A wrong name, a swapped pair
 * (`layer_norm1`/`layer_norm2`, `q_proj`/`k_proj`) or a missed transpose in the mapping fails it.
 */
import { tf } from "../lib/deps.ts";
import { assertEquals, assertRejects } from "../lib/core/std.ts";
import { selectBackend } from "../lib/core/backend.ts";
import { key, seedOf, split } from "../lib/core/random.ts";
import { disposeTree, flatten } from "../lib/core/tree.ts";
import { writeSafetensors } from "../lib/core/safetensors.ts";
import { clipApply } from "../lib/models/clip.ts";
import { loadClip } from "../lib/models/clip_load.ts";
import { clipOpenAiName, toOfficial } from "../lib/models/names.ts";
import type { ClipConfig } from "../lib/models/config.ts";
import { relativeError } from "../lib/core/compare.ts";

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

/**
 * `CLIPVisionModelWithProjection(config).state_dict().keys()` of transformers (CLIPVisionEmbeddings,
 * CLIPEncoderLayer with CLIPAttention's k, v, q, out projections, CLIPMLP's fc1 and fc2), for 2 layers, in
 * its order; Hugging Face spells the first norm "pre_layrnorm".
 */
const HF_STATE_DICT_KEYS = [
  "vision_model.embeddings.class_embedding",
  "vision_model.embeddings.patch_embedding.weight",
  "vision_model.embeddings.position_embedding.weight",
  "vision_model.pre_layrnorm.weight",
  "vision_model.pre_layrnorm.bias",
  "vision_model.encoder.layers.0.self_attn.k_proj.weight",
  "vision_model.encoder.layers.0.self_attn.k_proj.bias",
  "vision_model.encoder.layers.0.self_attn.v_proj.weight",
  "vision_model.encoder.layers.0.self_attn.v_proj.bias",
  "vision_model.encoder.layers.0.self_attn.q_proj.weight",
  "vision_model.encoder.layers.0.self_attn.q_proj.bias",
  "vision_model.encoder.layers.0.self_attn.out_proj.weight",
  "vision_model.encoder.layers.0.self_attn.out_proj.bias",
  "vision_model.encoder.layers.0.layer_norm1.weight",
  "vision_model.encoder.layers.0.layer_norm1.bias",
  "vision_model.encoder.layers.0.mlp.fc1.weight",
  "vision_model.encoder.layers.0.mlp.fc1.bias",
  "vision_model.encoder.layers.0.mlp.fc2.weight",
  "vision_model.encoder.layers.0.mlp.fc2.bias",
  "vision_model.encoder.layers.0.layer_norm2.weight",
  "vision_model.encoder.layers.0.layer_norm2.bias",
  "vision_model.encoder.layers.1.self_attn.k_proj.weight",
  "vision_model.encoder.layers.1.self_attn.k_proj.bias",
  "vision_model.encoder.layers.1.self_attn.v_proj.weight",
  "vision_model.encoder.layers.1.self_attn.v_proj.bias",
  "vision_model.encoder.layers.1.self_attn.q_proj.weight",
  "vision_model.encoder.layers.1.self_attn.q_proj.bias",
  "vision_model.encoder.layers.1.self_attn.out_proj.weight",
  "vision_model.encoder.layers.1.self_attn.out_proj.bias",
  "vision_model.encoder.layers.1.layer_norm1.weight",
  "vision_model.encoder.layers.1.layer_norm1.bias",
  "vision_model.encoder.layers.1.mlp.fc1.weight",
  "vision_model.encoder.layers.1.mlp.fc1.bias",
  "vision_model.encoder.layers.1.mlp.fc2.weight",
  "vision_model.encoder.layers.1.mlp.fc2.bias",
  "vision_model.encoder.layers.1.layer_norm2.weight",
  "vision_model.encoder.layers.1.layer_norm2.bias",
  "vision_model.post_layernorm.weight",
  "vision_model.post_layernorm.bias",
  "visual_projection.weight",
];

/** The shape PyTorch gives each key (nn.Linear weight `[out, in]`, Conv2d `[out, in, kh, kw]`). */
const hfShape = (name: string): number[] => {
  const w = cfg.width, p = cfg.patchSize, tokens = (cfg.imageSize / p) ** 2 + 1;
  if (name.endsWith("patch_embedding.weight")) return [w, 3, p, p];
  if (name.endsWith("position_embedding.weight")) return [tokens, w];
  if (name === "visual_projection.weight") return [cfg.outDim, w];
  if (name.endsWith("fc1.weight")) return [4 * w, w];
  if (name.endsWith("fc1.bias")) return [4 * w];
  if (name.endsWith("fc2.weight")) return [w, 4 * w];
  if (/_proj\.weight$/.test(name)) return [w, w];
  return [w]; // class embedding, norms, biases
};

/** Random tensors for every key: norm scales near 1, the rest small, each from its own key. */
const hfTensors = (): Record<string, tf.Tensor> => {
  const keys = split(key(11), HF_STATE_DICT_KEYS.length);
  return Object.fromEntries(HF_STATE_DICT_KEYS.map((name, i) => {
    const shape = hfShape(name);
    const isScale = /(layrnorm|layernorm|layer_norm\d)\.weight$/.test(name);
    const std = isScale || name.endsWith("bias")
      ? 0.1
      : 1 / Math.sqrt(shape.length > 1 ? shape[shape.length - 1] : 8);
    return [name, tf.randomNormal(shape, isScale ? 1 : 0, std, "float32", seedOf(keys[i]))];
  }));
};

/**
 * Hugging Face's `CLIPVisionModelWithProjection` forward (transformers `modeling_clip.py`) on `w`, with the
 * post-layernorm and the projection applied to every token as the CAE v2 teacher uses them (Hugging Face
 * applies them to the pooled class token only): conv patch embedding without bias, class token,
 * positions, pre_layrnorm, then per layer `x + out_proj(attn(layer_norm1(x)))` with q scaled by
 * head_dim^-0.5 and `x + fc2(quick_gelu(fc1(layer_norm2(x))))`, post_layernorm, `@ visual_projection^T`.
 */
const hfClipForward = (w: Record<string, tf.Tensor>, images: tf.Tensor4D): tf.Tensor3D =>
  tf.tidy(() => {
    const b = images.shape[0], width = cfg.width, heads = cfg.heads, dh = width / heads;
    const v = "vision_model.";
    const ln = (x: tf.Tensor, name: string) => {
      const { mean, variance } = tf.moments(x, -1, true);
      const y = tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5)));
      return tf.add(tf.mul(y, w[`${name}.weight`]), w[`${name}.bias`]);
    };
    // nn.Linear: y = x W^T + b, on the last axis.
    const linear = (x: tf.Tensor, name: string, bias = true) => {
      const weight = w[`${name}.weight`];
      const [out, inner] = weight.shape as [number, number];
      const y = tf.matMul(tf.reshape(x, [-1, inner]), weight, false, true);
      const shaped = tf.reshape(y, [...x.shape.slice(0, -1), out]);
      return bias ? tf.add(shaped, w[`${name}.bias`]) : shaped;
    };
    // Conv2d(3, W, p, stride p) on NCHW is the same product on NHWC with the kernel as [kh, kw, in, out].
    const kernel = tf.transpose(w[`${v}embeddings.patch_embedding.weight`], [2, 3, 1, 0]) as tf.Tensor4D;
    const patches = tf.reshape(tf.conv2d(images, kernel, cfg.patchSize, "valid"), [b, -1, width]);
    const cls = tf.broadcastTo(tf.reshape(w[`${v}embeddings.class_embedding`], [1, 1, width]), [b, 1, width]);
    let x: tf.Tensor = tf.add(tf.concat([cls, patches], 1), w[`${v}embeddings.position_embedding.weight`]);
    x = ln(x, `${v}pre_layrnorm`);
    const n = x.shape[1] as number;
    const split = (t: tf.Tensor) => tf.transpose(tf.reshape(t, [b, n, heads, dh]), [0, 2, 1, 3]);
    for (let i = 0; i < cfg.layers; i++) {
      const l = `${v}encoder.layers.${i}.`;
      const h = ln(x, `${l}layer_norm1`);
      const q = split(tf.mul(linear(h, `${l}self_attn.q_proj`), dh ** -0.5));
      const k = split(linear(h, `${l}self_attn.k_proj`));
      const val = split(linear(h, `${l}self_attn.v_proj`));
      const attn = tf.matMul(tf.softmax(tf.matMul(q, k, false, true)), val);
      x = tf.add(
        x,
        linear(tf.reshape(tf.transpose(attn, [0, 2, 1, 3]), [b, n, width]), `${l}self_attn.out_proj`),
      );
      const f = linear(ln(x, `${l}layer_norm2`), `${l}mlp.fc1`);
      x = tf.add(x, linear(tf.mul(f, tf.sigmoid(tf.mul(f, 1.702))), `${l}mlp.fc2`));
    }
    return linear(ln(x, `${v}post_layernorm`), "visual_projection", false) as tf.Tensor3D;
  });

Deno.test("CLIP loads from the official Hugging Face state_dict keys and computes what Hugging Face computes", async () => {
  const hf = hfTensors();
  const dir = await Deno.makeTempDir();
  const images = tf.randomNormal([2, 32, 32, 3], 0, 1, "float32", 3) as tf.Tensor4D;
  try {
    await writeSafetensors(`${dir}/hf.safetensors`, hf);
    const loaded = await loadClip(`${dir}/hf.safetensors`);
    assertEquals(loaded.naming, "huggingface");
    assertEquals(loaded.config, cfg);
    const out = await clipApply(loaded.params, loaded.config, images).data();
    const ref = await hfClipForward(hf, images).data();
    const err = relativeError(out, ref);
    if (!(err < 1e-5)) throw new Error(`the loaded tower differs from Hugging Face's by ${err}`);
    disposeTree(loaded.params);
  } finally {
    tf.dispose([images, ...Object.values(hf)]);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CLIP loads from OpenAI and Hugging Face names to the same tower", async () => {
  // The Hugging Face file is the one the test above checks against the official model.
  const hf = hfTensors();
  const dir = await Deno.makeTempDir();
  const images = tf.randomNormal([2, 32, 32, 3], 0, 1, "float32", 3) as tf.Tensor4D;
  let openai: Record<string, tf.Tensor> = {};
  try {
    await writeSafetensors(`${dir}/hf.safetensors`, hf);
    const fromHf = await loadClip(`${dir}/hf.safetensors`);
    openai = { ...toOfficial(fromHf.params, clipOpenAiName, cfg.patchSize) };
    await writeSafetensors(
      `${dir}/openai.safetensors`,
      Object.fromEntries(Object.entries(openai).map(([n, x]) => [`visual.${n}`, x])),
    );
    const ref = await clipApply(fromHf.params, fromHf.config, images).data();
    const loaded = await loadClip(`${dir}/openai.safetensors`);
    assertEquals(loaded.naming, "openai");
    assertEquals(loaded.config, cfg);
    assertEquals(Object.keys(flatten(loaded.params)).sort(), Object.keys(flatten(fromHf.params)).sort());
    const err = relativeError(await clipApply(loaded.params, loaded.config, images).data(), ref);
    if (!(err < 1e-6)) throw new Error(`openai: features differ by ${err}`);
    disposeTree(loaded.params, fromHf.params);
    await Deno.writeTextFile(`${dir}/not-clip.safetensors`, "");
    await assertRejects(() => loadClip(`${dir}/not-clip.safetensors`), Error, "not-clip.safetensors");
  } finally {
    tf.dispose([images, ...Object.values(hf), ...Object.values(openai)]);
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * OpenAI's names for the same tensors, as `torch.jit.load("ViT-B-16.pt").state_dict()` holds them and
 * tools/convert_openai_clip.py writes them (the `visual.` tensors, float32), built from the Hugging Face
 * tensors by the published correspondence (openai/CLIP `clip/model.py` VisionTransformer and
 * ResidualAttentionBlock; transformers' CLIP conversion script): `nn.MultiheadAttention` packs q, k, v
 * into `in_proj_weight` `[3W, W]` and `in_proj_bias`, in that order; `proj` is `[W, out]`, the
 * transpose of `visual_projection.weight`. Written here from those names, not from the loader's mapping.
 */
const openAiFromHf = (hf: Record<string, tf.Tensor>): Record<string, tf.Tensor> => {
  const v = "vision_model.", out: Record<string, tf.Tensor> = {};
  out["visual.class_embedding"] = hf[`${v}embeddings.class_embedding`];
  out["visual.positional_embedding"] = hf[`${v}embeddings.position_embedding.weight`];
  out["visual.proj"] = tf.transpose(hf["visual_projection.weight"]);
  out["visual.conv1.weight"] = hf[`${v}embeddings.patch_embedding.weight`];
  for (const p of ["weight", "bias"]) {
    out[`visual.ln_pre.${p}`] = hf[`${v}pre_layrnorm.${p}`];
    out[`visual.ln_post.${p}`] = hf[`${v}post_layernorm.${p}`];
  }
  for (let i = 0; i < cfg.layers; i++) {
    const o = `visual.transformer.resblocks.${i}.`, h = `${v}encoder.layers.${i}.`;
    for (const p of ["weight", "bias"]) {
      out[`${o}attn.in_proj_${p}`] = tf.concat(
        ["q_proj", "k_proj", "v_proj"].map((n) => hf[`${h}self_attn.${n}.${p}`]),
      );
      out[`${o}attn.out_proj.${p}`] = hf[`${h}self_attn.out_proj.${p}`];
      out[`${o}ln_1.${p}`] = hf[`${h}layer_norm1.${p}`];
      out[`${o}ln_2.${p}`] = hf[`${h}layer_norm2.${p}`];
      out[`${o}mlp.c_fc.${p}`] = hf[`${h}mlp.fc1.${p}`];
      out[`${o}mlp.c_proj.${p}`] = hf[`${h}mlp.fc2.${p}`];
    }
  }
  return out;
};

Deno.test("CLIP loads from OpenAI's state_dict names (tools/convert_openai_clip.py's output) and computes what Hugging Face computes", async () => {
  const hf = hfTensors();
  const openai = openAiFromHf(hf);
  const dir = await Deno.makeTempDir();
  const images = tf.randomNormal([2, 32, 32, 3], 0, 1, "float32", 3) as tf.Tensor4D;
  // The text tower of a whole OpenAI state_dict, left in: never read.
  const text = { "transformer.resblocks.0.ln_1.weight": tf.ones([8]), "logit_scale": tf.scalar(4.6) };
  try {
    await writeSafetensors(`${dir}/clip-vit.safetensors`, { ...openai, ...text });
    const loaded = await loadClip(`${dir}/clip-vit.safetensors`);
    assertEquals(loaded.naming, "openai");
    assertEquals(loaded.config, cfg);
    const out = await clipApply(loaded.params, loaded.config, images).data();
    const ref = await hfClipForward(hf, images).data();
    const err = relativeError(out, ref);
    if (!(err < 1e-5)) {
      throw new Error(`the tower loaded from OpenAI names differs from Hugging Face's by ${err}`);
    }
    disposeTree(loaded.params);
    // A file cut short names the missing tensor.
    const { ["visual.ln_post.bias"]: _cut, ...short } = openai;
    await writeSafetensors(`${dir}/short.safetensors`, short);
    await assertRejects(() => loadClip(`${dir}/short.safetensors`), Error, "ln_post.bias");
  } finally {
    const mine = ["visual.proj", ...Object.keys(openai).filter((n) => n.includes("in_proj_"))];
    tf.dispose([images, ...Object.values(hf), ...mine.map((n) => openai[n]), ...Object.values(text)]);
    await Deno.remove(dir, { recursive: true });
  }
});
