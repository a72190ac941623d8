/**
 * `deno task extract --checkpoint RUN_DIR|FILE|random --data SOURCE --out FILE.safetensors [flags]`: frozen
 * features of a split (or both) to safetensors, for use elsewhere: `<split>.features` F32 `[N, D]` and
 * `<split>.labels` I32 `[N]` (-1 = unlabelled), with the encoder's origin, pooling, image size and the class
 * names (JSON array, when the source has names) in the file's metadata. Read it in Python with
 * `safetensors.numpy.load_file(FILE)`.
 *
 * What each row is goes to a sidecar JSON beside it, `FILE.rows.json` (`FILE` without `.safetensors`; its
 * name is also in the metadata as `rows`), because a safetensors header is capped at 100 MB in Python and
 * ImageNet's paths would not fit: `{ "features", "origin", "data", "pooling", "imageSize", "classNames",
 * "<split>": { "paths": [...], "labels": [...] } }`, row `i` of `<split>.features` being the file
 * `paths[i]` (`synthetic:<index>` for the synthetic source, `<shard>:<key>.<ext>` for WebDataset shards)
 * of class `labels[i]` (its name; the integer label as text when the source has no names, null where
 * unlabelled). Both files are checked before any work: an existing one needs `--force`, an input file is
 * never overwritten.
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
import { labelNames, rowPaths, rowsPathOf, sourceClassNames } from "../lib/eval/rows.ts";
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
const outputsOk = await checkTaskOutputs(f, [
  { flag: "--out", path: f.out },
  { flag: "--out (its rows sidecar)", path: rowsPathOf(f.out) },
]);
if (E.isLeft(outputsOk)) exitWith(argv, outputsOk.left);
const log = (line: string) => console.log(line);
const setup = await setupTask(f, log);
if (E.isLeft(setup)) exitWith(argv, setup.left);
const { encoder, source } = setup.right;
const pooling = f.pooling as Pooling;
const splits: ("train" | "val")[] = f.split === "both" ? ["train", "val"] : [f.split as "train" | "val"];

try {
  const tensors: Record<string, HostTensor> = {};
  const classNames = await sourceClassNames(source);
  const rows: Record<string, { paths: string[]; labels: (string | null)[] }> = {};
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
    // Named before anything is written, so that features never go out without their rows.
    rows[split] = { paths: await rowPaths(source, split, set), labels: labelNames(set.labels, classNames) };
    log(
      `${split}: ${set.count} images, ${set.dim}-d ${pooling}, ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
  }
  const out = f.out as string, rowsPath = rowsPathOf(out);
  const about = {
    origin: encoder.origin,
    data: String(f.data),
    pooling,
    imageSize: encoder.config.imageSize,
  };
  await writeSafetensors(out, tensors, {
    ...about,
    imageSize: String(about.imageSize),
    ...(classNames === undefined ? {} : { classNames: JSON.stringify(classNames) }),
    rows: rowsPath.slice(rowsPath.lastIndexOf("/") + 1),
  });
  log(`wrote ${out}: ${Object.keys(tensors).join(", ")}`);
  const sidecar = { features: out, ...about, classNames: classNames ?? null, ...rows };
  await Deno.writeTextFile(rowsPath, JSON.stringify(sidecar) + "\n");
  log(`wrote ${rowsPath}: each row's path and label name`);
} catch (e) {
  exitWith(argv, e instanceof Error ? e.message : String(e));
} finally {
  disposeEncoder(encoder);
}
