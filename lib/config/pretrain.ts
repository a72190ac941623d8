/**
 * The pretraining config: one io-ts codec that is both the type and the validator, the defaults of a
 * small local run, and the resolution of `deno task pretrain` arguments (defaults < `--resume DIR`'s
 * config.json < `--config FILE` < flags) into a valid config or a report that says what to fix.
 *
 * Official settings (github.com/Atten4Vis/CAE, project/CAEv2/scripts/caev2_{tiny,small,base}_300e.sh and
 * tools/run_pretraining.py): batch 256 per GPU on 8 GPUs = 2048 in total, `--lr 1.5e-3` used as given
 * (run_pretraining.py applies no batch scaling), min lr 1e-5, warmup 10 of 300 epochs, weight decay 0.05,
 * clip 3.0, drop path 0.1, block masking of 30 / 49 / 98 patches for T / S / B.
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
  Seed,
  strict,
  UnitInterval,
} from "./codec.ts";
import { flagPaths, kebabCase, knownFlags, parseFlags } from "./flags.ts";
import { canonicalJson, stableHash } from "./hash.ts";

/** Model presets; `micro` is a small local variant for tests and CPU runs (not from the paper). */
export const ModelName = t.keyof(
  { micro: null, tiny: null, small: null, base: null, large: null },
  "ModelName",
);

/** Masking strategies: BEiT block-wise (official) or uniform random. */
export const Masking = t.keyof({ block: null, random: null }, "Masking");

/** tfjs backends; `auto` tries webgpu, then wasm, then cpu. */
export const BackendName = t.keyof({ auto: null, webgpu: null, wasm: null, cpu: null }, "BackendName");

const required = {
  /** Model preset. */
  model: ModelName,
  /** Input side in pixels (square images). */
  imageSize: PositiveInt,
  /** Patch side in pixels; must divide `imageSize`. */
  patchSize: PositiveInt,
  /** Data source, parsed by the data module: "synthetic", "folder:PATH" or "wds:PATTERN". */
  data: t.string,
  /** Images per micro-batch. */
  batchSize: PositiveInt,
  /** Micro-batches per optimizer step (gradient accumulation): total batch = batchSize x accumulate. */
  accumulate: PositiveInt,
  /** Learning rate at the end of the cosine schedule (official 1e-5). */
  minLr: NonNegativeNumber,
  /** AdamW decoupled weight decay (official 0.05), not applied to 1-D tensors and biases. */
  weightDecay: NonNegativeNumber,
  /** Global-norm gradient clipping (official 3.0); 0 turns clipping off. */
  clipGrad: NonNegativeNumber,
  /** Masking strategy. */
  masking: Masking,
  /** Stochastic depth rate of the last block (official 0.1), rising linearly from 0. */
  dropPath: UnitInterval,
  /** Seed of the run key: every mask, crop and drop path derives from it (0 to 2^53 - 1). */
  seed: Seed,
  /** CLIP teacher weights (safetensors); null = a randomly initialised small teacher (local runs only). */
  teacher: t.union([t.string, t.null]),
  /** Run directory. */
  out: t.string,
  /** Run directory to resume (its newest complete checkpoint); null = a fresh run. */
  resume: t.union([t.string, t.null]),
  /** Save a checkpoint every this many optimizer steps (and at the end). */
  checkpointEvery: PositiveInt,
  /** Checkpoints kept on disk (older ones are deleted after a newer one is complete). */
  keepCheckpoints: PositiveInt,
  /** tfjs backend. */
  backend: BackendName,
  /** Data-loading workers; 0 = decode on the main thread. */
  workers: NonNegativeInt,
  /** Print a progress line every this many steps when stdout is not a terminal. */
  logEvery: PositiveInt,
  /** Weight of the visible latent alignment loss (official 1). */
  visibleWeight: NonNegativeNumber,
  /** Weight of the masked latent alignment loss (official 1). */
  maskedWeight: NonNegativeNumber,
  /** Recompute each encoder block in the backward pass instead of keeping its activations. */
  remat: t.boolean,
  /** Data-parallel engine: "none" (one process) or "mpi" (Open MPI, lib/dist/mpi.ts). */
  distributed: t.keyof({ none: null, mpi: null }, "Distributed"),
};

