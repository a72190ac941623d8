/**
 * The command lines of the evaluation tasks (probe, knn, finetune, extract, classify, segment, export):
 * flags decoded against one closed io-ts codec per task (lib/config/codec.ts), errors naming the flag as
 * typed, `--help` generated from the same table. Every task takes `--config FILE`, a JSON object of flag
 * values by camelCase name (`{"batchSize": 64}` for `--batch-size 64`; an unknown key is refused by
 * name): built-in defaults < `--config FILE` < flags. Two flags that give one setting in two ways (a
 * task's `alternatives`, such as `--warmup-epochs` and `--warmup-steps`) are never taken together from
 * one source, and the one a higher source gives replaces the other from below.
 *
 * `--out` means one kind of output per task, and each task's `--help` names it: a run directory
 * (pretrain), a JSON results file (probe, knn, segment), a safetensors file (extract: features; finetune:
 * the classifier; export: the encoder's weights). `--log-dir DIR` (probe, finetune, segment:
 * {@link logDirFlags}) is a folder for TensorBoard event files (lib/eval/tb_log.ts), checked before any
 * work as `--out` is.
 *
 * @module
 */
import { E, pipe, t } from "../deps.ts";
import {
  decodeWith,
  NonNegativeInt,
  NonNegativeNumber,
  PositiveInt,
  PositiveNumber,
  strict,
  UnitInterval,
} from "../config/codec.ts";
import {
  bothGiven,
  codecsOf,
  type FieldPair,
  flagPaths,
  type FlagSpec,
  type FlagTable,
  flagTable,
  type FlagValues,
  kebabCase,
  mergeLayers,
  parseFlags,
  readJsonSync,
  type UntypedFlags,
} from "../config/flags.ts";
import { BackendChoice, ModelName, PrecisionName } from "../config/names.ts";
import type { Precision } from "../core/precision.ts";
import { describeBackend } from "../core/backend.ts";
import { startRuntime } from "../core/runtime.ts";
import { type DataSource, parseDataSource } from "../../data/source.ts";
import type { EncoderModel } from "../models/encoder_model.ts";
import { disposeEncoder, loadEncoderEither } from "./load.ts";
import { classesOf, type FeatureSet, splitFeatures } from "./features.ts";
import { checkTaskOutputs } from "./outputs.ts";
import { checkTaskLogDir } from "./tb_log.ts";
import { message } from "../core/fs.ts";

export type { FlagSpec, FlagTable, FlagValues };
export { flagTable };

/** A task's command line; `F` is its flag table (typed when the spec is not annotated as plain `TaskSpec`). */
export interface TaskSpec<F extends FlagTable = FlagTable> {
  /** The usage line. */
  readonly usage: string;
  /** One sentence on what the task does. */
  readonly summary: string;
  /** The flags, camelCase names (`--batch-size` is `batchSize`). */
  readonly flags: F;
  /**
   * Pairs of flags that give one setting in two ways (`["warmupEpochs", "warmupSteps"]`): one source
   * (flags, `--config FILE`) gives at most one of each, and a higher source's replaces a lower one's (a
   * default included).
   */
  readonly alternatives?: readonly FieldPair[];
}

/** The `--config FILE` row of every task's `--help`. */
export const CONFIG_HELP =
  "JSON object of flag values, each named in camelCase (--foo-bar: fooBar); flags override it";

/** `--help` text of a task. */
export const usageOf = (spec: TaskSpec): string => {
  const rows = [
    ["--config FILE", CONFIG_HELP],
    ...Object.entries(spec.flags).map(([k, f]) => [
      `--${kebabCase(k)} ${f.arg}`.trimEnd(),
      `${f.help}${f.default === undefined ? "" : ` (default: ${JSON.stringify(f.default)})`}`,
    ]),
  ];
  rows.push(["--help, -h", "this text"]);
  const w = Math.max(...rows.map(([f]) => f.length)) + 2;
  return [spec.summary, "", `Usage: ${spec.usage}`, "", ...rows.map(([f, h]) => `  ${f.padEnd(w)}${h}`)].join(
    "\n",
  );
};

/** Decoded flags of a spec declared as the plain {@link TaskSpec} (no table to type them). */
export type Flags = UntypedFlags;

/** What a task's command line resolved to. */
export interface TaskArgs<V> {
  /** Every flag's value, defaults filled in, typed by the spec's table. */
  readonly flags: V;
  /** The flags the user gave, by flags or `--config FILE` (camelCase): not those left at their default. */
  readonly given: ReadonlySet<string>;
  /** Bare arguments, in order (always empty unless asked for). */
  readonly positionals: readonly string[];
}

