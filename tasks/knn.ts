/**
 * `deno task knn --checkpoint RUN_DIR|FILE|random --data SOURCE [flags]`: weighted k-NN classification on
 * frozen features (k 20, cosine, temperature 0.07; lib/eval/knn.ts). The last line reads
 * `knn top1=<pct> top5=<pct>` (`top<C-1>` with C < 6 classes, top-1 alone with 2). A model whose features
 * are not finite (a diverged run) is not scored: the task stops naming the checkpoint.
 *
 * @module
 */
import { t } from "../lib/deps.ts";
import {
  encoderFlags,
  exitWith,
  featureFlags,
  PositiveInt,
  PositiveNumber,
  startTask,
  type TaskSpec,
  taskTrainVal,
} from "../lib/eval/cli.ts";
import type { Pooling } from "../lib/eval/features.ts";
import { accuracyFigures, formatAccuracy } from "../lib/eval/heads.ts";
import { knnClassify } from "../lib/eval/knn.ts";
import { disposeEncoder } from "../lib/eval/load.ts";

const spec: TaskSpec = {
  summary: "k-NN classification on frozen features (DINO's weighted vote).",
  usage: "deno task knn --checkpoint RUN_DIR|FILE|random [--data SOURCE] [flags]",
  flags: {
    ...encoderFlags,
    ...featureFlags,
    k: { codec: PositiveInt, default: 20, arg: "N", help: "neighbours" },
    temperature: { codec: PositiveNumber, default: 0.07, arg: "X", help: "vote temperature" },
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
  const acc = await knnClassify(train, val, {
    numClasses,
    k: f.k as number,
    temperature: f.temperature as number,
    modelName: encoder.origin,
  });
  if (typeof f.out === "string") {
    const r = {
      checkpoint: f.checkpoint,
      origin: encoder.origin,
      data: f.data,
      pooling,
      k: f.k,
      numClasses,
      // top1 and top5 (top-(C-1) below 6 classes, none below 3: heads.ts accuracyFigures), count.
      ...accuracyFigures(acc, numClasses),
      count: acc.count,
    };
    await Deno.writeTextFile(f.out, JSON.stringify(r, null, 2) + "\n");
  }
  log(`knn ${formatAccuracy(acc, numClasses)}`);
} catch (e) {
  exitWith(Deno.args, e instanceof Error ? e.message : String(e));
} finally {
  disposeEncoder(encoder);
}