const optional = {
  /** Total optimizer steps; wins over `epochs`. */
  steps: PositiveInt,
  /** Passes over the data set (used when `steps` is absent; needs a finite data set). */
  epochs: PositiveInt,
  /** Peak learning rate; absent = `peakLr`'s rule. */
  lr: PositiveNumber,
  /** Linear warmup steps; absent = 1/30 of the steps (official: 10 of 300 epochs). */
  warmupSteps: NonNegativeInt,
  /** Masked patches per image; absent = the preset's default (lib/models/presets.ts `defaultNumMasked`). */
  numMasked: PositiveInt,
  /** Run a k-NN probe every this many steps; absent = never. */
  knnEvery: PositiveInt,
};

/** The pretraining config codec; unknown keys are rejected. Decodes to a {@link PretrainConfig}. */
export const PretrainConfigCodec = strict(required, optional, "PretrainConfig");

/**
 * A valid pretraining config: what `PretrainConfigCodec` decodes to, written out (the field docs are those
 * of the codec above; the checks below keep the two in step).
 */
export type PretrainConfig = {
  /** Model preset. */
  readonly model: "micro" | "tiny" | "small" | "base" | "large";
  /** Input side in pixels (square images). */
  readonly imageSize: number;
  /** Patch side in pixels; divides `imageSize`. */
  readonly patchSize: number;
  /** Data source: "synthetic", "folder:PATH" or "wds:PATTERN". */
  readonly data: string;
  /** Images per micro-batch. */
  readonly batchSize: number;
  /** Micro-batches per optimizer step (gradient accumulation). */
  readonly accumulate: number;
  /** Learning rate at the end of the cosine schedule. */
  readonly minLr: number;
  /** AdamW decoupled weight decay. */
  readonly weightDecay: number;
  /** Global-norm gradient clipping; 0 turns it off. */
  readonly clipGrad: number;
  /** Masking strategy. */
  readonly masking: "block" | "random";
  /** Stochastic depth rate of the last block. */
  readonly dropPath: number;
  /** Seed of the run key. */
  readonly seed: number;
  /** CLIP teacher weights (safetensors); null = a random small teacher. */
  readonly teacher: string | null;
  /** Run directory. */
  readonly out: string;
  /** Run directory to resume; null = a fresh run. */
  readonly resume: string | null;
  /** Checkpoint every this many optimizer steps (and at the end). */
  readonly checkpointEvery: number;
  /** Checkpoints kept on disk. */
  readonly keepCheckpoints: number;
  /** tfjs backend. */
  readonly backend: "auto" | "webgpu" | "wasm" | "cpu";
  /** Data-loading workers; 0 = the main thread. */
  readonly workers: number;
  /** Progress line every this many steps off a terminal. */
  readonly logEvery: number;
  /** Weight of visible latent alignment. */
  readonly visibleWeight: number;
  /** Weight of masked latent alignment. */
  readonly maskedWeight: number;
  /** Recompute each encoder block in the backward pass instead of keeping its activations. */
  readonly remat: boolean;
  /** Data-parallel engine: "none" (one process) or "mpi" (Open MPI, lib/dist/mpi.ts). */
  readonly distributed: "none" | "mpi";
  /** Total optimizer steps; wins over `epochs`. */
  readonly steps?: number;
  /** Passes over a finite data set. */
  readonly epochs?: number;
  /** Peak learning rate. */
  readonly lr?: number;
  /** Linear warmup steps. */
  readonly warmupSteps?: number;
  /** Masked patches per image. */
  readonly numMasked?: number;
  /** k-NN probe every this many steps. */
  readonly knnEvery?: number;
};
// The interface and the codec agree: every decoded value is a PretrainConfig, with the same keys.
type Decoded = t.TypeOf<typeof PretrainConfigCodec>;
const _decodedIsConfig = (x: Decoded): PretrainConfig => x;
const _sameKeys: [keyof Decoded] extends [keyof PretrainConfig]
  ? ([keyof PretrainConfig] extends [keyof Decoded] ? true : never)
  : never = true;
void _decodedIsConfig, void _sameKeys;

