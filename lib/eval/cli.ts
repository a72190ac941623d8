/**
 * The command lines of the evaluation tasks (probe, knn, finetune, extract): flags decoded against one
 * closed io-ts codec per task (lib/config/codec.ts), defaults filled in first, errors naming the flag as
 * typed, `--help` generated from the same table.
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
import { kebabCase, parseFlags } from "../config/flags.ts";
import { BackendName, ModelName } from "../config/pretrain.ts";
import { describeBackend } from "../core/backend.ts";
import { startRuntime } from "../core/runtime.ts";
import type { PresetName } from "../models/presets.ts";
import { type DataSource, parseDataSource } from "../../data/source.ts";
import type { EncoderModel } from "../models/encoder_model.ts";
import { loadEncoder } from "./load.ts";
import { classesOf, type FeatureSet, type Pooling, splitFeatures } from "./features.ts";
import { checkTaskOutputs } from "./outputs.ts";

/** One flag: its codec, its default (absent: optional without default), its help. */
export interface FlagSpec {
  /** What the flag's value must be. */
  readonly codec: t.Mixed;
  /** Value when the flag is absent; absent: the flag is optional. */
  readonly default?: unknown;
  /** One line for `--help`. */
  readonly help: string;
  /** Placeholder in the usage line ("N", "FILE"). */
  readonly arg: string;
}

/** A task's command line. */
export interface TaskSpec {
  /** The usage line. */
  readonly usage: string;
  /** One sentence on what the task does. */
  readonly summary: string;
  /** The flags, camelCase names (`--batch-size` is `batchSize`). */
  readonly flags: Readonly<Record<string, FlagSpec>>;
}

/** `--help` text of a task. */
export const usageOf = (spec: TaskSpec): string => {
  const rows = Object.entries(spec.flags).map(([k, f]) => [
    `--${kebabCase(k)} ${f.arg}`,
    `${f.help}${f.default === undefined ? "" : ` (default: ${JSON.stringify(f.default)})`}`,
  ]);
  rows.push(["--help, -h", "this text"]);
  const w = Math.max(...rows.map(([f]) => f.length)) + 2;
  return [spec.summary, "", `Usage: ${spec.usage}`, "", ...rows.map(([f, h]) => `  ${f.padEnd(w)}${h}`)].join(
    "\n",
  );
};

/** Flags typed by the task's codec. */
export type Flags = Readonly<Record<string, unknown>>;

/**
 * Decodes `argv` for `spec`: `Right(values)` with every default filled in, or `Left(message)` (the usage
 * text for `--help`: check {@link wantsHelp} first).
 */
export const resolveFlags = (argv: readonly string[], spec: TaskSpec): E.Either<string, Flags> => {
  const fields: t.Props = Object.fromEntries(Object.entries(spec.flags).map(([k, f]) => [k, f.codec]));
  const parsed = parseFlags(argv, fields);
  if (E.isLeft(parsed)) return E.left(`${parsed.left}\n(run with --help for the list of flags)`);
  if (parsed.right.help) return E.left(usageOf(spec));
  const defaults = Object.fromEntries(
    Object.entries(spec.flags).filter(([, f]) => f.default !== undefined).map(([k, f]) => [k, f.default]),
  );
  const required = Object.fromEntries(Object.entries(spec.flags).filter(([, f]) => f.default !== undefined));
  const optional = Object.fromEntries(Object.entries(spec.flags).filter(([, f]) => f.default === undefined));
  const codec = strict(
    Object.fromEntries(Object.entries(required).map(([k, f]) => [k, f.codec])),
    Object.fromEntries(Object.entries(optional).map(([k, f]) => [k, f.codec])),
  );
  return pipe(
    decodeWith(codec, { ...defaults, ...parsed.right.values }, "flags"),
    E.mapLeft((m) => m.replace(/^flags: at (\w+):/gm, (_, k: string) => `flags: --${kebabCase(k)}:`)),
    E.map((v) => v as Flags),
  );
};

/** Whether the arguments ask for `--help`. */
export const wantsHelp = (argv: readonly string[]): boolean => argv.includes("--help") || argv.includes("-h");

/** Pooling of the features. */
export const PoolingName = t.keyof({ cls: null, mean: null }, "Pooling");

