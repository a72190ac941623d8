/**
 * `deno task probe --checkpoint RUN_DIR|FILE|random --data SOURCE [flags]`: probing of a frozen encoder.
 *
 * - `--head linear` (default): a Linear head on pooled features (lib/eval/probe.ts). `--recipe default`:
 *   features whitened with the training split's statistics, AdamW at the lr that does best on a held-back
 *   tenth of the training split, at least `--min-steps` updates. `--recipe official`: the official LARS
 *   recipe, exactly (BatchNorm without affine, blr 0.1, 90 epochs, warmup 10).
 * - `--head attentive`: the official attentive probe, a learned query cross-attending to every token
 *   (lib/eval/attentive.ts), with `tools/run_attentive.py`'s defaults (AdamW lr 5e-4, weight decay 0.05,
 *   30 epochs); `--recipe default` raises the epochs to at least `--min-steps` updates, `--recipe
 *   official` does not.
 *
 * The last line reads `probe top1=<pct> top5=<pct>` (held-out accuracy after the last epoch; top-5 only
 * with 6 classes or more, top-1 alone with fewer). `--out FILE` is the results file (JSON), checked before
 * any work (an existing file needs `--force`; an input of the task is never overwritten). `--log-dir DIR`
 * writes TensorBoard event files (lib/eval/tb_log.ts): per epoch `train/loss`, `train/lr`, `val/top1`,
 * `val/top5`, the default recipe's lr search (`lr_search/lr`, `lr_search/loss` per candidate) and the
 * settings. Features, logits or
 * losses that are not finite stop the task with an error naming the checkpoint. The warmup is given in
 * epochs (`--warmup-epochs`) or in optimizer steps (`--warmup-steps`), not both; `--config FILE` gives
 * any flag's value (lib/eval/cli.ts).
 *
 * @module
 */
import { E, t } from "../lib/deps.ts";
import {
  encoderFlags,
  exitWith,
  featureFlags,
  flagTable,
  logDirFlags,
  NonNegativeInt,
  NonNegativeNumber,
  pct,
  PositiveInt,
  PositiveNumber,
  resolveTaskArgs,
  runTask,
  scoreFlags,
  startTask,
  taskTrainVal,
  UnitInterval,
  WARMUP_ALTERNATIVES,
  warmupEpochsOf,
  writeResults,
} from "../lib/eval/cli.ts";
import { classesOf } from "../lib/eval/features.ts";
import { accuracyFigures, type FitSummary, formatAccuracy } from "../lib/eval/heads.ts";
import { kebabCase } from "../lib/config/flags.ts";
import { disposeProbe, type EpochReport, trainProbe, trainProbeDefault } from "../lib/eval/probe.ts";
import { attentivePlan, disposeAttentive, trainAttentive } from "../lib/eval/attentive.ts";
import { splitTokens, type TokenSet } from "../lib/eval/tokens.ts";
import { key } from "../lib/core/random.ts";
import { openTaskEvents } from "../lib/eval/tb_log.ts";

const spec = {
  summary: "Probe a frozen encoder: a linear head on pooled features, or the official attentive probe.",
  usage: "deno task probe --checkpoint RUN_DIR|FILE|random [--data SOURCE] [--head linear|attentive] [flags]",
  flags: flagTable({
    ...encoderFlags,
    ...featureFlags,
    head: {
      codec: t.keyof({ linear: null, attentive: null }),
      default: "linear",
      arg: "linear|attentive",
      help: "linear: a Linear head on --pooling features; attentive: a learned query over every token",
    },
    recipe: {
      codec: t.keyof({ default: null, official: null }),
      default: "default",
      arg: "default|official",
      help: "default: converges on any data size (docs/evaluation.md); official: the official settings",
    },
    epochs: {
      codec: PositiveInt,
      arg: "N",
      help:
        "epochs (default: linear 90, attentive 30; the default recipe raises them to --min-steps updates)",
    },
    minSteps: {
      codec: PositiveInt,
      arg: "N",
      help: "default recipe: at least this many updates (default: 3000)",
    },
    batchSize: { codec: PositiveInt, arg: "N", help: "batch (default: linear 256, attentive 64)" },
    blr: { codec: PositiveNumber, arg: "X", help: "linear official: lr = blr x batch / 256 (default: 0.1)" },
    lr: {
      codec: PositiveNumber,
      arg: "X",
      help:
        "peak lr (linear official: overrides --blr; linear default: no lr search; default attentive: 5e-4)",
    },
    warmupEpochs: {
      codec: NonNegativeNumber,
      arg: "X",
      help: "warmup in epochs (default: linear official 10, attentive 5); or give --warmup-steps",
    },
    warmupSteps: {
      codec: NonNegativeInt,
      arg: "N",
      help: "warmup in optimizer steps (linear official, attentive); or give --warmup-epochs",
    },
    minLr: {
      codec: NonNegativeNumber,
      arg: "X",
      help: "final lr (default: linear official 0, attentive 1e-6)",
    },
    weightDecay: {
      codec: NonNegativeNumber,
      arg: "X",
      help: "weight decay (default: linear 0, attentive 0.05)",
    },
    smoothing: { codec: UnitInterval, arg: "X", help: "attentive: label smoothing (default: 0.1)" },
    ...scoreFlags,
    ...logDirFlags,
  }),
  alternatives: WARMUP_ALTERNATIVES,
};

