/**
 * `deno task classify --model FILE.safetensors IMAGE...`: the top classes of each image under a classifier
 * fine-tuned by `deno task finetune --out FILE.safetensors` (lib/eval/classifier_io.ts), with the official
 * evaluation preprocessing (resize to size / 0.875, centre crop, ImageNet normalisation). Prints, per
 * image, its path and then the top 5 classes (with fewer than 6 classes, the top classes - 1; with 2, the
 * top one) with their probabilities:
 *
 * ```
 * photos/cat.jpg
 *   1. tabby cat  91.20%
 *   2. tiger cat   5.31%
 * ```
 *
 * An image that cannot be read or decoded is reported and the others are still classified; the exit code
 * is then 1. `--config FILE` gives the flags' values as JSON (lib/eval/cli.ts).
 *
 * @module
 */
import { E, t } from "../lib/deps.ts";
import { describeBackend } from "../lib/core/backend.ts";
import { BackendChoice } from "../lib/config/names.ts";
import { startRuntime } from "../lib/core/runtime.ts";
import { decodeImage } from "../data/decode.ts";
import { exitWith, flagTable, resolveTaskArgs } from "../lib/eval/cli.ts";
import { classifyImage, disposeClassifier, loadClassifier } from "../lib/eval/classifier_io.ts";
import { message } from "../lib/core/fs.ts";

const spec = {
  summary: "Classify images with a fine-tuned classifier (deno task finetune --out FILE.safetensors).",
  usage: "deno task classify --model FILE.safetensors IMAGE...",
  flags: flagTable({
    model: {
      codec: t.string,
      arg: "FILE",
      help: "classifier written by deno task finetune --out (required)",
    },
    backend: {
      codec: BackendChoice,
      default: "auto",
      arg: "NAME",
      help: "tfjs backend: auto, webgpu, wasm, cpu",
    },
  }),
};

const argv = Deno.args;
// Flags, --config FILE (a JSON object of flag values) and the images, as every task reads them.
const parsed = resolveTaskArgs(argv, spec, { positionals: true });
if (E.isLeft(parsed)) exitWith(argv, parsed.left);
const { model, backend } = parsed.right.flags;
const images = parsed.right.positionals;
if (model === undefined) {
  exitWith(argv, "--model FILE.safetensors is required (written by deno task finetune --out)");
}
if (images.length === 0) exitWith(argv, `no image to classify: ${spec.usage}`);
// Every image must exist before the model is loaded: a typo is reported at once, not after the others.
const missing: string[] = [];
for (const p of images) {
  const st = await Deno.stat(p).catch(() => undefined);
  if (st === undefined || !st.isFile) {
    missing.push(`${p}: ${st === undefined ? "no such file" : "not a file"}`);
  }
}
if (missing.length > 0) exitWith(argv, missing.join("\n"));

try {
  console.log(describeBackend(await startRuntime(backend)));
} catch (e) {
  exitWith(argv, message(e));
}
const loaded = await loadClassifier(model);
if (E.isLeft(loaded)) exitWith(argv, loaded.left);
const c = loaded.right;
for (const w of c.warnings) console.error(`warning: ${w}`);
console.log(
  `classifier: ${c.origin}; ${c.classNames.length} classes, ${c.config.imageSize} px, ` +
    `${c.config.dim} wide, ${c.config.depth} deep`,
);
let failed = 0;
try {
  const width = Math.max(...c.classNames.map((n) => n.length));
  for (const path of images) {
    const img = decodeImage(await Deno.readFile(path), path);
    if (E.isLeft(img)) {
      console.error(`error: ${img.left}`);
      failed++;
      continue;
    }
    const top = await classifyImage(c, img.right);
    console.log(path);
    top.forEach((p, i) =>
      console.log(`  ${i + 1}. ${p.name.padEnd(width)} ${(100 * p.probability).toFixed(2).padStart(6)}%`)
    );
  }
} catch (e) {
  exitWith(argv, message(e));
} finally {
  disposeClassifier(c);
}
if (failed > 0) exitWith(argv, `${failed} of ${images.length} image(s) could not be classified (above)`);