/** Options of {@link resolveTaskArgs}. */
export interface TaskArgsOptions {
  /** Whether bare arguments are taken (`deno task classify IMAGE...`); otherwise they are refused. */
  readonly positionals?: boolean;
  /** Reads `--config FILE` (tests replace it); throws `Deno.errors.NotFound` when it is absent. */
  readonly readTextFile?: (path: string) => string;
}

/**
 * Decodes `argv` for `spec`: built-in defaults < `--config FILE` (a JSON object of flag values by
 * camelCase name; unknown keys refused by name) < flags, with the spec's `alternatives`. Left: a message
 * naming the source and the flag (the usage text for `--help`: check {@link wantsHelp} first).
 *
 * @example
 * ```ts
 * import { flagTable, PositiveInt, resolveTaskArgs } from "./cli.ts";
 * const spec = { usage: "demo", summary: "demo", flags: flagTable({ k: { codec: PositiveInt, default: 20, arg: "N", help: "k" } }) };
 * const files = (p: string) => p === "c.json" ? '{"k": 5}' : "";
 * const r = resolveTaskArgs(["--config", "c.json"], spec, { readTextFile: files });
 * if (r._tag !== "Right" || r.right.flags.k !== 5 || !r.right.given.has("k")) throw new Error();
 * ```
 */
export const resolveTaskArgs = <F extends FlagTable>(
  argv: readonly string[],
  spec: TaskSpec<F>,
  opts: TaskArgsOptions = {},
): E.Either<string, TaskArgs<FlagValues<F>>> => {
  const rows = Object.entries(spec.flags);
  const codecs = codecsOf(spec.flags);
  const parsed = parseFlags(argv, codecs, { strings: ["config"], positionals: opts.positionals });
  if (E.isLeft(parsed)) return E.left(`${parsed.left}\n(run with --help for the list of flags)`);
  if (parsed.right.help) return E.left(usageOf(spec));
  const pairs = spec.alternatives ?? [];
  const errors: string[] = [];
  let fromFile: Readonly<Record<string, unknown>> = {};
  const file = parsed.right.extras.config;
  if (typeof file === "string") {
    const where = `--config ${file}`;
    const layer = pipe(
      readJsonSync(file, where, opts.readTextFile),
      E.chain((json) => decodeWith(strict({}, codecs, "flag values"), json, where)),
    );
    if (E.isLeft(layer)) errors.push(layer.left);
    else {
      fromFile = layer.right as Readonly<Record<string, unknown>>;
      errors.push(...bothGiven(fromFile, pairs, where));
    }
  }
  const fromFlags = parsed.right.values;
  errors.push(...bothGiven(fromFlags, pairs, "flags"));
  if (errors.length > 0) return E.left(errors.join("\n"));
  const withDefault = rows.filter(([, f]) => f.default !== undefined);
  const defaults = Object.fromEntries(withDefault.map(([k, f]) => [k, f.default]));
  // A flag with a default is always there, unless its alternative replaced it (`--warmup-steps` over a
  // default `--warmup-epochs`).
  const paired = new Set(pairs.flat());
  const codec = strict(
    Object.fromEntries(withDefault.filter(([k]) => !paired.has(k)).map(([k, f]) => [k, f.codec])),
    Object.fromEntries(
      rows.filter(([k, f]) => f.default === undefined || paired.has(k)).map(([k, f]) => [k, f.codec]),
    ),
  );
  const given = new Set([...Object.keys(fromFile), ...Object.keys(fromFlags)]);
  return pipe(
    decodeWith(codec, mergeLayers([defaults, fromFile, fromFlags], pairs), "flags"),
    // In flag errors, name the flag the user typed (`--batch-size`) rather than the field (`batchSize`).
    E.mapLeft(flagPaths),
    // The codec is the table's: its values are the table's values.
    E.map((v) => ({ flags: v as FlagValues<F>, given, positionals: parsed.right.positionals })),
  );
};

/**
 * {@link resolveTaskArgs}' flag values alone: `Right(values)` with every default filled in, typed by the
 * spec's table, or `Left(message)` (the usage text for `--help`: check {@link wantsHelp} first).
 */
export const resolveFlags = <F extends FlagTable>(
  argv: readonly string[],
  spec: TaskSpec<F>,
  opts: TaskArgsOptions = {},
): E.Either<string, FlagValues<F>> =>
  E.map((a: TaskArgs<FlagValues<F>>) => a.flags)(resolveTaskArgs(argv, spec, opts));