/** Any subset of a config's fields (a `--config` file, a resumed run's config.json). */
export const PretrainConfigPatch = strict({}, { ...required, ...optional }, "PretrainConfigPatch");
/** Any subset of a config's fields. */
export type PretrainConfigPatch = t.TypeOf<typeof PretrainConfigPatch>;

// Flag and help order: what to train, on what, how long, how fast, what to keep.
const order: readonly (keyof typeof required | keyof typeof optional)[] = [
  "model",
  "imageSize",
  "patchSize",
  "data",
  "batchSize",
  "accumulate",
  "steps",
  "epochs",
  "lr",
  "minLr",
  "warmupSteps",
  "weightDecay",
  "clipGrad",
  "numMasked",
  "masking",
  "dropPath",
  "visibleWeight",
  "maskedWeight",
  "remat",
  "distributed",
  "seed",
  "teacher",
  "out",
  "resume",
  "checkpointEvery",
  "keepCheckpoints",
  "knnEvery",
  "backend",
  "workers",
  "logEvery",
];
const allFields: t.Props = { ...required, ...optional };
const fields: t.Props = Object.fromEntries(order.map((k) => [k, allFields[k]]));

/** `runs/20250131-235959` (UTC), the default run directory of a run started at `now`. */
export const timestampedRunDir = (now: Date): string => {
  const p = (n: number) => String(n).padStart(2, "0");
  return `runs/${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}-${
    p(now.getUTCHours())
  }${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}`;
};

const defaultsRaw = (now: Date) => ({
  // A small local run: finishes in minutes on 2 CPU cores (the lead tunes the numbers).
  model: "micro",
  imageSize: 64,
  patchSize: 8,
  data: "synthetic",
  batchSize: 16,
  accumulate: 1,
  steps: 150,
  minLr: 1e-5,
  weightDecay: 0.05,
  clipGrad: 3.0,
  masking: "block",
  dropPath: 0.1,
  seed: 0,
  teacher: null,
  out: timestampedRunDir(now),
  resume: null,
  checkpointEvery: 50,
  keepCheckpoints: 2,
  backend: "auto",
  workers: 0,
  logEvery: 10,
  visibleWeight: 1,
  maskedWeight: 1,
  remat: false,
  distributed: "none",
});

/**
 * The no-argument run: the `micro` preset on 64 px synthetic images, patch 8, batch 16, 150 steps, the
 * official optimizer settings otherwise; its run directory is stamped with `now`.
 */
export const defaultPretrainConfig = (now: Date = new Date()): PretrainConfig =>
  pipe(
    decodeWith(PretrainConfigCodec, defaultsRaw(now), "defaultPretrainConfig"),
    E.getOrElseW((msg) => {
      throw new Error(`bug: the built-in defaults do not decode:\n${msg}`);
    }),
  );

/** Peak learning rate of the official CAE v2 runs (scripts: `--lr 1.5e-3`) ... */
export const OFFICIAL_LR = 1.5e-3;
/** ... at this total batch (256 per GPU x 8 GPUs). */
export const OFFICIAL_BATCH = 2048;
/** Peak learning rate of `micro` runs when none is given (a local choice, not the paper's). */
export const MICRO_LR = 1e-3;

/**
 * The peak learning rate: `cfg.lr` when given; otherwise the linear scaling rule anchored at the official
 * point, lr = 1.5e-3 x (batchSize x accumulate) / 2048 (= 1.875e-4 per 256 images; the official
 * pretraining script uses its `--lr` as is, only its linear-probing script scales `blr x batch / 256`).
 * `micro` runs default to `MICRO_LR`: at batch 16 the rule would give 1.2e-5, below `minLr`, and a
 * 150-step run would not move.
 */
export const peakLr = (cfg: PretrainConfig): number =>
  cfg.lr ??
    (cfg.model === "micro" ? MICRO_LR : (OFFICIAL_LR * cfg.batchSize * cfg.accumulate) / OFFICIAL_BATCH);

