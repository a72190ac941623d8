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
 * never overwritten. `--config FILE` gives any flag's value (lib/eval/cli.ts).
 *
 * @module
 */
import { t } from "../lib/deps.ts";
import { encoderFlags, exitWith, featureFlags, flagTable, runTask, startTask } from "../lib/eval/cli.ts";
import { splitFeatures } from "../lib/eval/features.ts";
import { labelNames, rowPaths, rowsPathOf, sourceClassNames } from "../lib/eval/rows.ts";
import { type HostTensor, writeSafetensors } from "../lib/core/safetensors.ts";

const spec = {
  summary: "Extract frozen encoder features to a safetensors file.",
  usage: "deno task extract --checkpoint RUN_DIR|FILE|random --out FILE.safetensors [--data SOURCE] [flags]",
  flags: flagTable({
    ...encoderFlags,
    ...featureFlags,
    split: {
      codec: t.keyof({ train: null, val: null, both: null }),
      default: "both",
      arg: "train|val|both",
      help: "which split",
    },
    out: {
      codec: t.string,
      arg: "FILE",
      help:
        "features file to write (.safetensors, required); each row's path and class go beside it in FILE.rows.json",
    },
  }),
};

const argv = Deno.args;
const log = (line: string) => console.log(line);
// Before any work: an existing --out needs --force, and the input checkpoint (or a data file) is never
// overwritten, even with it (this task used to replace whatever --out named, its own checkpoint included).
const required = (out: string | undefined): string =>
  out ?? exitWith(argv, "--out FILE.safetensors is required");
const task = await startTask(spec, argv, log, (f) => [
  { flag: "--out", path: required(f.out) },
  { flag: "--out (its rows sidecar)", path: rowsPathOf(required(f.out)) },
]);

await runTask(task, argv, async ({ f, encoder, source }) => {
  const out = required(f.out);
  const rowsPath = rowsPathOf(out);
  const splits: ("train" | "val")[] = f.split === "both" ? ["train", "val"] : [f.split];
  const tensors: Record<string, HostTensor> = {};
  const classNames = await sourceClassNames(source);
  const rows: Record<string, { paths: string[]; labels: (string | null)[] }> = {};
  for (const split of splits) {
    const t0 = performance.now();
    const set = await splitFeatures(encoder, source, split, {
      pooling: f.pooling,
      limit: split === "train" ? f.maxTrain : f.maxVal,
      batchSize: f.extractBatch,
      workers: f.workers,
    });
    tensors[`${split}.features`] = { shape: [set.count, set.dim], data: set.features };
    tensors[`${split}.labels`] = { shape: [set.count], data: set.labels };
    // Named before anything is written, so that features never go out without their rows.
    rows[split] = { paths: await rowPaths(source, split, set), labels: labelNames(set.labels, classNames) };
    log(
      `${split}: ${set.count} images, ${set.dim}-d ${f.pooling}, ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
  }
  const about = {
    origin: encoder.origin,
    data: f.data,
    pooling: f.pooling,
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
});
