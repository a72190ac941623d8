/**
 * `deno task finetune --checkpoint RUN_DIR|FILE|random --data SOURCE [flags]`: end-to-end fine-tuning with
 * the official settings of the encoder's preset (lib/eval/finetune.ts has the table and its sources),
 * any of which a flag overrides. The lr defaults to the official lr scaled linearly to this batch
 * (`lr x batch / official batch`). The last line reads `finetune top1=<pct> top5=<pct>` (held-out
 * accuracy after the last step).
 *
 * @module
 */
import { t } from "../lib/deps.ts";
import { key } from "../lib/core/random.ts";
import { flatten } from "../lib/core/tree.ts";
import { disposeTree } from "../lib/core/tree.ts";
import { writeSafetensors } from "../lib/core/safetensors.ts";
import {
  encoderFlags,
  exitWith,
  NonNegativeNumber,
  pct,
  PositiveInt,
  PositiveNumber,
  startTask,
  type TaskSpec,
  UnitInterval,
} from "../lib/eval/cli.ts";
import { finetuneSettings } from "../lib/eval/finetune.ts";
import { runFinetune, sourceClasses } from "../lib/eval/finetune_run.ts";
import { disposeEncoder, presetOf } from "../lib/eval/load.ts";
import { progress } from "../lib/train/progress.ts";

const spec: TaskSpec = {
  summary: "Fine-tune an encoder for classification (layer-wise lr decay, mixup/CutMix, AdamW).",
  usage: "deno task finetune --checkpoint RUN_DIR|FILE|random [--data SOURCE] [flags]",
  flags: {
    ...encoderFlags,
    epochs: { codec: PositiveInt, arg: "N", help: "epochs (default: the preset's official)" },
    steps: { codec: PositiveInt, arg: "N", help: "optimizer steps in all (overrides --epochs)" },
    batchSize: { codec: PositiveInt, arg: "N", help: "batch (default: the preset's official total batch)" },
    lr: { codec: PositiveNumber, arg: "X", help: "peak lr (default: official lr x batch / official batch)" },
    minLr: { codec: NonNegativeNumber, arg: "X", help: "final lr (official 1e-6)" },
    warmupEpochs: { codec: NonNegativeNumber, arg: "X", help: "warmup epochs (default: the preset's)" },
    weightDecay: { codec: NonNegativeNumber, arg: "X", help: "AdamW weight decay (official 0.05)" },
    layerDecay: { codec: UnitInterval, arg: "X", help: "layer-wise lr decay (official 0.75 S/B/L, 0.85 T)" },
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
      help: "save the fine-tuned classifier (.safetensors, project names)",
    },
  },
};

const log = (line: string) => console.log(line);
// --out is checked before any work: an existing file needs --force, an input is never overwritten.
const task = await startTask(
  spec,
  Deno.args,
  log,
  (f) => [{ flag: "--out", path: f.out as string | undefined }],
);
const { f, encoder, source } = task;

try {
  const preset = presetOf(encoder.config) ?? "base";
  const official = finetuneSettings[preset];
  const batchSize = (f.batchSize as number | undefined) ?? official.batchSize;
  const num = (k: string, d: number) => (f[k] as number | undefined) ?? d;
  const settings = {
    ...official,
    batchSize,
    lr: num("lr", official.lr * batchSize / official.batchSize),
    minLr: num("minLr", official.minLr),
    epochs: num("epochs", official.epochs),
    warmupEpochs: num("warmupEpochs", official.warmupEpochs),
    weightDecay: num("weightDecay", official.weightDecay),
    layerDecay: num("layerDecay", official.layerDecay),
    dropPath: num("dropPath", official.dropPath),
    smoothing: num("smoothing", official.smoothing),
    mixup: num("mixup", official.mixup),
    cutmix: num("cutmix", official.cutmix),
  };
  const numClasses = (f.numClasses as number | undefined) ?? (await sourceClasses(source));
  if (numClasses === undefined) {
    exitWith(Deno.args, "the number of classes of this source is unknown: pass --num-classes");
  }
  log(
    `finetune (${preset} settings): batch ${batchSize}, lr ${
      settings.lr.toExponential(2)
    }, ${settings.epochs} epochs ` +
      `(warmup ${settings.warmupEpochs}), layer decay ${settings.layerDecay}, drop path ${settings.dropPath}, ` +
      `smoothing ${settings.smoothing}, mixup ${settings.mixup}, cutmix ${settings.cutmix}, ${numClasses} classes`,
  );
  let bar: ReturnType<typeof progress> | undefined;
  const r = await runFinetune(encoder, {
    source,
    numClasses,
    settings,
    steps: f.steps as number | undefined,
    key: key(f.seed as number),
    workers: f.workers as number,
    evalEvery: f.evalEvery as number | undefined,
    onStep: ({ step, total, loss, lr }) => {
      bar ??= progress({ label: "finetune", total, itemsPerStep: batchSize });
      bar.update(step, { loss, lr });
    },
    onEval: ({ step, accuracy }) =>
      (bar?.log ?? log)(
        `step ${step}: val top1 ${pct(accuracy.top1)} top5 ${pct(accuracy.top5)} (${accuracy.count} images)`,
      ),
  });
  bar?.done();
  if (typeof f.out === "string") {
    await writeSafetensors(f.out, flatten(r.params), {
      origin: encoder.origin,
      config: JSON.stringify(r.config),
      numClasses: String(numClasses),
    });
    log(`wrote ${f.out}`);
  }
  disposeTree(r.params);
  log(`finetune: ${r.steps} steps; best top1 ${pct(r.bestTop1)}`);
  log(`finetune top1=${pct(r.accuracy.top1)} top5=${pct(r.accuracy.top5)}`);
} catch (e) {
  exitWith(Deno.args, e instanceof Error ? e.message : String(e));
} finally {
  disposeEncoder(encoder);
}
