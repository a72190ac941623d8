/**
 * The pretraining config: one table of fields ({@link pretrainFields}: codec, default, help, placeholder per
 * flag) from which the io-ts codec (both the type and the validator), the defaults of a small local run and
 * `--help` derive, and the resolution of `deno task pretrain` arguments (defaults < `--resume DIR`'s
 * config.json < `--config FILE` < flags) into a valid config or a report that says what to fix.
 *
 * Some settings can be typed in two ways, as the MAE, BEiT and CAE scripts type them
 * ({@link PRETRAIN_ALTERNATIVES}): `--lr` or `--blr` (peak lr = blr x total batch / 256), `--warmup-steps`
 * or `--warmup-epochs`, `--num-masked` or `--mask-ratio` (turned into the count the official code masks).
 * One source (flags, a config file) gives at most one of each pair; a higher source's replaces the other
 * from below. A setting absent from a config (as every one of these is from the defaults) leaves its hash
 * (`configHash`) as it was, so runs written before these flags existed resume unchanged.
 *
 * Official settings (github.com/Atten4Vis/CAE, project/CAEv2/scripts/caev2_{tiny,small,base}_300e.sh and
 * tools/run_pretraining.py): batch 256 per GPU on 8 GPUs = 2048 in total, `--lr 1.5e-3` used as given
 * (run_pretraining.py applies no batch scaling), min lr 1e-5, warmup 10 of 300 epochs, weight decay 0.05,
 * clip 3.0, drop path 0.1, block masking of 30 / 49 / 98 patches for T / S / B. The learning-rate policy
 * built on them (peak, length, warmup) is lib/train/lr_policy.ts.
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
import {
  bothGiven,
  codecsOf,
  type DefaultsMatch,
  type FieldPair,
  flagPaths,
  type FlagSpec,
  kebabCase,
  knownFlags,
  mergeLayers,
  parseFlags,
  readJsonSync,
} from "./flags.ts";
import { canonicalJson, stableHash } from "./hash.ts";
import { BackendChoice, ModelName, PrecisionName } from "./names.ts";

/** Masking strategies: BEiT block-wise (official) or uniform random. */
export const Masking = t.keyof({ block: null, random: null }, "Masking");

/** Data-parallel engines: one process, or Open MPI (lib/dist/mpi.ts). */
export const Distributed = t.keyof({ none: null, mpi: null }, "Distributed");

/** A field of the pretraining config: its flag, and whether a valid config may lack it. */
export interface ConfigField<C extends t.Mixed = t.Mixed> extends FlagSpec<C> {
  /** A valid config may lack this field (it may still have a default, as `steps` does). */
  readonly optional?: true;
}

/**
 * The pretraining config, one row per field and flag, in flag and `--help` order (what to train, on what,
 * how long, how fast, what to keep): the codec, the type, the defaults and `--help` all derive from it.
 * Defaults are a small local run that finishes in minutes on 2 CPU cores (the lead tunes the numbers);
 * `out` defaults to a timestamped run directory ({@link timestampedRunDir}).
 */