/** Flags that mean something for some heads and recipes only: refused elsewhere rather than ignored. */
const applies: Readonly<Record<string, (head: string, recipe: string) => boolean>> = {
  blr: (h, r) => h === "linear" && r === "official",
  minSteps: (_h, r) => r === "default",
  warmupEpochs: (h, r) => h === "attentive" || r === "official",
  warmupSteps: (h, r) => h === "attentive" || r === "official",
  minLr: (h, r) => h === "attentive" || r === "official",
  smoothing: (h) => h === "attentive",
  pooling: (h) => h === "linear",
};

// Checked before any work, as --out is: a flag that would be ignored is a mistake to report (given on the
// command line or in --config FILE).
const given = resolveTaskArgs(Deno.args, spec);
if (E.isRight(given)) {
  const g = given.right.flags as Readonly<Record<string, unknown>>;
  const wrong = Object.entries(applies).filter(([k, ok]) =>
    given.right.given.has(k) && g[k] !== undefined && !ok(g.head as string, g.recipe as string)
  );
  if (wrong.length > 0) {
    exitWith(
      Deno.args,
      wrong.map(([k]) => `--${kebabCase(k)} does not apply to --head ${g.head} --recipe ${g.recipe}`).join(
        "\n",
      ),
    );
  }
}

const log = (line: string) => console.log(line);
// --out and --log-dir are checked before any work: an existing file needs --force, an input is never
// overwritten.
const task = await startTask(spec, Deno.args, log, (f) => [{ flag: "--out", path: f.out }]);

