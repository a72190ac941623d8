/**
 * `deno task segment --checkpoint RUN_DIR|FILE|random --data SOURCE [flags]`: semantic segmentation on
 * frozen features (lib/eval/segment.ts): a linear head on the encoder's patch tokens, its logits upsampled
 * bilinearly to pixels, trained with per-pixel cross-entropy, scored by mmseg's mIoU (ignore index 255,
 * classes absent from labels and predictions left out of the mean), mAcc and pixel accuracy aAcc.
 * Sources: `synthetic-seg[:N]` (default, no download) and `ade20k:PATH` (ADEChallengeData2016 layout,
 * 150 classes, label 0 ignored). The last line reads `segment mIoU=<pct> mAcc=<pct> aAcc=<pct>`. A model
 * whose features are not finite (a diverged run) is not scored: the task stops naming the checkpoint.
 *
 * `--out FILE` is the results file: the settings and scores, per-class IoU and accuracy included, as JSON
 * (checked before any work: an existing file needs `--force`, an input is never overwritten). The warmup
 * is given in epochs (`--warmup-epochs`, default 1) or in optimizer steps (`--warmup-steps`), not both;
 * `--config FILE` gives any flag's value (lib/eval/cli.ts). `--log-dir DIR` writes TensorBoard event files
 * (lib/eval/tb_log.ts): per step `train/loss`, `train/lr`, at the last step `val/mIoU`, `val/mAcc`,
 * `val/aAcc`, and the settings at step 0; checked before any work too (a folder, or a path to create).
 *
 * @module
 */
import { E, t } from "../lib/deps.ts";
import { key } from "../lib/core/random.ts";
import { describeBackend } from "../lib/core/backend.ts";
import { startRuntime } from "../lib/core/runtime.ts";
import type { PresetName } from "../lib/models/presets.ts";
import {
  encoderFlags,
  exitWith,
  type FlagSpec,
  logDirFlags,
  NonNegativeInt,
  NonNegativeNumber,
  pct,
  PositiveInt,
  PositiveNumber,
  resolveFlags,
  type TaskSpec,
  WARMUP_ALTERNATIVES,
  warmupEpochsOf,
} from "../lib/eval/cli.ts";
import { disposeEncoder, loadEncoderEither } from "../lib/eval/load.ts";
import { checkOutputs, checkpointInputs, type InputFile } from "../lib/eval/outputs.ts";
import { runSegmentation } from "../lib/eval/segment.ts";
import { checkTaskLogDir, openTaskEvents } from "../lib/eval/tb_log.ts";
import { progress } from "../lib/train/progress.ts";
import {
  ade20kSplitFolder,
  formatSegSource,
  parseSegSource,
  segClassNames,
  type SegSource,
  segSplitSize,
} from "../data/segmentation.ts";

// The encoder flags without those of the classification sources (--data) and their workers.
const { checkpoint, data: _data, workers: _workers, ...encoder } = encoderFlags;

/** The recipe's defaults (docs/evaluation.md, "Semantic segmentation"). */
const flags: Readonly<Record<string, FlagSpec>> = {
  checkpoint,
  data: {
    codec: t.string,
    default: "synthetic-seg",
    arg: "SOURCE",
    help: "synthetic-seg[:N] (N training images, N/4 held out) or ade20k:PATH (images/ and annotations/)",
  },
  ...encoder,
  numClasses: {
    codec: PositiveInt,
    arg: "N",
    help: "classes (default: the source's, 3 synthetic, 150 ADE20K)",
  },
  epochs: {
    codec: PositiveInt,
    default: 10,
    arg: "N",
    help: "passes of the head over the training features",
  },
  batchSize: { codec: PositiveInt, default: 16, arg: "N", help: "images per step of the head" },
  lr: { codec: PositiveNumber, default: 1e-2, arg: "X", help: "peak lr (AdamW)" },
  minLr: { codec: NonNegativeNumber, default: 0, arg: "X", help: "final lr of the cosine" },
  warmupEpochs: {
    codec: NonNegativeNumber,
    default: 1,
    arg: "X",
    help: "linear warmup from 0, in epochs; or give --warmup-steps",
  },
  warmupSteps: {
    codec: NonNegativeInt,
    arg: "N",
    help: "linear warmup from 0, in optimizer steps; or give --warmup-epochs",
  },
  weightDecay: { codec: NonNegativeNumber, default: 1e-4, arg: "X", help: "AdamW weight decay of the head" },
  extractBatch: { codec: PositiveInt, default: 64, arg: "N", help: "images per encoder forward pass" },
  maxTrain: { codec: PositiveInt, arg: "N", help: "use at most N training images (default: all)" },
  maxVal: { codec: PositiveInt, arg: "N", help: "use at most N held-out images (default: all)" },
  out: {
    codec: t.string,
    arg: "FILE",
    help: "results file to write: the settings and scores (per class too) as JSON",
  },
  ...logDirFlags,
};