export const pretrainFields = {
  /** Model preset. */
  model: {
    codec: ModelName,
    default: "micro",
    arg: "NAME",
    help: "model preset: micro (local), tiny, small, base, large",
  },
  /** Input side in pixels (square images). */
  imageSize: { codec: PositiveInt, default: 64, arg: "N", help: "input side in pixels" },
  /** Patch side in pixels; must divide `imageSize`. */
  patchSize: {
    codec: PositiveInt,
    default: 8,
    arg: "N",
    help: "patch side in pixels (divides the image size)",
  },
  /** Data source, parsed by the data module: "synthetic", "folder:PATH" or "wds:PATTERN". */
  data: {
    codec: t.string,
    default: "synthetic",
    arg: "SOURCE",
    help: 'data source: "synthetic", "folder:PATH" (image folder) or "wds:PATTERN" (WebDataset tar shards)',
  },
  /** Images per micro-batch. */
  batchSize: { codec: PositiveInt, default: 16, arg: "N", help: "images per micro-batch" },
  /** Micro-batches per optimizer step (gradient accumulation): total batch = batchSize x accumulate. */
  accumulate: {
    codec: PositiveInt,
    default: 1,
    arg: "N",
    help: "micro-batches per optimizer step (gradient accumulation)",
  },
  /** Total optimizer steps; wins over `epochs`. */
  steps: {
    optional: true,
    codec: PositiveInt,
    default: 150,
    arg: "N",
    help: "total optimizer steps (wins over --epochs)",
  },
  /** Passes over the data set (used when `steps` is absent; needs a finite data set). */
  epochs: {
    optional: true,
    codec: PositiveInt,
    arg: "N",
    help: "passes over a finite data set, when --steps is not given",
  },
  /** Peak learning rate; absent = `blr`'s, else lib/train/lr_policy.ts `peakLr`'s rule. */
  lr: {
    optional: true,
    codec: PositiveNumber,
    arg: "X",
    // The numbers of lib/train/lr_policy.ts (OFFICIAL_LR, OFFICIAL_BATCH, MICRO_LR; a test checks them).
    help: "peak learning rate (default: 0.0015 x total batch / 2048; micro: 0.001); or give --blr",
  },
  /**
   * Base learning rate, MAE's and CAE's `--blr`: peak lr = blr x total batch / 256 (the total batch of
   * every rank and micro-batch). Another way to give `lr`: a config sets at most one of the two.
   */
  blr: {
    optional: true,
    codec: PositiveNumber,
    arg: "X",
    help: "base learning rate: peak lr = blr x total batch / 256 (MAE's and CAE's --blr); or give --lr",
  },
  /** Learning rate at the end of the cosine schedule (official 1e-5). */
  minLr: {
    codec: NonNegativeNumber,
    default: 1e-5,
    arg: "X",
    help: "final learning rate of the cosine schedule",
  },
  /** Linear warmup steps; absent = `warmupEpochs`', else 1/30 of the steps (official: 10 of 300 epochs). */
  warmupSteps: {
    optional: true,
    codec: NonNegativeInt,
    arg: "N",
    help: "linear warmup steps (default: 1/30 of the steps); or give --warmup-epochs",
  },
  /**
   * Linear warmup in epochs (the official `--warmup_epochs`): warmup steps = round(warmupEpochs x steps per
   * epoch). Only for a run measured in `epochs` (an epoch of a `steps` run is not known before the data
   * is); another way to give `warmupSteps`: a config sets at most one of the two.
   */
  warmupEpochs: {
    optional: true,
    codec: NonNegativeNumber,
    arg: "X",
    help: "linear warmup in epochs, for a run measured in --epochs; or give --warmup-steps",
  },
  /** AdamW decoupled weight decay (official 0.05), not applied to 1-D tensors and biases. */
  weightDecay: {
    codec: NonNegativeNumber,
    default: 0.05,
    arg: "X",
    help: "AdamW weight decay (not on 1-D tensors and biases)",
  },
  /** Global-norm gradient clipping (official 3.0); 0 turns clipping off. */
  clipGrad: {
    codec: NonNegativeNumber,
    default: 3.0,
    arg: "X",
    help: "global gradient-norm clipping; 0 = off",
  },
  /** Masked patches per image; absent = the preset's default (lib/models/presets.ts `defaultNumMasked`). */
  numMasked: {
    optional: true,
    codec: PositiveInt,
    arg: "N",
    help: "masked patches per image, CAE's --num_mask_patches (default: the preset's); or give --mask-ratio",
  },
  /**
   * Masked fraction of the patch grid, another way to give `numMasked`: {@link resolvePretrainConfig}
   * turns it into `numMasked` = floor(maskRatio x patches), as the official `--ratio_mask_patches` does
   * (`int(ratio * num_patches)`, CAE's furnace/masking_generator.py), so a resolved config (and a run's
   * config.json) holds the count the run masks, never the ratio.
   */
  maskRatio: {
    optional: true,
    codec: UnitInterval,
    arg: "R",
    help:
      "masked fraction of the patches, CAE's --ratio_mask_patches: floor(R x patches); or give --num-masked",
  },
  /** Masking strategy. */
  masking: {
    codec: Masking,
    default: "block",
    arg: "NAME",
    help: "block (BEiT block-wise, official) or random",
  },
  /** Stochastic depth rate of the last block (official 0.1), rising linearly from 0. */
  dropPath: { codec: UnitInterval, default: 0.1, arg: "X", help: "stochastic depth rate" },
  /** Weight of the visible latent alignment loss (official 1). */
  visibleWeight: {
    codec: NonNegativeNumber,
    default: 1,
    arg: "X",
    help: "weight of the visible latent alignment loss",
  },
  /** Weight of the masked latent alignment loss (official 1). */
  maskedWeight: {
    codec: NonNegativeNumber,
    default: 1,
    arg: "X",
    help: "weight of the masked latent alignment loss",
  },
  /** Recompute each encoder block in the backward pass instead of keeping its activations. */
  remat: {
    codec: t.boolean,
    default: false,
    arg: "",
    help: "recompute each encoder block in the backward pass (less memory, about 1/3 more time)",
  },
  /** Data-parallel engine: "none" (one process) or "mpi" (Open MPI, lib/dist/mpi.ts). */
  distributed: {
    codec: Distributed,
    default: "none",
    arg: "NAME",
    help: "none, or mpi: data-parallel over the ranks of mpirun / srun (--batch-size is per rank)",
  },
  /** Seed of the run key: every mask, crop and drop path derives from it (0 to 2^53 - 1). */
  seed: { codec: Seed, default: 0, arg: "N", help: "seed of the run key" },
  /** CLIP teacher weights (safetensors); null = a randomly initialised small teacher (local runs only). */
  teacher: {
    codec: t.union([t.string, t.null]),
    default: null,
    arg: "FILE",
    help: "CLIP teacher weights (.safetensors); --no-teacher = random small teacher",
  },
  /** Run directory (default: `runs/<UTC timestamp>`, given by {@link defaultPretrainConfig}). */
  out: {
    codec: t.string,
    arg: "DIR",
    help: "run directory to create: config, metrics, checkpoints (default: runs/<UTC timestamp>)",
  },
  /** Run directory to resume (its newest complete checkpoint); null = a fresh run. */
  resume: {
    codec: t.union([t.string, t.null]),
    default: null,
    arg: "DIR",
    help: "resume the run in DIR from its newest complete checkpoint",
  },
  /** Save a checkpoint every this many optimizer steps (and at the end). */
  checkpointEvery: {
    codec: PositiveInt,
    default: 50,
    arg: "N",
    help: "save a checkpoint every N steps",
  },
  /** Checkpoints kept on disk (older ones are deleted after a newer one is complete). */
  keepCheckpoints: { codec: PositiveInt, default: 2, arg: "N", help: "checkpoints kept on disk" },
  /** Run a k-NN probe every this many steps; absent = never. */
  knnEvery: {
    optional: true,
    codec: PositiveInt,
    arg: "N",
    help: "k-NN probe every N steps (default: never)",
  },
  /** tfjs backend. */
  backend: {
    codec: BackendChoice,
    default: "auto",
    arg: "NAME",
    help: "tfjs backend: auto, webgpu, wasm, cpu",
  },
  /** Arithmetic of the products and the saved activations (lib/core/precision.ts). */
  precision: {
    codec: PrecisionName,
    default: "f32",
    arg: "NAME",
    help: "f32, or f16: f16 products and saved activations, f32 master weights, dynamic loss scaling " +
      "(webgpu with shader-f16 only)",
  },
  /** f16: the dynamic loss scale a fresh run starts with (lib/optim/loss_scale.ts; PyTorch's 2^16). */
  lossScale: {
    codec: PositiveNumber,
    default: 65536,
    arg: "X",
    help:
      "--precision f16: initial dynamic loss scale (halved on an overflow, doubled after 2000 finite steps)",
  },
  /** Data-loading workers; 0 = decode on the main thread. */
  workers: {
    codec: NonNegativeInt,
    default: 0,
    arg: "N",
    help: "data-loading workers (0 = main thread)",
  },
  /** Print a progress line every this many steps when stdout is not a terminal. */
  logEvery: {
    codec: PositiveInt,
    default: 10,
    arg: "N",
    help: "progress line every N steps when stdout is not a terminal",
  },
} as const satisfies Readonly<Record<string, ConfigField>>;

