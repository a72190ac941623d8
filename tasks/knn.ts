/**
 * `deno task knn --checkpoint RUN_DIR|FILE|random --data SOURCE [flags]`: weighted k-NN classification on
 * frozen features (k 20, cosine, temperature 0.07; lib/eval/knn.ts). The last line reads
 * `knn top1=<pct> top5=<pct>`.
 *
 * @module
 */
import { t } from "../lib/deps.ts";
import {
  encoderFlags,
  exitWith,
  featureFlags,
  pct,
  PositiveInt,
  PositiveNumber,
  startTask,
  type TaskSpec,
  taskTrainVal,
} from "../lib/eval/cli.ts";
import type { Pooling } from "../lib/eval/features.ts";
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
const task = await startTask(spec, Deno.args, log);
const { f, encoder } = task;
const pooling = f.pooling as Pooling;

try {
  const { train, val, numClasses } = await taskTrainVal(task, log);
  const acc = await knnClassify(train, val, {
    numClasses,
    k: f.k as number,
    temperature: f.temperature as number,
  });
  if (typeof f.out === "string") {
    const r = {
      checkpoint: f.checkpoint,
      origin: encoder.origin,
      data: f.data,
      pooling,
      k: f.k,
      numClasses,
      ...acc,
    };
    await Deno.writeTextFile(f.out, JSON.stringify(r, null, 2) + "\n");
  }
  log(`knn top1=${pct(acc.top1)} top5=${pct(acc.top5)}`);
} catch (e) {
  exitWith(Deno.args, e instanceof Error ? e.message : String(e));
} finally {
  disposeEncoder(encoder);
}