await runTask(task, Deno.args, async ({ f, encoder, source }) => {
  const modelName = encoder.origin;
  const events = await openTaskEvents(f.logDir, { settings: { task: "probe", ...f }, log });
  let numClasses = 0;
  const every = (e: EpochReport) => {
    events.epoch(e, numClasses);
    if ((e.epoch + 1) % Math.max(1, Math.round(e.epochs / 10)) === 0 || e.epoch + 1 === e.epochs) {
      log(
        `epoch ${e.epoch + 1}/${e.epochs} loss ${e.loss.toFixed(4)} lr ${e.lr.toExponential(2)} ` +
          `val ${formatAccuracy(e.accuracy, numClasses)}`,
      );
    }
  };
  const t0 = performance.now();
  let r: FitSummary;
  let sizes: { train: number; val: number };
  let extra: Record<string, unknown> = {};
  if (f.head === "linear") {
    const tv = await taskTrainVal(task, log);
    const { train, val } = tv;
    numClasses = tv.numClasses;
    sizes = { train: train.count, val: val.count };
    const common = { numClasses, key: key(f.seed), modelName, onEpoch: every };
    if (f.recipe === "official") {
      // trainProbe's steps per epoch (drop_last), which --warmup-steps is counted in.
      const perEpoch = Math.floor(train.count / Math.min(f.batchSize ?? 256, train.count));
      const p = await trainProbe(train, val, {
        ...common,
        epochs: f.epochs,
        batchSize: f.batchSize,
        blr: f.blr,
        lr: f.lr,
        warmupEpochs: warmupEpochsOf(f, perEpoch),
        minLr: f.minLr,
        weightDecay: f.weightDecay,
      });
      disposeProbe(p.probe);
      r = p;
      extra = { pooling: f.pooling };
    } else {
      const p = await trainProbeDefault(train, val, {
        ...common,
        epochs: f.epochs,
        minSteps: f.minSteps,
        batchSize: f.batchSize,
        lr: f.lr,
        weightDecay: f.weightDecay,
        onSearch: (s) => {
          events.lrSearch(s);
          log(
            `lr search: ${s.fit} images fitted, ${s.heldBack} held back, ${s.epochs} epochs; held-back loss ` +
              s.lrs.map((lr, i) => `${lr}: ${s.losses[i].toFixed(4)}`).join(", ") +
              ` (standard error ${
                Math.min(...s.errors).toFixed(4)
              }); lr ${s.lr}, the smallest within one error of the lowest`,
          );
        },
      });
      disposeProbe(p.probe);
      r = p;
      extra = { pooling: f.pooling, lrSearch: p.search };
    }
  } else {
    const one = async (split: "train" | "val", limit: number | undefined): Promise<TokenSet> => {
      const t1 = performance.now();
      const s = await splitTokens(encoder, source, split, {
        limit,
        batchSize: f.extractBatch,
        workers: f.workers,
      });
      log(
        `tokens: ${s.count} ${split} images, ${s.length} x ${s.dim}-d, ${
          ((performance.now() - t1) / 1000).toFixed(1)
        } s`,
      );
      return s;
    };
    const train = await one("train", f.maxTrain), val = await one("val", f.maxVal);
    const asSet = (s: TokenSet) => ({
      features: new Float32Array(0),
      labels: s.labels,
      count: s.count,
      dim: 0,
    });
    numClasses = f.numClasses ?? classesOf(asSet(train), asSet(val));
    sizes = { train: train.count, val: val.count };
    const settings = {
      epochs: f.epochs,
      // The official recipe keeps the script's epochs whatever the number of updates they make.
      minSteps: f.recipe === "official" ? 1 : f.minSteps,
      batchSize: f.batchSize,
    };
    // The attentive plan scales the warmup epochs by its epochs over the asked ones (attentive.ts):
    // --warmup-steps is given in the plan's steps, so it is asked for in the epochs that scale back to it.
    const plan = attentivePlan(train.count, settings);
    const warmupEpochs = warmupEpochsOf(f, plan.stepsPerEpoch);
    const p = await trainAttentive(train, val, {
      numClasses,
      heads: encoder.config.heads,
      ...settings,
      lr: f.lr,
      minLr: f.minLr,
      warmupEpochs: f.warmupSteps !== undefined && warmupEpochs !== undefined
        ? (warmupEpochs * (f.epochs ?? 30)) / plan.epochs
        : warmupEpochs,
      weightDecay: f.weightDecay,
      smoothing: f.smoothing,
      key: key(f.seed),
      modelName,
      onEpoch: every,
    });
    disposeAttentive(p.probe);
    r = p;
  }
  const secs = (performance.now() - t0) / 1000;
  log(
    `probe: ${f.head} head, ${f.recipe} recipe, ${numClasses} classes, batch ${r.batchSize}, lr ${
      r.lr.toExponential(3)
    }, ${r.epochs} epochs of ${r.stepsPerEpoch} steps, ${secs.toFixed(1)} s; best top1 ${pct(r.bestTop1)} ` +
      `over epochs; ${r.accuracy.count} held-out images`,
  );
  if (f.out !== undefined) {
    await writeResults(f.out, {
      checkpoint: f.checkpoint,
      origin: encoder.origin,
      data: f.data,
      head: f.head,
      recipe: f.recipe,
      ...extra,
      numClasses,
      ...sizes,
      epochs: r.epochs,
      batchSize: r.batchSize,
      lr: r.lr,
      // top1, and top5 with 6 classes or more (heads.ts accuracyFigures), count.
      ...accuracyFigures(r.accuracy, numClasses),
      count: r.accuracy.count,
      bestTop1: r.bestTop1,
    });
  }
  events.close();
  log(`probe ${formatAccuracy(r.accuracy, numClasses)}`);
});