type Fields = typeof pretrainFields;
// Each row's default has its own codec's type (`satisfies` above sees every codec as t.Mixed).
const _defaultsMatch: DefaultsMatch<Fields> = pretrainFields;
void _defaultsMatch;
type RequiredKey = {
  [K in keyof Fields]: Fields[K] extends { readonly optional: true } ? never : K;
}[keyof Fields];
type OptionalKey = Exclude<keyof Fields, RequiredKey>;
type CodecsOf<K extends keyof Fields> = { [P in K]: Fields[P]["codec"] };

const entries = Object.entries(pretrainFields) as [keyof Fields, ConfigField][];
const codecsWhere = (optional: boolean) =>
  Object.fromEntries(
    entries.filter(([, f]) => (f.optional === true) === optional).map(([k, f]) => [k, f.codec]),
  );
const requiredCodecs = codecsWhere(false) as CodecsOf<RequiredKey>;
const optionalCodecs = codecsWhere(true) as CodecsOf<OptionalKey>;

/** The pretraining config codec; unknown keys are rejected. Decodes to a {@link PretrainConfig}. */
export const PretrainConfigCodec = strict(requiredCodecs, optionalCodecs, "PretrainConfig");

/**
 * A valid pretraining config: what {@link PretrainConfigCodec} decodes to, derived from
 * {@link pretrainFields} (field docs there): a field marked `optional` may be absent. Each value is its
 * codec's output type (`codec["_O"]`, io-ts `t.OutputOf`: `t.TypeOf` without the brands of `PositiveInt`
 * and the like), so that code may build a config from a decoded one with plain arithmetic; written with
 * no io-ts type name, which the public docs (`deno doc --lint mod.ts`) cannot link to.
 */