/**
 * A line for the run's log when `--min-lr` is above the peak learning rate, else undefined. Small batches
 * under the scaling rule peak low (`--model tiny --batch-size 4`: 1.5e-3 x 4 / 2048 = 2.9e-6, below the
 * official min lr 1e-5); the run goes ahead as the official code's would (its `cosine_scheduler` applies the
 * formula whatever the order of the two), so after the warmup the lr rises from the peak to `--min-lr`.
 * This says so once, with the flags that change it.
 */
export const lrScheduleNote = (cfg: PretrainConfig): string | undefined => {
  const peak = peakLr(cfg);
  if (cfg.minLr <= peak) return undefined;
  const from = cfg.lr !== undefined
    ? `--lr ${cfg.lr}`
    : cfg.model === "micro"
    ? `the micro default, ${MICRO_LR}`
    : `${OFFICIAL_LR} x --batch-size ${cfg.batchSize} x --accumulate ${cfg.accumulate} / ${OFFICIAL_BATCH}`;
  return `note: --min-lr ${cfg.minLr} is above the peak learning rate ${peak} (${from}): after the warmup ` +
    "the cosine rises from the peak to --min-lr, as the official scheduler does; for a decaying schedule " +
    "set --min-lr below the peak (e.g. --min-lr 0) or raise it with --lr";
};

/** Images per optimizer step. */
export const totalBatch = (cfg: PretrainConfig): number => cfg.batchSize * cfg.accumulate;

/**
 * Optimizer steps of the run: `steps` when given, else `epochs` x the steps per epoch of a data set of
 * `datasetSize` images (the last incomplete step of an epoch is dropped, as the official loader does).
 */
export const totalSteps = (cfg: PretrainConfig, datasetSize?: number): E.Either<string, number> => {
  if (cfg.steps !== undefined) return E.right(cfg.steps);
  if (cfg.epochs === undefined) return E.left("set --steps or --epochs");
  if (datasetSize === undefined || !Number.isFinite(datasetSize)) {
    return E.left(`--epochs ${cfg.epochs} needs a finite data set (${cfg.data} has no size): use --steps`);
  }
  const perEpoch = Math.floor(datasetSize / totalBatch(cfg));
  if (perEpoch < 1) {
    return E.left(
      `the data set (${datasetSize} images) is smaller than one step (${totalBatch(cfg)} images)`,
    );
  }
  return E.right(cfg.epochs * perEpoch);
};

/** Warmup steps: `cfg.warmupSteps` when given, else 1/30 of the run (official: 10 of 300 epochs). */
export const warmupStepsOf = (cfg: PretrainConfig, steps: number): number =>
  Math.min(steps, cfg.warmupSteps ?? Math.round(steps / 30));

/** The most elements one tfjs tensor can index (int32): a bound on the images of one micro-batch. */
export const MAX_TENSOR_VALUES = 2 ** 31 - 1;

/** Cross-field rules the codec cannot state alone; every broken rule is one line. */
export const checkPretrainConfig = (cfg: PretrainConfig): E.Either<string, PretrainConfig> => {
  const errors: string[] = [];
  if (cfg.imageSize % cfg.patchSize !== 0) {
    errors.push(`patchSize ${cfg.patchSize} does not divide imageSize ${cfg.imageSize}`);
  }
  const numPatches = Math.floor(cfg.imageSize / cfg.patchSize) ** 2;
  if (cfg.numMasked !== undefined && cfg.numMasked >= numPatches) {
    errors.push(`numMasked ${cfg.numMasked} must be below the number of patches (${numPatches})`);
  }
  // tfjs indexes the elements of a tensor with 32-bit integers (WebGPU's shaders in i32; wasm's heap is
  // 4 GiB): a micro-batch of images past that cannot be made, and on cpu, which has no memory limit to
  // refuse it first, the attempt ran for ever.
  const batchValues = cfg.batchSize * 3 * cfg.imageSize ** 2;
  if (batchValues > MAX_TENSOR_VALUES) {
    errors.push(
      `--batch-size ${cfg.batchSize}: one micro-batch of ${cfg.imageSize}px RGB images is ${batchValues} ` +
        `values, more than the ${MAX_TENSOR_VALUES} (2^31 - 1) of one tensor: use --batch-size ` +
        `${Math.floor(MAX_TENSOR_VALUES / (3 * cfg.imageSize ** 2))} or less, and --accumulate N for a ` +
        "larger total batch",
    );
  } else if (!Number.isSafeInteger(totalBatch(cfg))) {
    errors.push(
      `--batch-size ${cfg.batchSize} x --accumulate ${cfg.accumulate} images per step is beyond counting ` +
        "exactly (2^53): use a smaller --accumulate",
    );
  }
  if (cfg.steps === undefined && cfg.epochs === undefined) errors.push("set steps or epochs");
  if (cfg.steps !== undefined && cfg.warmupSteps !== undefined && cfg.warmupSteps > cfg.steps) {
    errors.push(`warmupSteps ${cfg.warmupSteps} exceeds steps ${cfg.steps}`);
  }
  // --min-lr above the peak (small batches under the scaling rule) is allowed: the official
  // `cosine_scheduler` runs its formula whatever the order, so the cosine then rises; `lrScheduleNote`
  // says so for the log.
  if (cfg.resume !== null && cfg.out !== cfg.resume) {
    errors.push(
      `out ${JSON.stringify(cfg.out)} and resume ${JSON.stringify(cfg.resume)} name different runs`,
    );
  }
  return errors.length > 0 ? E.left(errors.join("\n")) : E.right(cfg);
};

