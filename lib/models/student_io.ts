/**
 * Saving and loading the CAE v2 student as safetensors, under the project's names (`encoder.blocks.0.attn.
 * qkv.kernel`, kernels `[in, out]`) or under the official CAE names and layouts (`encoder.blocks.0.attn.qkv.
 * weight`, `[out, in]`), so official checkpoints converted to safetensors load and our weights load in the
 * official code. Official files may carry a prefix (`student.`, `model.`, `module.`): it is detected.
 *
 * Converting an official CAE v2 checkpoint (`.pth`, the state dict under "model"):
 * `python -c "import torch; from safetensors.torch import save_file; sd=torch.load('caev2.pth','cpu')['model'];
 * save_file({k: v.float().contiguous() for k, v in sd.items()}, 'caev2.safetensors')"`.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { readSafetensors, writeSafetensors } from "../core/safetensors.ts";
import { disposeTree, flatten } from "../core/tree.ts";
import type { CaeV2Config } from "./config.ts";
import { caev2Init, type CaeV2Params } from "./caev2.ts";
import { fromOfficial, hostSource, type Source, studentOfficialName, toOfficial } from "./names.ts";

/** Which names a file uses. */
export type Naming = "project" | "official";

const OFFICIAL_PREFIXES = ["", "student.", "model.", "module."];

/** Writes the student (atomically) with the config in the metadata. */
export const saveStudent = async (
  path: string,
  params: CaeV2Params,
  config: CaeV2Config,
  naming: Naming = "project",
): Promise<void> => {
  const meta = { format: "caev2-student", naming, config: JSON.stringify(config) };
  if (naming === "project") return writeSafetensors(path, flatten(params), meta);
  const official = toOfficial(params, studentOfficialName, config.patchSize);
  try {
    await writeSafetensors(path, official, meta);
  } finally {
    tf.dispose(Object.values(official));
  }
};

/**
 * Reads a student for `config` from either naming (detected). Unrelated tensors in the file (a teacher,
 * `regresser.norm.*`, optimizer state) are ignored; a missing or misshapen student tensor fails with its
 * name, the expected and the found shape.
 */
export const loadStudent = async (
  path: string,
  config: CaeV2Config,
): Promise<{ params: CaeV2Params; naming: Naming }> => {
  const { tensors } = await readSafetensors(path);
  const names = Object.keys(tensors);
  const like = caev2Init([0, 0], config);
  const made: tf.Tensor[] = [];
  const get = hostSource(tensors, made);
  try {
    // Detect by the patch embedding, whose name differs between the namings (many others coincide).
    const ours = "encoder.patchEmbed.kernel";
    const ownPrefix = ["", "params."].find((p) => names.includes(p + ours));
    if (ownPrefix !== undefined) {
      const params = fromOfficial(
        like,
        (n) => get(ownPrefix + n),
        (n) => ({ name: n, layout: "same" }),
        path,
      );
      return { params, naming: "project" };
    }
    const probe = "encoder.patch_embed.proj.weight";
    const prefix = OFFICIAL_PREFIXES.find((p) => names.includes(p + probe));
    if (prefix === undefined) {
      throw new Error(
        `${path}: neither project names ("${ours}") nor official CAE names ("${probe}", optionally ` +
          `prefixed by student./model./module.) found; is this a CAE v2 student checkpoint?`,
      );
    }
    const source: Source = (n) => get(prefix + n);
    return { params: fromOfficial(like, source, studentOfficialName, path), naming: "official" };
  } finally {
    disposeTree(like);
    tf.dispose(made);
  }
};
