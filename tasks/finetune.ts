/**
 * `deno task finetune --checkpoint RUN_DIR|FILE|random --data SOURCE [flags]`: end-to-end fine-tuning with
 * the official settings of the encoder's preset (lib/eval/finetune.ts has the table and its sources),
 * any of which a flag overrides. The lr defaults to the official lr scaled linearly to this batch
 * (`lr x batch / official batch`). The last line reads `finetune top1=<pct> top5=<pct>` (held-out
 * accuracy after the last step; top-5 only with 6 classes or more, top-1 alone with fewer).
 *
 * The warmup is given in epochs (`--warmup-epochs`) or in optimizer steps (`--warmup-steps`), not both;
 * `--config FILE` gives any flag's value (lib/eval/cli.ts).
 *
 * What it writes (every path checked before any work; an existing file needs `--force`):
 *
 * - `--out M.safetensors`: the classifier file, with its shapes, origin and class names in the metadata
 *   (lib/eval/classifier_io.ts), for `deno task classify --model M.safetensors IMAGE...`;
 * - `--metrics FILE` (default with `--out`: `M.metrics.jsonl`): one JSON line per evaluation of the
 *   held-out split (each epoch unless `--eval-every`): `epoch`, `step`, mean training `loss` since the
 *   previous line, `lr`, `top1`, `top5` (as the last line: with 6 classes or more), `count`;
 * - `--results FILE` (default with `--out`: `M.results.json`): the run's settings and final scores, in
 *   the shape of the probe's and k-NN's `--out` JSON;
 * - `--log-dir DIR`: TensorBoard event files (lib/eval/tb_log.ts): per step `train/loss`, `train/lr`,
 *   per evaluation `val/top1`, `val/top5`, and the settings at step 0.
 *
 * @module
 */
import { t } from "../lib/deps.ts";
import { key } from "../lib/core/random.ts";
import { disposeTree } from "../lib/core/tree.ts";
import {
  encoderFlags,
  exitWith,
  flagTable,
  type FlagValues,
  logDirFlags,
  NonNegativeInt,
  NonNegativeNumber,
  pct,
  PositiveInt,
  PositiveNumber,
  runTask,
  startTask,
  UnitInterval,
  WARMUP_ALTERNATIVES,
  warmupEpochsOf,
  writeResults,
} from "../lib/eval/cli.ts";
import { saveClassifier } from "../lib/eval/classifier_io.ts";
import { finetuneSettings } from "../lib/eval/finetune.ts";
import { runFinetune, sourceClasses } from "../lib/eval/finetune_run.ts";
import { accuracyFigures, formatAccuracy } from "../lib/eval/heads.ts";
import { presetOf } from "../lib/eval/load.ts";
import { openTaskEvents } from "../lib/eval/tb_log.ts";
import { sourceClassNames } from "../lib/eval/rows.ts";
import { progress } from "../lib/train/progress.ts";
import { datasetSize } from "../data/loader.ts";