const spec: TaskSpec = {
  summary: "Semantic segmentation on frozen features: linear head on patch tokens, mIoU (mmseg's).",
  usage: "deno task segment --checkpoint RUN_DIR|FILE|random [--data SOURCE] [flags]",
  flags,
  alternatives: WARMUP_ALTERNATIVES,
};

const log = (line: string) => console.log(line);
const argv = Deno.args;
const resolved = resolveFlags(argv, spec);
if (E.isLeft(resolved)) exitWith(argv, resolved.left);
const f = resolved.right;
const parsed = parseSegSource(f.data as string);
if (E.isLeft(parsed)) exitWith(argv, parsed.left);
const source: SegSource = parsed.right;
if (f.checkpoint === undefined) {
  exitWith(argv, '--checkpoint is required (a run directory, a .safetensors file or "random")');
}
const out = f.out as string | undefined;
// --out and --log-dir are checked before any work: an existing file needs --force, an input is never
// overwritten, the log folder is a folder.
const inputs: InputFile[] = [];
if (source.kind === "ade20k") {
  for (const split of ["train", "val"] as const) {
    const sub = ade20kSplitFolder(split);
    inputs.push({ what: "an image of the data set", path: `${source.path}/images/${sub}`, images: true });
    inputs.push({
      what: "a label map of the data set",
      path: `${source.path}/annotations/${sub}`,
      images: true,
    });
  }
}
if (out !== undefined) {
  const ok = await checkOutputs([{ flag: "--out", path: out }], {
    force: f.force === true,
    inputs: [...(await checkpointInputs(f.checkpoint as string)), ...inputs],
  });
  if (E.isLeft(ok)) exitWith(argv, ok.left);
}
const logOk = await checkTaskLogDir(f, [out], inputs);
if (E.isLeft(logOk)) exitWith(argv, logOk.left);

try {
  log(describeBackend(await startRuntime(f.backend as "auto")));
} catch (e) {
  exitWith(argv, e instanceof Error ? e.message : String(e));
}
const loaded = await loadEncoderEither(f.checkpoint as string, {
  model: f.model as PresetName | undefined,
  imageSize: f.imageSize as number | undefined,
  patchSize: f.patchSize as number | undefined,
  seed: f.seed as number,
});
if (E.isLeft(loaded)) exitWith(argv, loaded.left);
const model = loaded.right;
const c = model.config;
log(
  `encoder: ${model.origin}; ${c.dim} wide, ${c.depth} deep, ${c.heads} heads, ${c.imageSize} px, patch ${c.patchSize}`,
);
for (const w of model.warnings) log(`warning: ${w}`);

