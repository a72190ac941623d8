/**
 * Parameter names and layouts: the project's own names (camelCase, kernels `[in, out]`) against the
 * official ones (CAE's PyTorch module names, Linear weights `[out, in]`, conv weights `[D, C, p, p]`) and
 * against the two published CLIP layouts (OpenAI `visual.*`, Hugging Face `vision_model.*`). Every
 * conversion checks names and shapes and reports the first problem by name.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { type Flat, flatten, type Params, unflatten } from "../core/tree.ts";
import { type HostTensor, toTensor } from "../core/safetensors.ts";

/** How a tensor's layout differs between the project and an official file. */
export type Layout = "same" | "linear" | "conv";

/** An official name and the layout change needed to read it. */
export interface OfficialSlot {
  readonly name: string;
  readonly layout: Layout;
}

const layoutOf = (projectName: string): Layout =>
  /patchEmbed\.kernel$/.test(projectName) ? "conv" : /\.kernel$/.test(projectName) ? "linear" : "same";

const leaf = (s: string) => s.replace(/\.kernel$/, ".weight").replace(/\.scale$/, ".weight");

/** Official CAE name of a student parameter, e.g. `encoder.blocks.0.attn.qkv.kernel` -> `...qkv.weight`. */
export const studentOfficialName = (name: string): OfficialSlot => {
  let s = name;
  if (s.startsWith("regressor.")) {
    s = s.replace(/^regressor\.blocks\./, "regresser.regressor_blocks.")
      .replace(/\.normQ\./, ".norm1_q.").replace(/\.normK\./, ".norm1_k.").replace(/\.normV\./, ".norm1_v.")
      .replace(/\.crossAttn\./, ".cross_attn.").replace(/\.gamma1$/, ".gamma_1_cross")
      .replace(/\.gamma2$/, ".gamma_2_cross").replace(/\.norm2\./, ".norm2_cross.").replace(
        /\.mlp\./,
        ".mlp_cross.",
      );
  }
  s = s.replace(/^encoder\.patchEmbed\./, "encoder.patch_embed.proj.")
    .replace(/^encoder\.clsToken$/, "encoder.cls_token").replace(/^maskToken$/, "mask_token")
    .replace(/^projection\.linear\./, "encoder_to_regresser.").replace(
      /^projection\.norm\./,
      "encoder_to_regresser_norm.",
    )
    .replace(/^head\.norm\./, "decoder.norm.").replace(/^head\.linear\./, "decoder.head.")
    .replace(/\.qBias$/, ".q_bias").replace(/\.vBias$/, ".v_bias")
    .replace(/\.gamma1$/, ".gamma_1").replace(/\.gamma2$/, ".gamma_2");
  return { name: leaf(s), layout: layoutOf(name) };
};

/** OpenAI CLIP name (without the `visual.` prefix) of a teacher parameter. */
export const clipOpenAiName = (name: string): OfficialSlot => {
  const s = name.replace(/^patchEmbed\.kernel$/, "conv1.weight")
    .replace(/^classEmbedding$/, "class_embedding").replace(/^positionalEmbedding$/, "positional_embedding")
    .replace(/^lnPre\./, "ln_pre.").replace(/^lnPost\./, "ln_post.")
    .replace(/^blocks\./, "transformer.resblocks.").replace(/\.ln1\./, ".ln_1.").replace(/\.ln2\./, ".ln_2.")
    .replace(/\.attn\.qkv\.kernel$/, ".attn.in_proj_weight").replace(
      /\.attn\.qkv\.bias$/,
      ".attn.in_proj_bias",
    )
    .replace(/\.attn\.proj\./, ".attn.out_proj.").replace(/\.mlp\.fc1\./, ".mlp.c_fc.")
    .replace(/\.mlp\.fc2\./, ".mlp.c_proj.");
  // `proj` is stored [width, out] by OpenAI: already the project's layout.
  return { name: leaf(s), layout: name === "proj" ? "same" : layoutOf(name) };
};

/** Converts an official-layout tensor to the project's layout. */
export const toProjectLayout = (x: tf.Tensor, layout: Layout): tf.Tensor =>
  tf.tidy(() => {
    if (layout === "linear") return tf.transpose(x);
    if (layout === "conv") {
      // [D, C, p, p] -> [p, p, C, D] -> [p*p*C, D]
      const [d, c, p] = x.shape;
      return tf.reshape(tf.transpose(x, [2, 3, 1, 0]), [p * p * c, d]);
    }
    return tf.clone(x);
  });