/** Keys that do not change what a run computes (where it writes, how it reports, which backend runs it). */
export const HASH_EXCLUDED_KEYS: readonly (keyof PretrainConfig)[] = [
  "out",
  "resume",
  "backend",
  "workers",
  "logEvery",
  "checkpointEvery",
  "keepCheckpoints",
  "knnEvery",
  "remat",
  "distributed",
];

/**
 * A stable 16-hex-digit hash of what the config computes (SHA-256 of canonical JSON with sorted keys,
 * without `HASH_EXCLUDED_KEYS`): a resumed run checks it against its checkpoint's.
 */
export const configHash = (cfg: PretrainConfig): Promise<string> =>
  stableHash(cfg as Readonly<Record<string, unknown>>, HASH_EXCLUDED_KEYS);

const showSetting = (v: unknown): string =>
  v === undefined ? "(unset)" : v === null ? "none" : typeof v === "string" ? v : JSON.stringify(v);

/**
 * What a resume whose config hash differs must say: the settings that change what a run computes (those
 * `configHash` covers) and differ between `before` (the run's config.json as stored, e.g. read by
 * {@link readRunConfig}) and `after`, one `--flag old -> new` each, in flag order; `(unset)` for an absent
 * optional setting, `none` for null. Empty when they agree (the hash then differs for another reason: another toolkit version).
 *
 * @example
 * ```ts
 * import { configChanges, defaultPretrainConfig } from "./pretrain.ts";
 * const before = defaultPretrainConfig(new Date(0));
 * const lines = configChanges(before, { ...before, lr: 0.01, seed: 3, logEvery: 1 });
 * if (lines.join("; ") !== "--lr (unset) -> 0.01; --seed 0 -> 3") throw new Error(lines.join("; "));
 * ```
 */
export const configChanges = (
  before: Readonly<Record<string, unknown>>,
  after: PretrainConfig,
): string[] => {
  const was = before, now = after as Readonly<Record<string, unknown>>;
  return order
    .filter((k) => !HASH_EXCLUDED_KEYS.includes(k) && canonicalJson(was[k]) !== canonicalJson(now[k]))
    .map((k) => `--${kebabCase(k)} ${showSetting(was[k])} -> ${showSetting(now[k])}`);
};

/**
 * The config a run directory was written with (`DIR/config.json`), as a patch (a run written by an older
 * version may lack newer fields). Left: a message naming the file.
 */
export const readRunConfig = (
  dir: string,
  read: (path: string) => string = Deno.readTextFileSync,
): E.Either<string, PretrainConfigPatch> => {
  const path = `${dir.replace(/\/+$/, "")}/config.json`;
  return pipe(readJson(path, path, read), E.chain((json) => decodeWith(PretrainConfigPatch, json, path)));
};