try {
  const names = segClassNames(source);
  const numClasses = (f.numClasses as number | undefined) ?? names.length;
  const classNames = names.length === numClasses
    ? names
    : Array.from({ length: numClasses }, (_, i) => String(i));
  const batchSize = f.batchSize as number;
  // The head's steps per epoch (lib/eval/segment.ts trainSegHead), which --warmup-steps is counted in.
  const trainCount = Math.min(
    await segSplitSize(source, "train"),
    (f.maxTrain as number | undefined) ?? Infinity,
  );
  const perEpoch = Math.max(1, Math.floor(trainCount / Math.max(1, Math.min(batchSize, trainCount))));
  const warmupEpochs = warmupEpochsOf(f as { warmupEpochs?: number; warmupSteps?: number }, perEpoch) ?? 0;
  log(
    `segment: ${formatSegSource(source)}, ${numClasses} classes; linear head on ${c.dim}-d patch tokens ` +
      `(${c.imageSize / c.patchSize}x${c.imageSize / c.patchSize} grid, upsampled to ${c.imageSize} px); ` +
      `${f.epochs} epochs, batch ${batchSize}, lr ${
        (f.lr as number).toExponential(1)
      }, weight decay ${f.weightDecay}`,
  );
  const events = await openTaskEvents(f.logDir as string | undefined, {
    settings: { task: "segment", ...f, numClasses, warmupEpochs, origin: model.origin },
    log,
  });
  let bar: ReturnType<typeof progress> | undefined;
  const r = await runSegmentation(model, {
    source,
    numClasses,
    epochs: f.epochs as number,
    batchSize,
    lr: f.lr as number,
    minLr: f.minLr as number,
    warmupEpochs,
    weightDecay: f.weightDecay as number,
    key: key(f.seed as number),
    extractBatch: f.extractBatch as number,
    maxTrain: f.maxTrain as number | undefined,
    maxVal: f.maxVal as number | undefined,
    modelName: model.origin,
    log,
    onStep: ({ step, total, loss, lr }) => {
      events.step({ step, loss, lr });
      bar ??= progress({
        label: "segment",
        total,
        itemsPerStep: batchSize,
        logEvery: Math.max(1, Math.round(total / 10)),
      });
      bar.update(step, { loss, lr });
    },
  });
  bar?.done();
  const s = r.scores;
  events.scalars(r.steps, { "val/mIoU": s.mIoU, "val/mAcc": s.mAcc, "val/aAcc": s.aAcc });
  events.close();
  const fmt = (v: number | null) => (v === null ? "  -  " : v.toFixed(1).padStart(5));
  if (numClasses <= 20) {
    const w = Math.max(...classNames.map((n) => n.length));
    for (let k = 0; k < numClasses; k++) {
      log(`  ${classNames[k].padEnd(w)} IoU ${fmt(s.iou[k])}  Acc ${fmt(s.acc[k])}`);
    }
  }
  log(
    `segment: ${r.train} training images, ${r.steps} steps (last epoch loss ${r.lastLoss.toFixed(4)}); ` +
      `${r.val} held-out images, ${s.pixels} labelled pixels; ${r.seconds.features.toFixed(1)} s features, ` +
      `${r.seconds.train.toFixed(1)} s head, ${r.seconds.val.toFixed(1)} s scoring`,
  );
  if (out !== undefined) {
    const results = {
      checkpoint: f.checkpoint,
      origin: model.origin,
      data: formatSegSource(source),
      numClasses,
      imageSize: c.imageSize,
      patchSize: c.patchSize,
      train: r.train,
      val: r.val,
      epochs: f.epochs,
      steps: r.steps,
      batchSize,
      lr: f.lr,
      minLr: f.minLr,
      warmupEpochs,
      warmupSteps: Math.min(r.steps, Math.round(warmupEpochs * perEpoch)),
      weightDecay: f.weightDecay,
      seed: f.seed,
      mIoU: s.mIoU,
      mAcc: s.mAcc,
      aAcc: s.aAcc,
      pixels: s.pixels,
      perClass: classNames.map((name, k) => ({ name, iou: s.iou[k], acc: s.acc[k] })),
      lastLoss: r.lastLoss,
      seconds: r.seconds,
    };
    await Deno.writeTextFile(out, JSON.stringify(results, null, 2) + "\n");
    log(`wrote ${out}`);
  }
  log(`segment mIoU=${pct(s.mIoU)} mAcc=${pct(s.mAcc)} aAcc=${pct(s.aAcc)}`);
} catch (e) {
  exitWith(argv, e instanceof Error ? e.message : String(e));
} finally {
  disposeEncoder(model);
}
