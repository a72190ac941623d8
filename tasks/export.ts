/**
 * `deno task export --checkpoint RUN_DIR|FILE --to official|timm --out FILE.safetensors [--force]`: the
 * student encoder of a pretraining run (its newest checkpoint), a checkpoint file or an official-names file,
 * written as safetensors under another toolkit's names (lib/models/names.ts):
 *
 * - `--to official`: the official CAE names of a pretraining checkpoint (`encoder.patch_embed.proj.weight`,
 *   `encoder.blocks.N.attn.qkv.weight`, `...q_bias`, `...v_bias`, `...gamma_1`, `encoder.norm.weight`,
 *   `encoder.pos_embed`), which `deno task probe --checkpoint FILE` and every task of this toolkit read
 *   back, and which the official fine-tuning scripts read after dropping the `encoder.` prefix;
 * - `--to timm`: timm's `VisionTransformer` names (`cls_token`, `pos_embed`, `patch_embed.proj.weight`,
 *   `blocks.N.attn.qkv.weight` and one `qkv.bias` = concat(q_bias, zeros, v_bias), `blocks.N.ls1.gamma`,
 *   `norm.weight`, ...), loadable with `load_state_dict(strict=True)` into the model the task prints.
 *
 * Weights are float32 in PyTorch layouts (Linear `[out, in]`, the patch embedding `[out, in, kh, kw]`).
 * The file's metadata holds the format, the naming, the encoder's origin and shapes (and, for timm, the
 * `VisionTransformer` arguments as JSON). `--out` is checked before any work: an existing file needs
 * `--force`, and an input of the task (the checkpoint, its index, the run's config) is never overwritten.
 *
 * @module
 */
import { E, t, tf } from "../lib/deps.ts";
import { writeSafetensors } from "../lib/core/safetensors.ts";
import { disposeTree, type Params } from "../lib/core/tree.ts";
import { encoderFlags, exitWith, flagTable, openEncoder, resolveTaskArgs } from "../lib/eval/cli.ts";
import { disposeEncoder } from "../lib/eval/load.ts";
import { checkTaskOutputs } from "../lib/eval/outputs.ts";
import { encoderToOfficial, encoderToTimm } from "../lib/models/names.ts";
import { message } from "../lib/core/fs.ts";

// The encoder flags without those of a data source: export reads weights only.
const { data: _data, workers: _workers, checkpoint, force, ...shape } = encoderFlags;

const spec = {
  summary: "Export a pretrained student encoder under the official CAE names or timm's ViT names.",
  usage: "deno task export --checkpoint RUN_DIR|FILE --to official|timm --out FILE.safetensors [--force]",
  flags: flagTable({
    checkpoint,
    to: {
      codec: t.keyof({ official: null, timm: null }),
      arg: "official|timm",
      help:
        "official: CAE's names (encoder.*, what this toolkit reads back); timm: VisionTransformer's (required)",
    },
    out: {
      codec: t.string,
      arg: "FILE",
      help: "weights file to write (.safetensors, required)",
    },
    force,
    ...shape,
  }),
};

const argv = Deno.args;
const log = (line: string) => console.log(line);
const args = resolveTaskArgs(argv, spec);
if (E.isLeft(args)) exitWith(argv, args.left);
const f = args.right.flags;
if (f.checkpoint === undefined) {
  exitWith(argv, "--checkpoint is required: a pretraining run directory or a checkpoint .safetensors file");
}
if (f.to === undefined) {
  exitWith(argv, "--to is required: official (the official CAE names) or timm (timm's VisionTransformer)");
}
if (f.out === undefined) exitWith(argv, "--out FILE.safetensors is required");
const to = f.to, out = f.out;
// Before any work: an existing --out needs --force; the checkpoint (and its run) is never overwritten.
const ok = await checkTaskOutputs(f, [{ flag: "--out", path: out }]);
if (E.isLeft(ok)) exitWith(argv, ok.left);
const opened = await openEncoder(f, log);
if (E.isLeft(opened)) exitWith(argv, opened.left);
const model = opened.right;
const c = model.config;

/** timm's `VisionTransformer` arguments for this encoder (its defaults do the rest: module doc). */
const timmArgs = {
  img_size: c.imageSize,
  patch_size: c.patchSize,
  embed_dim: c.dim,
  depth: c.depth,
  num_heads: c.heads,
  mlp_ratio: c.mlpRatio,
  init_values: c.layerScale,
  num_classes: 0,
};

let tensors: Record<string, tf.Tensor> = {};
try {
  const params = model.params as unknown as Params;
  tensors = to === "official"
    ? encoderToOfficial(params, model.pos, c.patchSize)
    : encoderToTimm(params, model.pos, c.patchSize);
  await writeSafetensors(out, tensors, {
    format: "caev2-encoder",
    naming: to,
    origin: model.origin,
    config: JSON.stringify(c),
    ...(to === "timm" ? { timm: JSON.stringify(timmArgs) } : {}),
  });
  const count = Object.keys(tensors).length;
  if (to === "official") {
    log(
      `wrote ${out}: ${count} tensors under the official CAE names (encoder.*); read it back with ` +
        `deno task probe --checkpoint ${out} (or any task's --checkpoint)`,
    );
  } else {
    const kwargs = Object.entries(timmArgs).map(([k, v]) => `${k}=${v}`).join(", ");
    log(
      `wrote ${out}: ${count} tensors under timm's names; in Python: ` +
        `timm.models.vision_transformer.VisionTransformer(${kwargs})` +
        `.load_state_dict(safetensors.torch.load_file("${out}"))`,
    );
  }
} catch (e) {
  exitWith(argv, message(e));
} finally {
  disposeTree(tensors as Params);
  disposeEncoder(model);
}