/** Converts a project-layout tensor to the official layout (`shape` is the official shape). */
export const toOfficialLayout = (x: tf.Tensor, layout: Layout, patchSize?: number): tf.Tensor =>
  tf.tidy(() => {
    if (layout === "linear") return tf.transpose(x);
    if (layout === "conv") {
      const d = x.shape[1] as number, p = patchSize ?? Math.round(Math.sqrt(x.shape[0] / 3));
      const c = x.shape[0] / (p * p);
      return tf.transpose(tf.reshape(x, [p, p, c, d]), [3, 2, 0, 1]);
    }
    return tf.clone(x);
  });

/** A lookup of source tensors by official name. */
export type Source = (officialName: string) => tf.Tensor | undefined;

/**
 * A lookup over host tensors (a safetensors file's contents) that uploads each on demand and records the
 * upload in `created`, for the caller to dispose once the conversion is done.
 */
export const hostSource =
  (tensors: Readonly<Record<string, HostTensor>>, created: tf.Tensor[]): Source => (name) => {
    const h = tensors[name];
    if (!h) return undefined;
    const t = toTensor(h);
    created.push(t);
    return t;
  };

/**
 * Builds a project record shaped like `like` from a source of official tensors. Fails (throws) on the first
 * missing name or shape mismatch, naming the project name, the official name, expected and found shapes.
 * The result holds fresh tensors; `like` is not consumed.
 */
export const fromOfficial = <P extends Params>(
  like: P,
  source: Source,
  naming: (n: string) => OfficialSlot,
  what: string,
): P => {
  const out: Record<string, tf.Tensor> = {};
  const made: tf.Tensor[] = [];
  try {
    for (const [name, ref] of Object.entries(flatten(like))) {
      const slot = naming(name);
      const src = source(slot.name);
      if (!src) {
        throw new Error(
          `${what}: missing tensor "${slot.name}" (project name "${name}", shape ${
            fmt(expectedOfficialShape(ref.shape, slot.layout))
          })`,
        );
      }
      const want = expectedOfficialShape(ref.shape, slot.layout);
      if (!sameShape(src.shape, want)) {
        throw new Error(
          `${what}: tensor "${slot.name}" has shape ${fmt(src.shape)}, expected ${
            fmt(want)
          } (project name "${name}")`,
        );
      }
      const y = toProjectLayout(src, slot.layout);
      made.push(y);
      out[name] = y;
    }
  } catch (e) {
    made.forEach((t) => t.dispose());
    throw e;
  }
  return unflatten(out) as P;
};

/** The official name -> tensor view of a project record (fresh tensors). */
export const toOfficial = (p: Params, naming: (n: string) => OfficialSlot, patchSize?: number): Flat => {
  const out: Record<string, tf.Tensor> = {};
  for (const [name, x] of Object.entries(flatten(p))) {
    const slot = naming(name);
    out[slot.name] = toOfficialLayout(x, slot.layout, patchSize);
  }
  return out;
};

const expectedOfficialShape = (shape: readonly number[], layout: Layout): number[] => {
  if (layout === "linear") return [shape[1], shape[0]];
  if (layout === "conv") {
    const p = Math.round(Math.sqrt(shape[0] / 3));
    return [shape[1], 3, p, p];
  }
  return [...shape];
};
const sameShape = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((v, i) => v === b[i]);
const fmt = (s: readonly number[]) => `[${s.join(", ")}]`;

/**
 * A source over a Hugging Face `CLIPVisionModelWithProjection` state dict, presented under OpenAI's names:
 * q/k/v projections are concatenated into `in_proj_*`, `visual_projection.weight [out, W]` is transposed to
 * `proj [W, out]`. Returned tensors are created on demand and tracked in `created` for disposal.
 */
export const huggingFaceClipSource =
  (get: (n: string) => tf.Tensor | undefined, created: tf.Tensor[]): Source => (name) => {
    const keep = (t: tf.Tensor) => (created.push(t), t);
    const v = "vision_model.";
    const m = /^transformer\.resblocks\.(\d+)\.(.*)$/.exec(name);
    if (m) {
      const l = `${v}encoder.layers.${m[1]}.`, rest = m[2];
      if (rest === "attn.in_proj_weight" || rest === "attn.in_proj_bias") {
        const kind = rest.endsWith("weight") ? "weight" : "bias";
        const parts = ["q_proj", "k_proj", "v_proj"].map((q) => get(`${l}self_attn.${q}.${kind}`));
        if (parts.some((x) => !x)) return undefined;
        return keep(tf.concat(parts as tf.Tensor[], 0));
      }
      const map: Record<string, string> = {
        "attn.out_proj.weight": "self_attn.out_proj.weight",
        "attn.out_proj.bias": "self_attn.out_proj.bias",
        "ln_1.weight": "layer_norm1.weight",
        "ln_1.bias": "layer_norm1.bias",
        "ln_2.weight": "layer_norm2.weight",
        "ln_2.bias": "layer_norm2.bias",
        "mlp.c_fc.weight": "mlp.fc1.weight",
        "mlp.c_fc.bias": "mlp.fc1.bias",
        "mlp.c_proj.weight": "mlp.fc2.weight",
        "mlp.c_proj.bias": "mlp.fc2.bias",
      };
      return map[rest] ? get(l + map[rest]) : undefined;
    }
    if (name === "proj") {
      const w = get("visual_projection.weight");
      return w ? keep(tf.transpose(w)) : undefined;
    }
    const top: Record<string, string> = {
      "conv1.weight": "embeddings.patch_embedding.weight",
      "class_embedding": "embeddings.class_embedding",
      "positional_embedding": "embeddings.position_embedding.weight",
      // (sic) Hugging Face spells it "pre_layrnorm".
      "ln_pre.weight": "pre_layrnorm.weight",
      "ln_pre.bias": "pre_layrnorm.bias",
      "ln_post.weight": "post_layernorm.weight",
      "ln_post.bias": "post_layernorm.bias",
    };
    return top[name] ? get(v + top[name]) : undefined;
  };