export type PretrainConfig =
  & {
    readonly [
      K in keyof typeof pretrainFields as (typeof pretrainFields)[K] extends { readonly optional: true }
        ? never
        : K
    ]: (typeof pretrainFields)[K]["codec"]["_O"];
  }
  & {
    readonly [
      K in keyof typeof pretrainFields as (typeof pretrainFields)[K] extends { readonly optional: true } ? K
        : never
    ]?: (typeof pretrainFields)[K]["codec"]["_O"];
  };

/** Any subset of a config's fields (a `--config` file, a resumed run's config.json). */
export const PretrainConfigPatch = strict(
  {},
  { ...requiredCodecs, ...optionalCodecs },
  "PretrainConfigPatch",
);
/** Any subset of a config's fields. */
export type PretrainConfigPatch = t.TypeOf<typeof PretrainConfigPatch>;

// Every field's codec by name, in flag order (what the flag parser takes).
const fields: t.Props = codecsOf(pretrainFields);
const order = Object.keys(pretrainFields) as (keyof Fields)[];

/** `runs/20250131-235959` (UTC), the default run directory of a run started at `now`. */
export const timestampedRunDir = (now: Date): string => {
  const p = (n: number) => String(n).padStart(2, "0");
  return `runs/${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}-${
    p(now.getUTCHours())
  }${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}`;
};