/**
 * Warmup in epochs for a trainer that counts its warmup in epochs and turns it into
 * `round(epochs x stepsPerEpoch)` steps: `--warmup-steps S` as `S / stepsPerEpoch` (which rounds back to
 * exactly S), else `--warmup-epochs` as given (undefined: the trainer's default).
 *
 * @example
 * ```ts
 * import { warmupEpochsOf } from "./cli.ts";
 * if (Math.round(warmupEpochsOf({ warmupSteps: 7 }, 3)! * 3) !== 7) throw new Error();
 * if (warmupEpochsOf({ warmupEpochs: 2 }, 3) !== 2) throw new Error();
 * ```
 */
export const warmupEpochsOf = (
  f: { readonly warmupEpochs?: number; readonly warmupSteps?: number },
  stepsPerEpoch: number,
): number | undefined =>
  f.warmupSteps !== undefined ? f.warmupSteps / Math.max(1, stepsPerEpoch) : f.warmupEpochs;

/** The pair `--warmup-epochs` / `--warmup-steps` of the tasks that train a head or a model. */
export const WARMUP_ALTERNATIVES: readonly FieldPair[] = [["warmupEpochs", "warmupSteps"]];

/** Whether the arguments ask for `--help`. */
export const wantsHelp = (argv: readonly string[]): boolean => argv.includes("--help") || argv.includes("-h");

/** Pooling of the features. */
export const PoolingName = t.keyof({ cls: null, mean: null }, "Pooling");

/** Flags shared by the tasks that read an encoder and a data source. */
export const encoderFlags = flagTable({
  checkpoint: {
    codec: t.string,
    arg: "RUN_DIR|FILE|random",
    help:
      'pretraining run directory (its newest checkpoint), checkpoint or official-names .safetensors file, or "random"',
  },
  data: {
    codec: t.string,
    default: "synthetic",
    arg: "SOURCE",
    help: "synthetic[:N], folder:PATH or wds:PATTERN",
  },
  imageSize: {
    codec: PositiveInt,
    arg: "N",
    help: "image side (default: the pretraining run's; 64 for random)",
  },
  model: {
    codec: ModelName,
    arg: "NAME",
    help: "preset of a random encoder (micro, tiny, small, base, large; default: micro)",
  },
  patchSize: { codec: PositiveInt, arg: "N", help: "patch side of a random encoder (default: 8)" },
  seed: {
    codec: NonNegativeInt,
    default: 0,
    arg: "N",
    help: "seed of every random choice (head init, order, random encoder)",
  },
  backend: {
    codec: BackendChoice,
    default: "auto",
    arg: "NAME",
    help: "tfjs backend: auto, webgpu, wasm, cpu",
  },
  precision: {
    codec: PrecisionName,
    default: "f32",
    arg: "NAME",
    help: "f32, or f16 products and saved activations (webgpu with shader-f16 only; lib/core/precision.ts)",
  },
  workers: { codec: NonNegativeInt, default: 0, arg: "N", help: "data-loading workers (0 = main thread)" },
  // Every output path is checked before any work (lib/eval/outputs.ts): an existing file is kept unless
  // this is given, and an input file (the checkpoint, a data file) is never overwritten, even with it.
  force: {
    codec: t.boolean,
    default: false,
    arg: "",
    help: "overwrite existing output files (never an input of the task)",
  },
});

/** The values of {@link encoderFlags}. */
export type EncoderFlags = FlagValues<typeof encoderFlags>;

/** Flags of the tasks that extract frozen features. */
export const featureFlags = flagTable({
  pooling: {
    codec: PoolingName,
    default: "cls",
    arg: "cls|mean",
    help: "cls token after the final norm (official --use_cls), or mean of patch tokens",
  },
  extractBatch: { codec: PositiveInt, default: 64, arg: "N", help: "images per encoder forward pass" },
  maxTrain: { codec: PositiveInt, arg: "N", help: "use at most N training images (default: all)" },
  maxVal: { codec: PositiveInt, arg: "N", help: "use at most N held-out images (default: all)" },
});

/** The values of {@link featureFlags}. */
export type FeatureFlags = FlagValues<typeof featureFlags>;

/**
 * The last flags of the tasks that score a classifier on both splits (k-NN, probe): the classes, and the
 * results file.
 */
export const scoreFlags = flagTable({
  numClasses: { codec: PositiveInt, arg: "N", help: "classes (default: largest label + 1)" },
  out: { codec: t.string, arg: "FILE", help: "results file to write: the settings and scores as JSON" },
});