/** Flags shared by the tasks that read an encoder and a data source. */
export const encoderFlags: Readonly<Record<string, FlagSpec>> = {
  checkpoint: {
    codec: t.string,
    arg: "PATH",
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
    help: "preset of a random encoder (micro, tiny, small, base, large; default micro)",
  },
  patchSize: { codec: PositiveInt, arg: "N", help: "patch side of a random encoder (default 8)" },
  seed: {
    codec: NonNegativeInt,
    default: 0,
    arg: "N",
    help: "seed of every random choice (head init, order, random encoder)",
  },
  backend: {
    codec: BackendName,
    default: "auto",
    arg: "NAME",
    help: "tfjs backend: auto, webgpu, wasm, cpu",
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
};

/** Flags of the tasks that extract frozen features. */
export const featureFlags: Readonly<Record<string, FlagSpec>> = {
  pooling: {
    codec: PoolingName,
    default: "cls",
    arg: "cls|mean",
    help: "cls token after the final norm (official --use_cls), or mean of patch tokens",
  },
  extractBatch: { codec: PositiveInt, default: 64, arg: "N", help: "images per encoder forward pass" },
  maxTrain: { codec: PositiveInt, arg: "N", help: "use at most N training images (default: all)" },
  maxVal: { codec: PositiveInt, arg: "N", help: "use at most N held-out images (default: all)" },
};

export { NonNegativeNumber, PositiveInt, PositiveNumber, UnitInterval };

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

/**
 * Starts the runtime (`--backend`; lib/core/runtime.ts), parses `--data`, loads `--checkpoint`; logs the backend, the weights'
 * origin and any warning through `log`. Left: a message for people.
 */
export const setupTask = async (
  f: Flags,
  log: (line: string) => void,
): Promise<E.Either<string, TaskSetup>> => {
  const source = parseDataSource(f.data as string);
  if (E.isLeft(source)) return source;
  if (f.checkpoint === undefined) {
    return E.left('--checkpoint is required (a run directory, a .safetensors file or "random")');
  }
  try {
    // The backend, device-side reduction gradients and the fused kernels, as every task starts them.
    log(describeBackend(await startRuntime(f.backend as "auto")));
  } catch (e) {
    return E.left(e instanceof Error ? e.message : String(e));
  }
  const enc = await loadEncoder(f.checkpoint as string, {
    model: f.model as PresetName | undefined,
    imageSize: f.imageSize as number | undefined,
    patchSize: f.patchSize as number | undefined,
    seed: f.seed as number,
  });
  if (E.isLeft(enc)) return enc;
  const c = enc.right.config;
  log(
    `encoder: ${enc.right.origin}; ${c.dim} wide, ${c.depth} deep, ${c.heads} heads, ${c.imageSize} px, patch ${c.patchSize}`,
  );
  for (const w of enc.right.warnings) log(`warning: ${w}`);
  return E.right({ encoder: enc.right, source: source.right });
};

/** A started evaluation task: its flags, encoder and source. */
export interface StartedTask extends TaskSetup {
  /** The resolved flags. */
  readonly f: Flags;
}

/**
 * The prologue every evaluation task shares: resolve the flags of `spec` from `argv`, check the paths the
 * task will write (`outputs`, lib/eval/outputs.ts `checkTaskOutputs`: `--force`, inputs never), start the
 * runtime, load the encoder; on any failure (or `--help`) print it for people and exit.
 */
export const startTask = async (
  spec: TaskSpec,
  argv: readonly string[],
  log: (line: string) => void,
  outputs?: (f: Flags) => readonly { readonly flag: string; readonly path: string | undefined }[],
): Promise<StartedTask> => {
  const flags = resolveFlags(argv, spec);
  if (E.isLeft(flags)) exitWith(argv, flags.left);
  // The files the task will write, checked before the backend starts or anything is read (outputs.ts).
  if (outputs !== undefined) {
    const ok = await checkTaskOutputs(flags.right, outputs(flags.right));
    if (E.isLeft(ok)) exitWith(argv, ok.left);
  }
  const setup = await setupTask(flags.right, log);
  if (E.isLeft(setup)) exitWith(argv, setup.left);
  return { f: flags.right, ...setup.right };
};

/**
 * Features of one split of the task's source with the flags `--pooling`, `--extract-batch`, `--workers`,
 * logging how many, how wide and how long.
 */
export const taskFeatures = async (
  t: StartedTask,
  split: "train" | "val",
  limit: number | undefined,
  log: (line: string) => void,
): Promise<FeatureSet> => {
  const t0 = performance.now();
  const pooling = t.f.pooling as Pooling;
  const set = await splitFeatures(t.encoder, t.source, split, {
    pooling,
    limit,
    batchSize: t.f.extractBatch as number,
    workers: t.f.workers as number,
  });
  const seconds = ((performance.now() - t0) / 1000).toFixed(1);
  log(`features: ${set.count} ${split} images, ${set.dim}-d ${pooling}, ${seconds} s`);
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
export const taskTrainVal = async (t: StartedTask, log: (line: string) => void): Promise<TrainVal> => {
  const train = await taskFeatures(t, "train", t.f.maxTrain as number | undefined, log);
  const val = await taskFeatures(t, "val", t.f.maxVal as number | undefined, log);
  return { train, val, numClasses: (t.f.numClasses as number | undefined) ?? classesOf(train, val) };
};
