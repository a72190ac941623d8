/**
 * Loading a CLIP vision tower from safetensors, in either published naming: OpenAI (`visual.conv1.weight`,
 * `visual.transformer.resblocks.N...`, `visual.proj`) or Hugging Face `CLIPVisionModelWithProjection`
 * (`vision_model.embeddings.patch_embedding.weight`, ..., `visual_projection.weight`). The shape of the
 * tower (width, depth, patch, image size, output width) is read off the tensors; heads = width / 64, as in
 * every released CLIP ViT.
 *
 * Getting real CLIP weights (docs/clip.md): Hugging Face `openai/clip-vit-base-patch16`'s `model.safetensors`
 * loads as it is (the text tower is ignored); OpenAI's `ViT-B-16.pt` (a TorchScript archive) goes through
 * `tools/convert_openai_clip.py` first. "Every released CLIP ViT" means OpenAI's B/32, B/16, L/14 and L/14@336:
 * OpenCLIP's H/14, g/14 and bigG/14 have 80-, 88- and 104-wide heads, which width / 64 gets wrong.
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
  /** The tower's shape as read from the file; `config.layers` is the number of blocks it holds. */
  readonly config: ClipConfig;
  readonly params: ClipParams;
  readonly naming: "openai" | "huggingface";
}

const shapeOf = (file: string, t: Readonly<Record<string, HostTensor>>, name: string) => {
  const h = t[name];
  if (!h) throw new Error(`${file}: missing tensor "${name}"`);
  return h.shape;
};

/**
 * The depth of the tower, checked: the block indices in the file must be 0..N-1. The depth is read off the
 * names, so a file with a block missing in the middle would otherwise load as the shallower tower its
 * count implies (and leave its last block unread); name the first missing block instead.
 */
const blockCount = (file: string, names: readonly string[], layerRe: RegExp): number => {
  const found = [...new Set(names.map((n) => layerRe.exec(n)?.[1]).filter((x) => x !== undefined))]
    .map(Number).sort((a, b) => a - b);
  const missing = found.findIndex((index, i) => index !== i);
  if (missing >= 0) {
    const shown = found.length > 12 ? `${found.slice(0, 12).join(", ")}, ...` : found.join(", ");
    throw new Error(
      `${file}: block ${missing} of the CLIP tower is missing (the file has blocks ${shown}): the file is ` +
        "incomplete or was cut, re-export or re-download it",
    );
  }
  return found.length;
};

/**
 * Depth of the released CLIP vision towers by width (OpenAI ViT-B/32, B/16: 768 x 12, L/14: 1024 x 24;
 * OpenCLIP H/14: 1280 x 32, g/14: 1408 x 40, bigG/14: 1664 x 48). A file cut after its last complete
 * block has contiguous indices and loads; only its depth against these tells it apart.
 */
const RELEASED_DEPTH: Readonly<Record<number, number>> = { 768: 12, 1024: 24, 1280: 32, 1408: 40, 1664: 48 };

/**
 * One line for logs: the tower read from `file` (depth, width, heads, patch, image size, output width, and
 * the naming when given), with a warning when a released CLIP of that width is deeper. Print it where a
 * teacher is loaded: `describeClip(file, loaded.config, loaded.naming)`.
 */
export const describeClip = (file: string, c: ClipConfig, naming?: LoadedClip["naming"]): string => {
  const released = RELEASED_DEPTH[c.width];
  const warning = released !== undefined && released !== c.layers
    ? `; warning: released CLIP towers ${c.width} wide have ${released} blocks, is the file complete?`
    : "";
  const names = naming === undefined ? "" : ` (${naming === "openai" ? "OpenAI" : "Hugging Face"} names)`;
  return `teacher ${file}: CLIP ViT with ${c.layers} block${c.layers === 1 ? "" : "s"} read from the file, ` +
    `${c.width} wide, ${c.heads} heads, ${c.patchSize}px patches of ${c.imageSize}px images, output ` +
    `${c.outDim}${names}${warning}`;
};

/**
 * Reads a CLIP vision tower. Errors name the file and the missing or misshapen tensor, or the missing block
 * when the block indices are not 0..N-1. The depth is the number of blocks in the file (`config.layers`;
 * {@link describeClip} prints it).
 */
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
  const layers = blockCount(file, names, layerRe);
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