/** The values of {@link scoreFlags}. */
export type ScoreFlags = FlagValues<typeof scoreFlags>;

/**
 * `--log-dir DIR` of the tasks that train a head or a model (probe, finetune, segment): TensorBoard event
 * files of the run (lib/eval/tb_log.ts), as the official scripts' `--log_dir`.
 */
export const logDirFlags = flagTable({
  logDir: {
    codec: t.string,
    arg: "DIR",
    help: "TensorBoard event files of the run go here: losses, lr, scores, settings (a folder per run)",
  },
});

/** The values of {@link logDirFlags}. */
export type LogDirFlags = FlagValues<typeof logDirFlags>;

export { NonNegativeInt, NonNegativeNumber, PositiveInt, PositiveNumber, UnitInterval };

/** Prints a task's failure for people and exits 1; `--help` prints the usage and exits 0. */
// A function declaration (not a const arrow) so that TypeScript narrows after a call to it.
export function exitWith(argv: readonly string[], message: string): never {
  if (wantsHelp(argv)) {
    console.log(message);
    Deno.exit(0);
  }
  console.error(`error: ${message}`);
  Deno.exit(1);
}

/** A percentage with two decimals, as the final report lines print them. */
export const pct = (x: number): string => x.toFixed(2);

/** The encoder and data source a task works on, after the backend has started. */
export interface TaskSetup {
  /** The encoder of `--checkpoint`. */
  readonly encoder: EncoderModel;
  /** The source of `--data`. */
  readonly source: DataSource;
}

/** The flags {@link openEncoder} reads: those of {@link encoderFlags} that pick and shape the encoder. */
export type EncoderArgs =
  & Pick<
    EncoderFlags,
    "checkpoint" | "model" | "imageSize" | "patchSize" | "seed" | "backend"
  >
  & { readonly precision?: Precision };

/**
 * Starts the runtime (`--backend`; lib/core/runtime.ts) and loads `--checkpoint`; logs the backend, the
 * weights' origin and shapes and any warning through `log`. Left: a message for people.
 */
export const openEncoder = async (
  f: EncoderArgs,
  log: (line: string) => void,
): Promise<E.Either<string, EncoderModel>> => {
  if (f.checkpoint === undefined) {
    return E.left('--checkpoint is required (a run directory, a .safetensors file or "random")');
  }
  try {
    // The backend, device-side reduction gradients and the fused kernels, as every task starts them.
    log(describeBackend(await startRuntime(f.backend, { precision: f.precision })));
  } catch (e) {
    return E.left(message(e));
  }
  const enc = await loadEncoderEither(f.checkpoint, {
    model: f.model,
    imageSize: f.imageSize,
    patchSize: f.patchSize,
    seed: f.seed,
  });
  if (E.isLeft(enc)) return enc;
  const c = enc.right.config;
  log(
    `encoder: ${enc.right.origin}; ${c.dim} wide, ${c.depth} deep, ${c.heads} heads, ${c.imageSize} px, patch ${c.patchSize}`,
  );
  for (const w of enc.right.warnings) log(`warning: ${w}`);
  return enc;
};

/**
 * Parses `--data`, then starts the runtime and loads `--checkpoint` ({@link openEncoder}). Left: a message
 * for people.
 */
export const setupTask = async (
  f: EncoderFlags,
  log: (line: string) => void,
): Promise<E.Either<string, TaskSetup>> => {
  const source = parseDataSource(f.data);
  if (E.isLeft(source)) return source;
  const enc = await openEncoder(f, log);
  if (E.isLeft(enc)) return enc;
  return E.right({ encoder: enc.right, source: source.right });
};

/** A started evaluation task: its flags (typed by its spec's table), encoder and source. */
export interface StartedTask<V extends Flags = Flags> extends TaskSetup {
  /** The resolved flags. */
  readonly f: V;
}

/** A file a task will write, named by the flag that asks for it (lib/eval/outputs.ts). */
export interface TaskOutput {
  /** The flag as the user reads it (`--out`, `--metrics (beside --out)`). */
  readonly flag: string;
  /** The path; undefined when the flag is absent. */
  readonly path: string | undefined;
}

/**
 * The prologue every evaluation task shares: resolve the flags of `spec` from `argv` (they must include
 * {@link encoderFlags}), check the paths the task will write (`outputs`, lib/eval/outputs.ts
 * `checkTaskOutputs`: `--force`, inputs never; and `--log-dir` where the spec has it, lib/eval/tb_log.ts
 * `checkTaskLogDir`), start the runtime, load the encoder; on any failure (or `--help`) print it for
 * people and exit.
 */