// The rows' defaults, and the run directory stamped with `now`.
const defaultsRaw = (now: Date): Record<string, unknown> => ({
  ...Object.fromEntries(entries.filter(([, f]) => f.default !== undefined).map(([k, f]) => [k, f.default])),
  out: timestampedRunDir(now),
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

/** The most elements one tfjs tensor can index (int32): a bound on the images of one micro-batch. */
export const MAX_TENSOR_VALUES = 2 ** 31 - 1;

/**
 * The fields that set one thing in two ways. A config sets at most one of each pair, and a layer of
 * settings that sets one drops the other from the layers below (lib/config/flags.ts `mergeLayers`).
 */
export const PRETRAIN_ALTERNATIVES: readonly FieldPair[] = [
  ["lr", "blr"],
  ["warmupSteps", "warmupEpochs"],
  ["numMasked", "maskRatio"],
];

// `steps` and `epochs` replace each other across layers too, but within one layer steps wins (not an error).
const REPLACING: readonly FieldPair[] = [["steps", "epochs"], ...PRETRAIN_ALTERNATIVES];

/**
 * Masked patches of a grid of `numPatches` at `ratio`, as the official `--ratio_mask_patches` counts them:
 * `int(ratio * num_patches)` (CAE's furnace/masking_generator.py `RandomMaskingGenerator`), the same
 * float64 product truncated, so `0.4` of 64 patches masks 25 (the micro preset's default, 26, is
 * `Math.round`ed: give `--num-masked 26` for it).
 *
 * @example
 * ```ts
 * import { maskedOfRatio } from "./pretrain.ts";
 * if (maskedOfRatio(0.75, 196) !== 147 || maskedOfRatio(0.4, 64) !== 25) throw new Error();
 * ```
 */
export const maskedOfRatio = (ratio: number, numPatches: number): number => Math.trunc(ratio * numPatches);

/**
 * Cross-field rules the codec cannot state alone; every broken rule is one line. Right: the config with
 * `maskRatio` turned into `numMasked` ({@link maskedOfRatio}); otherwise the config as given.
 */
export const checkPretrainConfig = (given: PretrainConfig): E.Either<string, PretrainConfig> => {
  const errors: string[] = [];
  let cfg = given;
  if (cfg.imageSize % cfg.patchSize !== 0) {
    errors.push(`patchSize ${cfg.patchSize} does not divide imageSize ${cfg.imageSize}`);
  }
  const numPatches = Math.floor(cfg.imageSize / cfg.patchSize) ** 2;
  errors.push(...bothGiven(cfg, PRETRAIN_ALTERNATIVES, "config"));
  if (cfg.maskRatio !== undefined && cfg.numMasked === undefined) {
    const { maskRatio, ...rest } = cfg;
    const n = maskedOfRatio(maskRatio, numPatches);
    if (n < 1 || n >= numPatches) {
      errors.push(
        `--mask-ratio ${maskRatio} masks ${n} of the ${numPatches} patches (floor(${maskRatio} x ${numPatches}), ` +
          `as the official ratio_mask_patches): give a ratio that masks at least one patch and leaves one`,
      );
    } else cfg = { ...rest, numMasked: n };
  }
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
  } else if (!Number.isSafeInteger(cfg.batchSize * cfg.accumulate)) {
    errors.push(
      `--batch-size ${cfg.batchSize} x --accumulate ${cfg.accumulate} images per step is beyond counting ` +
        "exactly (2^53): use a smaller --accumulate",
    );
  }
  if (cfg.steps === undefined && cfg.epochs === undefined) errors.push("set steps or epochs");
  if (cfg.steps !== undefined && cfg.warmupSteps !== undefined && cfg.warmupSteps > cfg.steps) {
    errors.push(`warmupSteps ${cfg.warmupSteps} exceeds steps ${cfg.steps}`);
  }
  if (cfg.warmupEpochs !== undefined) {
    if (cfg.steps !== undefined) {
      errors.push(
        `--warmup-epochs ${cfg.warmupEpochs} needs a run measured in epochs (--epochs N, no --steps; this ` +
          `run has ${cfg.steps} steps${cfg.epochs === undefined ? "" : `, which win over --epochs`}): with ` +
          "--steps, give the warmup as --warmup-steps",
      );
    } else if (cfg.epochs !== undefined && cfg.warmupEpochs > cfg.epochs) {
      errors.push(`warmupEpochs ${cfg.warmupEpochs} exceeds epochs ${cfg.epochs}`);
    }
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

/**
 * Keys that do not change what a run computes (where it writes, how it reports, which backend runs it, in
 * which precision: a run may resume in the other one, its checkpoints are float32 either way).
 */
export const HASH_EXCLUDED_KEYS: readonly (keyof PretrainConfig)[] = [
  "out",
  "resume",
  "backend",
  "precision",
  "lossScale",
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
  return pipe(readJsonSync(path, path, read), E.chain((json) => decodeWith(PretrainConfigPatch, json, path)));
};

/** The `--help` text of `deno task pretrain`. */
export const pretrainUsage = (): string => {
  const rows = [
    [
      "--config FILE",
      "JSON object of flag values, each named in camelCase (--batch-size: batchSize); flags override it",
    ],
    ...entries.map(([k, f]) => {
      const shown = f.default === undefined || f.default === null
        ? ""
        : ` (default: ${JSON.stringify(f.default)})`;
      return [`--${kebabCase(k)} ${f.arg}`.trimEnd(), `${f.help}${shown}`];
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
      readJsonSync(path, where, read),
      E.mapLeft((m) => (m.endsWith("file not found") ? `${m} (is ${resume} a run directory?)` : m)),
      E.chain((json) => decodeWith(PretrainConfigPatch, json, where)),
    );
    if (E.isLeft(layer)) errors.push(layer.left);
    else {
      errors.push(...bothGiven(layer.right, PRETRAIN_ALTERNATIVES, where));
      layers.push({ ...(layer.right as Record<string, unknown>), out: resume, resume });
    }
  }
  const file = extras.config;
  if (typeof file === "string") {
    const where = `config file ${file}`;
    const layer = pipe(
      readJsonSync(file, where, read),
      E.chain((json) => decodeWith(PretrainConfigPatch, json, where)),
    );
    if (E.isLeft(layer)) errors.push(layer.left);
    else {
      errors.push(...bothGiven(layer.right, PRETRAIN_ALTERNATIVES, where));
      layers.push(layer.right as Record<string, unknown>);
    }
  }
  const fromFlags = decodeWith(PretrainConfigPatch, values, "flags");
  // In flag errors, name the flag the user typed (`--batch-size`) rather than the field (`batchSize`).
  if (E.isLeft(fromFlags)) errors.push(flagPaths(fromFlags.left));
  else {
    if (resume !== undefined && values.out !== undefined && values.out !== resume) {
      errors.push(`flags: --out ${values.out} and --resume ${resume} name different runs; drop --out`);
    }
    errors.push(...bothGiven(fromFlags.right, PRETRAIN_ALTERNATIVES, "flags"));
    layers.push(resume !== undefined ? { ...values, out: resume } : { ...values });
  }
  if (errors.length > 0) return E.left(errors.join("\n"));
  return pipe(
    decodeWith(PretrainConfigCodec, mergeLayers(layers, REPLACING), "config"),
    E.chain(checkPretrainConfig),
  );
};

/** Every flag `deno task pretrain` knows. */
export const pretrainFlags = (): string[] => knownFlags(fields, { strings: ["config"] });