const help: Record<string, string> = {
  model: "model preset: micro (local), tiny, small, base, large",
  imageSize: "input side in pixels",
  patchSize: "patch side in pixels (divides the image size)",
  data: 'data source: "synthetic", "folder:PATH" (image folder) or "wds:PATTERN" (WebDataset tar shards)',
  batchSize: "images per micro-batch",
  accumulate: "micro-batches per optimizer step (gradient accumulation)",
  steps: "total optimizer steps (wins over --epochs)",
  epochs: "passes over a finite data set, when --steps is not given",
  lr: `peak learning rate (default: ${OFFICIAL_LR} x total batch / ${OFFICIAL_BATCH}; micro: ${MICRO_LR})`,
  minLr: "final learning rate of the cosine schedule",
  warmupSteps: "linear warmup steps (default: 1/30 of the steps)",
  weightDecay: "AdamW weight decay (not on 1-D tensors and biases)",
  clipGrad: "global gradient-norm clipping; 0 = off",
  numMasked: "masked patches per image (default: the preset's)",
  masking: "block (BEiT block-wise, official) or random",
  dropPath: "stochastic depth rate",
  seed: "seed of the run key",
  teacher: "CLIP teacher weights (.safetensors); --no-teacher = random small teacher",
  out: "run directory (default: runs/<UTC timestamp>)",
  resume: "resume the run in DIR from its newest complete checkpoint",
  checkpointEvery: "save a checkpoint every N steps",
  keepCheckpoints: "checkpoints kept on disk",
  backend: "tfjs backend: auto, webgpu, wasm, cpu",
  workers: "data-loading workers (0 = main thread)",
  logEvery: "progress line every N steps when stdout is not a terminal",
  visibleWeight: "weight of the visible latent alignment loss",
  maskedWeight: "weight of the masked latent alignment loss",
  remat: "recompute each encoder block in the backward pass (less memory, about 1/3 more time)",
  distributed: "none, or mpi: data-parallel over the ranks of mpirun / srun (--batch-size is per rank)",
  knnEvery: "k-NN probe every N steps (default: never)",
};

const placeholder = (key: string, codec: t.Mixed): string => {
  const name = codec.name;
  if (name === "boolean") return "";
  if (name === "PositiveInt" || name === "NonNegativeInt" || name === "Seed") return "N";
  if (name.endsWith("Number") || name === "UnitInterval") return "X";
  const keys = (codec as { keys?: Record<string, unknown> }).keys;
  if (keys !== undefined) return "NAME";
  return ["teacher", "out", "resume"].includes(key) ? (key === "teacher" ? "FILE" : "DIR") : "SOURCE";
};

/** The `--help` text of `deno task pretrain`. */
export const pretrainUsage = (): string => {
  const d = defaultPretrainConfig(new Date(0)) as Readonly<Record<string, unknown>>;
  const rows = [
    ["--config FILE", "JSON file with any config fields (camelCase keys); flags override it"],
    ...Object.keys(fields).map((k) => {
      const dv = d[k];
      const shown = k === "out" || dv === undefined || dv === null ? "" : ` (default: ${JSON.stringify(dv)})`;
      return [`--${kebabCase(k)} ${placeholder(k, fields[k])}`.trimEnd(), `${help[k] ?? ""}${shown}`];
    }),
    ["--help, -h", "this text"],
  ];
  const w = Math.max(...rows.map(([f]) => f.length)) + 2;
  return [
    "Pretrain a ViT with CAE v2.",
    "",
    "Usage: deno task pretrain [--config FILE] [--resume DIR] [flags]",
    "Precedence: built-in defaults < the resumed run's config.json < --config FILE < flags.",
    "",
    ...rows.map(([f, h]) => `  ${f.padEnd(w)}${h}`),
  ].join("\n");
};

/** Whether the arguments ask for `--help`. */
export const wantsHelp = (argv: readonly string[]): boolean => argv.includes("--help") || argv.includes("-h");

/** How `resolvePretrainConfig` reaches the outside world (replaceable in tests). */
export interface ResolveEnv {
  /** The clock for the default run directory. */
  readonly now?: Date;
  /** Reads a text file; throws `Deno.errors.NotFound` when it is absent. */
  readonly readTextFile?: (path: string) => string;
}