export const startTask = async <F extends FlagTable>(
  spec: TaskSpec<F>,
  argv: readonly string[],
  log: (line: string) => void,
  outputs?: (f: FlagValues<F>) => readonly TaskOutput[],
): Promise<StartedTask<FlagValues<F>>> => {
  const flags = resolveFlags(argv, spec);
  if (E.isLeft(flags)) exitWith(argv, flags.left);
  const f = flags.right;
  // The files the task will write, checked before the backend starts or anything is read (outputs.ts).
  const files = outputs?.(f) ?? [];
  const checks = [
    await checkTaskOutputs(f, files),
    await checkTaskLogDir(f, files.map((o) => o.path)),
  ].filter(E.isLeft);
  if (checks.length > 0) exitWith(argv, checks.map((c) => c.left).join("\n"));
  // Every task's table spreads encoderFlags; TypeScript cannot see that through the generic table.
  const setup = await setupTask(f as unknown as EncoderFlags, log);
  if (E.isLeft(setup)) exitWith(argv, setup.left);
  return { f, ...setup.right };
};

/**
 * Runs the body of a started task: a failure is printed for people (exit 1), and the encoder is disposed
 * either way.
 */
export const runTask = async <V extends Flags>(
  task: StartedTask<V>,
  argv: readonly string[],
  body: (task: StartedTask<V>) => Promise<void>,
): Promise<void> => {
  try {
    await body(task);
  } catch (e) {
    exitWith(argv, message(e));
  } finally {
    disposeEncoder(task.encoder);
  }
};

/** Writes a task's results as pretty-printed JSON (`--out`, `--results`). */
export const writeResults = (path: string, results: unknown): Promise<void> =>
  Deno.writeTextFile(path, JSON.stringify(results, null, 2) + "\n");

/** The flags {@link taskFeatures} reads. */
type FeatureArgs = FeatureFlags & Pick<EncoderFlags, "workers">;
/** The flags {@link taskTrainVal} reads. */
type TrainValArgs = FeatureArgs & Pick<ScoreFlags, "numClasses">;

/**
 * A started task whose flags include `Args`, checked where its spec's table types them; a task of a plain
 * {@link TaskSpec} (untyped flags, decoded by the same codecs) is taken as it is.
 */
type TaskWith<V extends Flags, Args> = StartedTask<V> & {
  readonly f: string extends keyof V ? unknown : Args;
};

/**
 * Features of one split of the task's source with the flags `--pooling`, `--extract-batch`, `--workers`,
 * logging how many, how wide and how long.
 */
export const taskFeatures = async <V extends Flags>(
  t: TaskWith<V, FeatureArgs>,
  split: "train" | "val",
  limit: number | undefined,
  log: (line: string) => void,
): Promise<FeatureSet> => {
  // Typed by TaskWith; untyped only for a plain TaskSpec, whose flags the same codecs decoded.
  const f: FeatureArgs = t.f as Flags as FeatureArgs;
  const t0 = performance.now();
  const set = await splitFeatures(t.encoder, t.source, split, {
    pooling: f.pooling,
    limit,
    batchSize: f.extractBatch,
    workers: f.workers,
  });
  const seconds = ((performance.now() - t0) / 1000).toFixed(1);
  log(`features: ${set.count} ${split} images, ${set.dim}-d ${f.pooling}, ${seconds} s`);
  return set;
};

/** Both splits' features and the class count, as the k-NN and probe tasks use them. */
export interface TrainVal {
  readonly train: FeatureSet;
  readonly val: FeatureSet;
  /** `--num-classes`, else the largest label of either split + 1. */
  readonly numClasses: number;
}

/** {@link taskFeatures} of the train split (`--max-train`) and the val split (`--max-val`), and the classes. */
export const taskTrainVal = async <V extends Flags>(
  t: TaskWith<V, TrainValArgs>,
  log: (line: string) => void,
): Promise<TrainVal> => {
  // Typed by TaskWith; untyped only for a plain TaskSpec, whose flags the same codecs decoded.
  const f: TrainValArgs = t.f as Flags as TrainValArgs;
  const train = await taskFeatures(t, "train", f.maxTrain, log);
  const val = await taskFeatures(t, "val", f.maxVal, log);
  return { train, val, numClasses: f.numClasses ?? classesOf(train, val) };
};