const spec = {
  summary: "Fine-tune an encoder for classification (layer-wise lr decay, mixup/CutMix, AdamW).",
  usage: "deno task finetune --checkpoint RUN_DIR|FILE|random [--data SOURCE] [flags]",
  flags: flagTable({
    ...encoderFlags,
    epochs: { codec: PositiveInt, arg: "N", help: "epochs (default: the preset's official)" },
    steps: { codec: PositiveInt, arg: "N", help: "optimizer steps in all (overrides --epochs)" },
    batchSize: { codec: PositiveInt, arg: "N", help: "batch (default: the preset's official total batch)" },
    lr: { codec: PositiveNumber, arg: "X", help: "peak lr (default: official lr x batch / official batch)" },
    minLr: { codec: NonNegativeNumber, arg: "X", help: "final lr (default: the official 1e-6)" },
    warmupEpochs: {
      codec: NonNegativeNumber,
      arg: "X",
      help: "warmup in epochs (default: the preset's); or give --warmup-steps",
    },
    warmupSteps: {
      codec: NonNegativeInt,
      arg: "N",
      help: "warmup in optimizer steps; or give --warmup-epochs",
    },
    weightDecay: {
      codec: NonNegativeNumber,
      arg: "X",
      help: "AdamW weight decay (default: the official 0.05)",
    },
    layerDecay: {
      codec: UnitInterval,
      arg: "X",
      help: "layer-wise lr decay (default: the official 0.75 S/B/L, 0.85 T)",
    },
    dropPath: { codec: UnitInterval, arg: "X", help: "drop path of the last block (default: the preset's)" },
    smoothing: { codec: UnitInterval, arg: "X", help: "label smoothing (default: the preset's)" },
    mixup: { codec: NonNegativeNumber, arg: "X", help: "mixup Beta alpha, 0 = off (default: the preset's)" },
    cutmix: {
      codec: NonNegativeNumber,
      arg: "X",
      help: "CutMix Beta alpha, 0 = off (default: the preset's)",
    },
    numClasses: {
      codec: PositiveInt,
      arg: "N",
      help: "classes (default: from the source; required for wds)",
    },
    evalEvery: {
      codec: PositiveInt,
      arg: "N",
      help: "score the held-out split every N steps (default: each epoch)",
    },
    out: {
      codec: t.string,
      arg: "FILE",
      help:
        "classifier file to write (.safetensors with its class names, for deno task classify); --metrics and --results go beside it",
    },
    metrics: {
      codec: t.string,
      arg: "FILE",
      help: "one JSON line per evaluation: epoch, step, loss, lr, top1, top5 (default: beside --out)",
    },
    results: {
      codec: t.string,
      arg: "FILE",
      help: "the settings and final scores as JSON (default: beside --out)",
    },
    ...logDirFlags,
  }),
  alternatives: WARMUP_ALTERNATIVES,
};

/** `--metrics` and `--results`, given or beside `--out` (`M.safetensors` -> `M.metrics.jsonl`, `M.results.json`). */
const outputsOf = (f: FlagValues<typeof spec.flags>) => {
  const stem = f.out?.replace(/\.safetensors$/, "");
  return {
    out: f.out,
    metrics: f.metrics ?? (stem === undefined ? undefined : `${stem}.metrics.jsonl`),
    results: f.results ?? (stem === undefined ? undefined : `${stem}.results.json`),
  };
};

const log = (line: string) => console.log(line);
// Every output is checked before any work: an existing file needs --force, an input is never overwritten.
const task = await startTask(spec, Deno.args, log, (f) => {
  const o = outputsOf(f);
  return [
    { flag: "--out", path: o.out },
    { flag: f.metrics === undefined ? "--metrics (beside --out)" : "--metrics", path: o.metrics },
    { flag: f.results === undefined ? "--results (beside --out)" : "--results", path: o.results },
  ];
});
const outputs = outputsOf(task.f);