const readJson = (
  path: string,
  where: string,
  read: (path: string) => string,
): E.Either<string, unknown> => {
  let text: string;
  try {
    text = read(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return E.left(`${where}: file not found`);
    return E.left(`${where}: cannot read it (${e instanceof Error ? e.message : String(e)})`);
  }
  try {
    return E.right(JSON.parse(text));
  } catch (e) {
    return E.left(`${where}: not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
};

// A layer that sets epochs without steps drops the steps of the layers below (and the reverse), so that
// `--epochs 5` over the default `steps` means five epochs.
const mergeLayers = (layers: readonly Readonly<Record<string, unknown>>[]): Record<string, unknown> =>
  layers.reduce<Record<string, unknown>>((acc, layer) => {
    const next = { ...acc };
    if ("epochs" in layer && !("steps" in layer)) delete next.steps;
    if ("steps" in layer && !("epochs" in layer)) delete next.epochs;
    return { ...next, ...layer };
  }, {});

/**
 * Resolves `deno task pretrain` arguments into a valid config: built-in defaults, then the resumed run's
 * `config.json` (`--resume DIR`), then `--config FILE` (JSON, any subset of the fields), then flags
 * (`--batch-size 64` sets `batchSize`). Every error names its source (the file, or "flags") and the field.
 * `--help` gives `Left(pretrainUsage())`: check `wantsHelp` first to print it and exit 0.
 *
 * @example
 * ```ts
 * import { resolvePretrainConfig } from "./pretrain.ts";
 * import { E } from "../deps.ts";
 * const cfg = resolvePretrainConfig(["--steps", "20", "--batch-size", "4"]);
 * if (E.isLeft(cfg) || cfg.right.steps !== 20 || cfg.right.model !== "micro") throw new Error("bad config");
 * ```
 */
export const resolvePretrainConfig = (
  argv: readonly string[],
  env: ResolveEnv = {},
): E.Either<string, PretrainConfig> => {
  const read = env.readTextFile ?? Deno.readTextFileSync;
  const flags = parseFlags(argv, fields, { strings: ["config"] });
  if (E.isLeft(flags)) return E.left(`${flags.left}\n(run with --help for the list of flags)`);
  if (flags.right.help) return E.left(pretrainUsage());
  const { values, extras } = flags.right;
  const layers: Record<string, unknown>[] = [defaultsRaw(env.now ?? new Date())];
  const errors: string[] = [];
  const resume = typeof values.resume === "string" ? values.resume : undefined;
  if (resume !== undefined) {
    const path = `${resume.replace(/\/+$/, "")}/config.json`;
    const where = `--resume ${resume}: ${path}`;
    const layer = pipe(
      readJson(path, where, read),
      E.mapLeft((m) => (m.endsWith("file not found") ? `${m} (is ${resume} a run directory?)` : m)),
      E.chain((json) => decodeWith(PretrainConfigPatch, json, where)),
    );
    if (E.isLeft(layer)) errors.push(layer.left);
    else layers.push({ ...(layer.right as Record<string, unknown>), out: resume, resume });
  }
  const file = extras.config;
  if (typeof file === "string") {
    const where = `config file ${file}`;
    const layer = pipe(
      readJson(file, where, read),
      E.chain((json) => decodeWith(PretrainConfigPatch, json, where)),
    );
    if (E.isLeft(layer)) errors.push(layer.left);
    else layers.push(layer.right as Record<string, unknown>);
  }
  const fromFlags = decodeWith(PretrainConfigPatch, values, "flags");
  // In flag errors, name the flag the user typed (`--batch-size`) rather than the field (`batchSize`).
  if (E.isLeft(fromFlags)) errors.push(flagPaths(fromFlags.left));
  else {
    if (resume !== undefined && values.out !== undefined && values.out !== resume) {
      errors.push(`flags: --out ${values.out} and --resume ${resume} name different runs; drop --out`);
    }
    layers.push(resume !== undefined ? { ...values, out: resume } : { ...values });
  }
  if (errors.length > 0) return E.left(errors.join("\n"));
  return pipe(
    decodeWith(PretrainConfigCodec, mergeLayers(layers), "config"),
    E.chain(checkPretrainConfig),
  );
};

/** Every flag `deno task pretrain` knows. */
export const pretrainFlags = (): string[] => knownFlags(fields, { strings: ["config"] });