/**
 * The student encoder under the official CAE names of a pretraining checkpoint (`encoder.cls_token`,
 * `encoder.patch_embed.proj.weight [D, 3, p, p]`, `encoder.blocks.N.attn.qkv.weight`, `...q_bias`,
 * `...gamma_1`, `encoder.norm.weight`, ...: CAE's `VisionTransformerEncoder`, which the official
 * fine-tuning scripts read after dropping the `encoder.` prefix), with the fixed sin-cos `encoder.pos_embed`
 * `[1, 1 + L, D]` (cls row zero; a parameter with `requires_grad = False` in the official module, so in
 * its state dict too). Fresh tensors, for the caller to dispose.
 */
export const encoderToOfficial = (encoder: Params, pos: tf.Tensor, patchSize: number): Flat => ({
  ...toOfficial(encoder, (n) => studentOfficialName(`encoder.${n}`), patchSize),
  "encoder.pos_embed": tf.clone(pos),
});

/**
 * timm's name (`timm.models.vision_transformer.VisionTransformer`) of a student encoder parameter, with
 * its layout change; undefined for `attn.qBias` and `attn.vBias`, which timm holds as one `qkv.bias`
 * ({@link encoderToTimm}).
 */
export const encoderTimmName = (name: string): OfficialSlot | undefined => {
  if (/\.attn\.[qv]Bias$/.test(name)) return undefined;
  const s = name.replace(/^patchEmbed\./, "patch_embed.proj.").replace(/^clsToken$/, "cls_token")
    .replace(/\.gamma1$/, ".ls1.gamma").replace(/\.gamma2$/, ".ls2.gamma");
  return { name: leaf(s), layout: layoutOf(name) };
};

/**
 * The student encoder under timm's `VisionTransformer` names and PyTorch layouts: `cls_token`, `pos_embed`
 * (the fixed sin-cos positions, cls row zero), `patch_embed.proj.weight [D, 3, p, p]` and `.bias`,
 * `blocks.N.norm1`, `blocks.N.attn.qkv.weight [3D, D]`, `blocks.N.attn.qkv.bias` (timm has one qkv bias:
 * `concat(q_bias, zeros, v_bias)`, exactly the bias CAE's attention adds), `blocks.N.attn.proj`,
 * `blocks.N.ls1.gamma` / `ls2.gamma` (layer scale), `blocks.N.norm2`, `blocks.N.mlp.fc1` / `fc2`, `norm`.
 * A model built as `VisionTransformer(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio,
 * init_values=<any non-zero>, num_classes=0)` (timm's defaults otherwise: LayerNorm eps 1e-6, exact GELU,
 * class token, `global_pool="token"`) loads it with `load_state_dict(..., strict=True)`. Fresh tensors, for
 * the caller to dispose.
 */
export const encoderToTimm = (encoder: Params, pos: tf.Tensor, patchSize: number): Flat => {
  const out: Record<string, tf.Tensor> = { pos_embed: tf.clone(pos) };
  const flat = flatten(encoder);
  try {
    for (const [name, x] of Object.entries(flat)) {
      const slot = encoderTimmName(name);
      if (slot !== undefined) out[slot.name] = toOfficialLayout(x, slot.layout, patchSize);
      const q = /^(blocks\.\d+\.attn)\.qBias$/.exec(name);
      if (q !== null) {
        const v = flat[`${q[1]}.vBias`];
        if (v === undefined) throw new Error(`encoderToTimm: ${q[1]}.qBias has no vBias beside it`);
        out[`${q[1]}.qkv.bias`] = tf.tidy(() => tf.concat([x, tf.zerosLike(x), v]));
      }
    }
  } catch (e) {
    tf.dispose(Object.values(out));
    throw e;
  }
  return out;
};
