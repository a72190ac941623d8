/**
 * Loading a CLIP vision tower from safetensors, in either published naming: OpenAI (`visual.conv1.weight`,
 * `visual.transformer.resblocks.N...`, `visual.proj`) or Hugging Face `CLIPVisionModelWithProjection`
 * (`vision_model.embeddings.patch_embedding.weight`, ..., `visual_projection.weight`). The shape of the
 * tower (width, depth, patch, image size, output width) is read off the tensors; heads = width / 64, as in
 * every released CLIP ViT.
 *
 * Getting CLIP ViT-B/16: from OpenAI's `ViT-B-16.pt` (a TorchScript archive):
 * `python -c "import torch, clip; from safetensors.torch import save_file; m,_=clip.load('ViT-B/16','cpu');
 * save_file({k: v.float().contiguous() for k, v in m.state_dict().items() if k.startswith('visual.')},
 * 'clip-vit-b16.safetensors')"`; or Hugging Face `openai/clip-vit-base-patch16`'s `model.safetensors`
 * (the full CLIP model: the vision tensors are read, the text tower is ignored).
 *
 * @module
 */
import { tf } from "../deps.ts";
import { type HostTensor, readSafetensors } from "../core/safetensors.ts";
import { type ClipConfig } from "./config.ts";
import { clipInit, type ClipParams } from "./clip.ts";
import { clipOpenAiName, fromOfficial, hostSource, huggingFaceClipSource, type Source } from "./names.ts";
import { disposeTree } from "../core/tree.ts";

/** A loaded teacher. */
export interface LoadedClip {
  readonly config: ClipConfig;
  readonly params: ClipParams;
  readonly naming: "openai" | "huggingface";
}

const shapeOf = (file: string, t: Readonly<Record<string, HostTensor>>, name: string) => {
  const h = t[name];
  if (!h) throw new Error(`${file}: missing tensor "${name}"`);
  return h.shape;
};

/** Reads a CLIP vision tower. Errors name the file and the missing or misshapen tensor. */
export const loadClip = async (file: string): Promise<LoadedClip> => {
  const { tensors } = await readSafetensors(file, {
    names: (n) =>
      n.startsWith("visual.") || n.startsWith("vision_model.") || n === "visual_projection.weight",
  });
  const names = Object.keys(tensors);
  const naming = names.some((n) => n.startsWith("visual."))
    ? "openai"
    : names.some((n) => n.startsWith("vision_model."))
    ? "huggingface"
    : undefined;
  if (!naming) {
    throw new Error(
      `${file}: no CLIP vision tensors ("visual.*" from OpenAI or "vision_model.*" from Hugging Face); is this a CLIP checkpoint?`,
    );
  }
  const prefix = naming === "openai" ? "visual." : "vision_model.";
  const conv = shapeOf(
    file,
    tensors,
    naming === "openai" ? "visual.conv1.weight" : "vision_model.embeddings.patch_embedding.weight",
  );
  const pos = shapeOf(
    file,
    tensors,
    naming === "openai" ? "visual.positional_embedding" : "vision_model.embeddings.position_embedding.weight",
  );
  const out = naming === "openai"
    ? shapeOf(file, tensors, "visual.proj")[1]
    : shapeOf(file, tensors, "visual_projection.weight")[0];
  const layerRe = naming === "openai"
    ? /^visual\.transformer\.resblocks\.(\d+)\./
    : /^vision_model\.encoder\.layers\.(\d+)\./;
  const layers = new Set(names.map((n) => layerRe.exec(n)?.[1]).filter((x) => x !== undefined)).size;
  const width = conv[0], patch = conv[2], side = Math.round(Math.sqrt(pos[0] - 1));
  const config: ClipConfig = {
    imageSize: side * patch,
    patchSize: patch,
    width,
    layers,
    heads: width / 64,
    outDim: out,
    eps: 1e-5,
  };
  const made: tf.Tensor[] = [];
  const get = hostSource(tensors, made);
  const source: Source = naming === "openai" ? (n) => get(prefix + n) : huggingFaceClipSource(get, made);
  const like = clipInit([0, 0], config);
  try {
    return { config, params: fromOfficial(like, source, clipOpenAiName, file), naming };
  } finally {
    disposeTree(like);
    tf.dispose(made);
  }
};
