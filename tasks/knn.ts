/**
 * `deno task knn --checkpoint RUN_DIR|FILE|random --data SOURCE [flags]`: weighted k-NN classification on
 * frozen features (k 20, cosine, temperature 0.07; lib/eval/knn.ts). The last line reads
 * `knn top1=<pct> top5=<pct>` (top-5 only with 6 classes or more, top-1 alone with fewer). A model whose
 * features are not finite (a diverged run) is not scored: the task stops naming the checkpoint. `--out
 * FILE` is the results file (JSON), checked before any work; `--config FILE` gives any flag's value
 * (lib/eval/cli.ts).
 *
 * @module
 */
import {
  encoderFlags,
  featureFlags,
  flagTable,
  PositiveInt,
  PositiveNumber,
  runTask,
  scoreFlags,
  startTask,
  taskTrainVal,
  writeResults,
} from "../lib/eval/cli.ts";
import { accuracyFigures, formatAccuracy } from "../lib/eval/heads.ts";
import { knnClassify } from "../lib/eval/knn.ts";

const spec = {
  summary: "k-NN classification on frozen features (DINO's weighted vote).",
  usage: "deno task knn --checkpoint RUN_DIR|FILE|random [--data SOURCE] [flags]",
  flags: flagTable({
    ...encoderFlags,
    ...featureFlags,
    k: { codec: PositiveInt, default: 20, arg: "N", help: "neighbours" },
    temperature: { codec: PositiveNumber, default: 0.07, arg: "X", help: "vote temperature" },
    ...scoreFlags,
  }),
};

const log = (line: string) => console.log(line);
// --out is checked before any work: an existing file needs --force, an input is never overwritten.
const task = await startTask(spec, Deno.args, log, (f) => [{ flag: "--out", path: f.out }]);

await runTask(task, Deno.args, async ({ f, encoder }) => {
  const { train, val, numClasses } = await taskTrainVal(task, log);
  const acc = await knnClassify(train, val, {
    numClasses,
    k: f.k,
    temperature: f.temperature,
    modelName: encoder.origin,
  });
  if (f.out !== undefined) {
    await writeResults(f.out, {
      checkpoint: f.checkpoint,
      origin: encoder.origin,
      data: f.data,
      pooling: f.pooling,
      k: f.k,
      numClasses,
      // top1, and top5 with 6 classes or more (heads.ts accuracyFigures), count.
      ...accuracyFigures(acc, numClasses),
      count: acc.count,
    });
  }
  log(`knn ${formatAccuracy(acc, numClasses)}`);
});
