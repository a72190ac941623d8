/**
 * `deno task probe --checkpoint RUN_DIR|FILE|random --data SOURCE [flags]`: linear probing of a frozen
 * encoder with the official recipe (lib/eval/probe.ts). The last line reads `probe top1=<pct> top5=<pct>`
 * (held-out accuracy after the last epoch). `--out FILE` is checked before any work (an existing file needs
 * `--force`; an input of the task is never overwritten); non-finite features, logits or losses stop the
 * task with an error naming the checkpoint.
 *
 * @module
 */
import {
  encoderFlags,
  exitWith,
  featureFlags,
  NonNegativeNumber,
  pct,
  PositiveInt,
  PositiveNumber,
  startTask,
  type TaskSpec,
  taskTrainVal,
} from "../lib/eval/cli.ts";
import type { Pooling } from "../lib/eval/features.ts";
import { disposeEncoder } from "../lib/eval/load.ts";
import { disposeProbe, trainProbe } from "../lib/eval/probe.ts";
import { key } from "../lib/core/random.ts";
import { t } from "../lib/deps.ts";

const spec: TaskSpec = {
  summary: "Linear probe of a frozen encoder: BatchNorm (no affine) + Linear, LARS, official schedule.",
  usage: "deno task probe --checkpoint RUN_DIR|FILE|random [--data SOURCE] [flags]",
  flags: {
    ...encoderFlags,
    ...featureFlags,
    epochs: { codec: PositiveInt, default: 90, arg: "N", help: "probe epochs (official 90)" },
    batchSize: {
      codec: PositiveInt,
      default: 256,
      arg: "N",
      help: "probe batch (official 8 x 1024); lr = blr x batch / 256",
    },
    blr: { codec: PositiveNumber, default: 0.1, arg: "X", help: "base lr (official 0.1)" },
    lr: { codec: PositiveNumber, arg: "X", help: "absolute lr (overrides --blr)" },
    warmupEpochs: { codec: t.number, default: 10, arg: "N", help: "linear warmup epochs (official 10)" },
    minLr: { codec: NonNegativeNumber, default: 0, arg: "X", help: "final lr of the cosine (official 0)" },
    weightDecay: { codec: NonNegativeNumber, default: 0, arg: "X", help: "LARS weight decay (official 0)" },
    numClasses: { codec: PositiveInt, arg: "N", help: "classes (default: largest label + 1)" },
    out: { codec: t.string, arg: "FILE", help: "also write the results as JSON" },
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
const { f, encoder } = task;

const pooling = f.pooling as Pooling;

try {
  const { train, val, numClasses } = await taskTrainVal(task, log);
  const epochs = f.epochs as number;
  const t0 = performance.now();
  const r = await trainProbe(train, val, {
    numClasses,
    epochs,
    batchSize: f.batchSize as number,
    blr: f.blr as number,
    lr: f.lr as number | undefined,
    warmupEpochs: f.warmupEpochs as number,
    minLr: f.minLr as number,
    weightDecay: f.weightDecay as number,
    key: key(f.seed as number),
    modelName: encoder.origin,
    onEpoch: ({ epoch, loss, lr, accuracy }) => {
      if ((epoch + 1) % Math.max(1, Math.round(epochs / 10)) === 0 || epoch + 1 === epochs) {
        log(
          `epoch ${epoch + 1}/${epochs} loss ${loss.toFixed(4)} lr ${lr.toExponential(2)} ` +
            `val top1 ${pct(accuracy.top1)} top5 ${pct(accuracy.top5)}`,
        );
      }
    },
  });
  const secs = (performance.now() - t0) / 1000;
  log(
    `probe: ${numClasses} classes, batch ${r.batchSize}, lr ${
      r.lr.toExponential(3)
    }, ${r.stepsPerEpoch} steps/epoch, ` +
      `${secs.toFixed(1)} s; best top1 ${pct(r.bestTop1)} over epochs; ${r.accuracy.count} held-out images`,
  );
  if (typeof f.out === "string") {
    await Deno.writeTextFile(
      f.out,
      JSON.stringify(
        {
          checkpoint: f.checkpoint,
          origin: encoder.origin,
          data: f.data,
          pooling,
          numClasses,
          train: train.count,
          val: val.count,
          epochs,
          batchSize: r.batchSize,
          lr: r.lr,
          top1: r.accuracy.top1,
          top5: r.accuracy.top5,
          bestTop1: r.bestTop1,
        },
        null,
        2,
      ) + "\n",
    );
  }
  disposeProbe(r.probe);
  log(`probe top1=${pct(r.accuracy.top1)} top5=${pct(r.accuracy.top5)}`);
} catch (e) {
  exitWith(Deno.args, e instanceof Error ? e.message : String(e));
} finally {
  disposeEncoder(encoder);
}