await runTask(task, Deno.args, async ({ f, encoder, source }) => {
  const preset = presetOf(encoder.config) ?? "base";
  const official = finetuneSettings[preset];
  const batchSize = f.batchSize ?? official.batchSize;
  // runFinetune's steps per epoch (drop_last; all the steps when the source's size is unknown), which
  // --warmup-steps is counted in.
  const trainSize = await datasetSize(source, "train");
  const perEpoch = trainSize === undefined ? undefined : Math.floor(trainSize / batchSize);
  const stepsPerEpoch = perEpoch ?? f.steps ?? 1;
  const settings = {
    ...official,
    batchSize,
    lr: f.lr ?? official.lr * batchSize / official.batchSize,
    minLr: f.minLr ?? official.minLr,
    epochs: f.epochs ?? official.epochs,
    warmupEpochs: warmupEpochsOf(f, stepsPerEpoch) ?? official.warmupEpochs,
    weightDecay: f.weightDecay ?? official.weightDecay,
    layerDecay: f.layerDecay ?? official.layerDecay,
    dropPath: f.dropPath ?? official.dropPath,
    smoothing: f.smoothing ?? official.smoothing,
    mixup: f.mixup ?? official.mixup,
    cutmix: f.cutmix ?? official.cutmix,
  };
  const numClasses = f.numClasses ?? (await sourceClasses(source));
  if (numClasses === undefined) {
    exitWith(Deno.args, "the number of classes of this source is unknown: pass --num-classes");
  }
  // The class names go with the saved model (deno task classify prints them); shards have none: labels.
  const known = await sourceClassNames(source);
  const classNames = known !== undefined && known.length === numClasses
    ? known
    : Array.from({ length: numClasses }, (_, i) => String(i));
  if (known !== undefined && known.length !== numClasses) {
    log(
      `warning: the source has ${known.length} classes, --num-classes ${numClasses}: classes named by label`,
    );
  }
  log(
    `finetune (${preset} settings): batch ${batchSize}, lr ${
      settings.lr.toExponential(2)
    }, ${settings.epochs} epochs ` +
      `(warmup ${
        f.warmupSteps !== undefined ? `${f.warmupSteps} steps` : settings.warmupEpochs
      }), layer decay ${settings.layerDecay}, drop path ${settings.dropPath}, ` +
      `smoothing ${settings.smoothing}, mixup ${settings.mixup}, cutmix ${settings.cutmix}, ${numClasses} classes`,
  );
  if (outputs.out === undefined) {
    log("note: the classifier is not saved; pass --out FILE.safetensors to keep it (for deno task classify)");
  }
  const events = await openTaskEvents(f.logDir, {
    settings: { task: "finetune", preset, ...f, ...settings, numClasses },
    log,
  });
  let bar: ReturnType<typeof progress> | undefined;
  let firstLine = true;
  const r = await runFinetune(encoder, {
    source,
    numClasses,
    settings,
    steps: f.steps,
    key: key(f.seed),
    workers: f.workers,
    evalEvery: f.evalEvery,
    onStep: ({ step, total, loss, lr }) => {
      events.step({ step, loss, lr });
      bar ??= progress({ label: "finetune", total, itemsPerStep: batchSize });
      bar.update(step, { loss, lr });
    },
    onEval: async ({ step, epoch, loss, lr, accuracy }) => {
      events.accuracy(step, accuracy, numClasses);
      (bar?.log ?? log)(
        `step ${step}: val ${
          formatAccuracy(accuracy, numClasses).replace(/=/g, " ")
        } (${accuracy.count} images)`,
      );
      if (outputs.metrics === undefined) return;
      const line = { epoch, step, loss, lr, ...accuracyFigures(accuracy, numClasses), count: accuracy.count };
      // Line by line, so that an interrupted run keeps the epochs it finished; the first line replaces a
      // file that --force allowed.
      await Deno.writeTextFile(outputs.metrics, JSON.stringify(line) + "\n", { append: !firstLine });
      firstLine = false;
    },
  });
  bar?.done();
  events.close();
  if (outputs.out !== undefined) {
    await saveClassifier(outputs.out, r.params, r.config, { origin: encoder.origin, classNames });
    log(`wrote ${outputs.out} (classify with: deno task classify --model ${outputs.out} IMAGE...)`);
  }
  disposeTree(r.params);
  if (outputs.metrics !== undefined) log(`wrote ${outputs.metrics}`);
  if (outputs.results !== undefined) {
    const results = {
      checkpoint: f.checkpoint,
      origin: encoder.origin,
      data: f.data,
      numClasses,
      classNames,
      train: trainSize ?? null,
      val: r.accuracy.count,
      epochs: r.steps / r.stepsPerEpoch,
      steps: r.steps,
      batchSize,
      lr: settings.lr,
      settings,
      ...accuracyFigures(r.accuracy, numClasses),
      bestTop1: r.bestTop1,
      count: r.accuracy.count,
      model: outputs.out ?? null,
      metrics: outputs.metrics ?? null,
    };
    await writeResults(outputs.results, results);
    log(`wrote ${outputs.results}`);
  }
  log(`finetune: ${r.steps} steps; best top1 ${pct(r.bestTop1)}`);
  log(`finetune ${formatAccuracy(r.accuracy, numClasses)}`);
});
