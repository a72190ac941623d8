/**
 * `deno task extract --checkpoint RUN_DIR|FILE|random --data SOURCE --out FILE.safetensors [flags]`: frozen
 * features of a split (or both) to safetensors, for use elsewhere: `<split>.features` F32 `[N, D]` and
 * `<split>.labels` I32 `[N]` (-1 = unlabelled), with the encoder's origin, pooling and image size in the
 * file's metadata. Read it in Python with `safetensors.numpy.load_file(FILE)`.
 *
 * @module
 */
import { E, t } from "../lib/deps.ts";
import {
  encoderFlags,
  exitWith,
  featureFlags,
  resolveFlags,
  setupTask,
  type TaskSpec,
} from "../lib/eval/cli.ts";
import { type Pooling, splitFeatures } from "../lib/eval/features.ts";
import { disposeEncoder } from "../lib/eval/load.ts";
import { checkTaskOutputs } from "../lib/eval/outputs.ts";
import { type HostTensor, writeSafetensors } from "../lib/core/safetensors.ts";

const spec: TaskSpec = {
  summary: "Extract frozen encoder features to a safetensors file.",
  usage: "deno task extract --checkpoint RUN_DIR|FILE|random --out FILE.safetensors [--data SOURCE] [flags]",
  flags: {
    ...encoderFlags,
    ...featureFlags,
    split: {
      codec: t.keyof({ train: null, val: null, both: null }),
      default: "both",
      arg: "train|val|both",
      help: "which split",
    },
    out: { codec: t.string, arg: "FILE", help: "output .safetensors file (required)" },
  },
};

const argv = Deno.args;
const flags = resolveFlags(argv, spec);
if (E.isLeft(flags)) exitWith(argv, flags.left);
const f = flags.right;
if (typeof f.out !== "string") exitWith(argv, "--out FILE.safetensors is required");
// Before any work: an existing --out needs --force, and the input checkpoint (or a data file) is never
// overwritten, even with it (this task used to replace whatever --out named, its own checkpoint included).
const outputsOk = await checkTaskOutputs(f, [{ flag: "--out", path: f.out }]);
if (E.isLeft(outputsOk)) exitWith(argv, outputsOk.left);
const log = (line: string) => console.log(line);
const setup = await setupTask(f, log);
if (E.isLeft(setup)) exitWith(argv, setup.left);
const { encoder, source } = setup.right;
const pooling = f.pooling as Pooling;
const splits: ("train" | "val")[] = f.split === "both" ? ["train", "val"] : [f.split as "train" | "val"];

try {
  const tensors: Record<string, HostTensor> = {};
  for (const split of splits) {
    const t0 = performance.now();
    const set = await splitFeatures(encoder, source, split, {
      pooling,
      limit: (split === "train" ? f.maxTrain : f.maxVal) as number | undefined,
      batchSize: f.extractBatch as number,
      workers: f.workers as number,
    });
    tensors[`${split}.features`] = { shape: [set.count, set.dim], data: set.features };
    tensors[`${split}.labels`] = { shape: [set.count], data: set.labels };
    log(
      `${split}: ${set.count} images, ${set.dim}-d ${pooling}, ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
  }
  const out = f.out as string;
  await writeSafetensors(out, tensors, {
    origin: encoder.origin,
    data: String(f.data),
    pooling,
    imageSize: String(encoder.config.imageSize),
  });
  log(`wrote ${out}: ${Object.keys(tensors).join(", ")}`);
} catch (e) {
  exitWith(argv, e instanceof Error ? e.message : String(e));
} finally {
  disposeEncoder(encoder);
}
