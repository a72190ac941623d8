/**
 * Loading a student encoder to evaluate, from whatever the user points at:
 *
 * - a pretraining run directory: its newest complete checkpoint (lib/train/checkpoint.ts), shapes from
 *   its `config.json`;
 * - a checkpoint file of this toolkit (`params.encoder.*`), shapes from `../config.json` when it sits in
 *   a run directory, else read off the tensors;
 * - a safetensors file in the official CAE names (`encoder.patch_embed.proj.weight`, ...), e.g. the
 *   released CAE v2 weights converted as docs/evaluation.md shows, or the same names without the
 *   `encoder.` prefix (the fine-tuning `VisionTransformer`'s);
 * - `random`: the freshly initialised encoder that `deno task pretrain --seed N` starts from (the baseline
 *   of "does pretraining help?").
 *
 * Heads are not stored in the weights: they come from the preset of the same width and depth (T, S, B:
 * 12 heads, L: 16, micro: 4). Every mismatch is reported by name, with what was expected.
 *
 * @module
 */
import { E, t, tf } from "../deps.ts";
import { disposeTree, flatten, type Params, unflatten } from "../core/tree.ts";
import { type Key, key } from "../core/random.ts";
import { type HostTensor, readHeader, readSafetensors, toTensor } from "../core/safetensors.ts";
import { caev2Init } from "../models/caev2.ts";
import { type CaeV2Config, gridOf } from "../models/config.ts";
import { encoderInit, type EncoderParams } from "../models/encoder.ts";
import type { EncoderModel } from "../models/encoder_model.ts";
import { fromOfficial, type OfficialSlot, studentOfficialName } from "../models/names.ts";
import { type PresetName, presetNames, studentPreset } from "../models/presets.ts";
import { sinCos2d } from "../nn/positions.ts";
import { ModelName } from "../config/names.ts";
import { latestCheckpoint, verifyCheckpointFile } from "../train/checkpoint.ts";
import { runKeys } from "../train/run_keys.ts";
import { runPaths } from "../train/rundir.ts";
import { message, readJsonFile, statIfExists } from "../core/fs.ts";

/** What the command line may say about shapes; the weights' own shapes win where they disagree. */
export interface EncoderHints {
  /** Preset for `random` (default micro), or to pick the heads of a file whose width matches several. */
  readonly model?: PresetName;
  /** Evaluate at this image size (the sin-cos positions follow the grid; default: the training size). */
  readonly imageSize?: number;
  /** Patch size for `random` (the weights fix it otherwise). */
  readonly patchSize?: number;
  /** Seed of a `random` encoder. */
  readonly seed?: number;
}

/** Disposes an encoder's tensors. */
export const disposeEncoder = (m: EncoderModel): void => {
  for (const x of Object.values(flatten(m.params))) x.dispose();
  m.pos.dispose();
};

const withPos = (
  config: CaeV2Config,
  params: EncoderParams,
  origin: string,
  warnings: string[],
): EncoderModel => {
  const { side } = gridOf(config);
  return { config, params, pos: sinCos2d(side, side, config.dim), origin, warnings };
};

/** A freshly initialised encoder (the official init, lib/models/encoder.ts) of `config`, from `k`. */
export const randomEncoder = (config: CaeV2Config, k: Key): EncoderModel =>
  withPos(config, encoderInit(k, config), `random init (${config.dim} wide, ${config.depth} deep)`, []);

const isDir = async (path: string): Promise<boolean | undefined> => (await statIfExists(path))?.isDirectory;

// Only the fields that fix the encoder's shapes; the rest of config.json is the pretrain task's business.
const RunShape = t.type({ model: ModelName, imageSize: t.number, patchSize: t.number });

const readRunShape = async (
  configPath: string,
): Promise<E.Either<string, t.TypeOf<typeof RunShape>> | undefined> => {
  const json = await readJsonFile(configPath);
  if (json === undefined || E.isLeft(json)) return json;
  const r = RunShape.decode(json.right);
  return E.isRight(r)
    ? E.right(r.right)
    : E.left(`${configPath}: needs "model" (one of ${presetNames.join(", ")}), "imageSize" and "patchSize"`);
};

/** The naming of a weights file, told by its tensor names. */
type Layout =
  | { readonly kind: "project"; readonly prefix: string }
  | { readonly kind: "official"; readonly prefix: string };

const detectLayout = (names: readonly string[]): Layout | undefined => {
  const has = (n: string) => names.includes(n);
  for (const pre of ["params.", "", "module.", "model."]) {
    if (has(`${pre}encoder.patchEmbed.kernel`)) return { kind: "project", prefix: `${pre}encoder.` };
    if (has(`${pre}encoder.patch_embed.proj.weight`)) return { kind: "official", prefix: `${pre}encoder.` };
    if (has(`${pre}patch_embed.proj.weight`)) return { kind: "official", prefix: pre };
  }
  return undefined;
};

/** The preset an encoder config belongs to (by width and depth), if any. */
export const presetOf = (c: Pick<CaeV2Config, "dim" | "depth">): PresetName | undefined =>
  presetFor(c.dim, c.depth);

/** Heads of the preset with this width and depth (widths and depths are the official scripts'). */
const presetFor = (dim: number, depth: number, hint?: PresetName): PresetName | undefined => {
  const fits = presetNames.filter((n) => {
    const c = studentPreset(n);
    return c.dim === dim && c.depth === depth;
  });
  return hint !== undefined && fits.includes(hint) ? hint : fits[0];
};

/**
 * Shapes read off the weights: width and patch size from the patch projection, depth from the block
 * indices, MLP ratio from fc1, grid from an official `pos_embed` when there is one.
 */
const shapeFromTensors = (
  shapes: Readonly<Record<string, readonly number[]>>,
  layout: Layout,
  hints: EncoderHints,
  where: string,
): E.Either<string, CaeV2Config> => {
  const p = layout.prefix;
  const official = layout.kind === "official";
  const patch = shapes[official ? `${p}patch_embed.proj.weight` : `${p}patchEmbed.kernel`];
  // Official conv [D, 3, ps, ps]; project [ps * ps * 3, D].
  const dim = official ? patch[0] : patch[1];
  const patchSize = official ? patch[2] : Math.round(Math.sqrt(patch[0] / 3));
  const blockIds = new Set<number>();
  for (const n of Object.keys(shapes)) {
    const m = new RegExp(`^${p.replace(/\./g, "\\.")}blocks\\.(\\d+)\\.`).exec(n);
    if (m) blockIds.add(Number(m[1]));
  }
  const depth = blockIds.size;
  const fc1 = shapes[official ? `${p}blocks.0.mlp.fc1.weight` : `${p}blocks.0.mlp.fc1.kernel`];
  if (depth === 0 || fc1 === undefined) {
    return E.left(`${where}: no transformer blocks found under "${p}blocks."`);
  }
  const hidden = official ? fc1[0] : fc1[1];
  const preset = presetFor(dim, depth, hints.model);
  if (preset === undefined) {
    return E.left(
      `${where}: an encoder ${dim} wide and ${depth} deep matches no preset (${
        presetNames.join(", ")
      }), so its ` +
        "number of attention heads is unknown",
    );
  }
  const pos = official ? shapes[`${p}pos_embed`] : undefined;
  const posSize = pos !== undefined && pos.length === 3
    ? Math.round(Math.sqrt(pos[1] - 1)) * patchSize
    : undefined;
  const imageSize = hints.imageSize ?? posSize ?? 224;
  return E.right({ ...studentPreset(preset, { imageSize, patchSize, dropPath: 0 }), mlpRatio: hidden / dim });
};

const fmt = (s: readonly number[]) => `[${s.join(", ")}]`;

/** Encoder params from host tensors in the project's names (`encoder.` prefix removed by the caller). */
const fromProject = (
  like: EncoderParams,
  get: (name: string) => HostTensor | undefined,
  where: string,
  prefix: string,
): EncoderParams => {
  const out: Record<string, tf.Tensor> = {};
  try {
    for (const [name, ref] of Object.entries(flatten(like))) {
      const h = get(name);
      if (h === undefined) {
        throw new Error(`${where}: missing tensor "${prefix}${name}" (shape ${fmt(ref.shape)})`);
      }
      if (h.shape.length !== ref.shape.length || h.shape.some((v, i) => v !== ref.shape[i])) {
        throw new Error(
          `${where}: tensor "${prefix}${name}" has shape ${fmt(h.shape)}, expected ${fmt(ref.shape)}`,
        );
      }
      out[name] = toTensor(h);
    }
  } catch (e) {
    tf.dispose(Object.values(out));
    throw e;
  }
  return unflatten(out) as EncoderParams;
};

/** Reads the encoder from a weights file whose layout is known. */
const readEncoder = async (
  path: string,
  layout: Layout,
  config: CaeV2Config,
): Promise<EncoderParams> => {
  const file = await readSafetensors(path, { names: (n) => n.startsWith(layout.prefix) });
  const like = encoderInit(key(0), config);
  try {
    if (layout.kind === "project") {
      return fromProject(like, (n) => file.tensors[layout.prefix + n], path, layout.prefix);
    }
    // The official naming knows the student's names (`encoder.` + module path); swap that prefix for ours.
    const naming = (n: string): OfficialSlot => {
      const s = studentOfficialName(`encoder.${n}`);
      return { ...s, name: layout.prefix + s.name.slice("encoder.".length) };
    };
    const made: tf.Tensor[] = [];
    try {
      const source = (name: string) => {
        const h = file.tensors[name];
        if (h === undefined) return undefined;
        const x = toTensor(h);
        made.push(x);
        return x;
      };
      return fromOfficial(like as Params, source, naming, path) as EncoderParams;
    } finally {
      tf.dispose(made);
    }
  } finally {
    tf.dispose(Object.values(flatten(like)));
  }
};

const shapesOf = async (path: string): Promise<Record<string, readonly number[]>> => {
  const header = await readHeader(path);
  return Object.fromEntries(Object.entries(header.tensors).map(([n, i]) => [n, i.shape]));
};

const parentRun = (checkpointPath: string): string => {
  const parts = checkpointPath.split("/");
  // <run>/checkpoints/step-000123.safetensors -> <run>
  return parts.length >= 3 && parts[parts.length - 2] === "checkpoints"
    ? parts.slice(0, -2).join("/") || "."
    : "";
};

/**
 * {@link loadEncoder} as an `Either`, for the command lines that fold every failure into one exit
 * message: Left is the message {@link loadEncoder} would throw.
 *
 * @example
 * ```ts
 * import { disposeEncoder, loadEncoderEither } from "./load.ts";
 * import { E, tf } from "../deps.ts";
 * await tf.setBackend("cpu");
 * const m = await loadEncoderEither("random", { model: "micro", imageSize: 32, patchSize: 8 });
 * if (E.isLeft(m) || m.right.config.dim !== 64) throw new Error("unexpected");
 * disposeEncoder(m.right);
 * const bad = await loadEncoderEither("no/such/run");
 * if (E.isRight(bad) || !bad.left.includes("no such file or directory")) throw new Error("unexpected");
 * ```
 */
export const loadEncoderEither = async (
  spec: string,
  hints: EncoderHints = {},
): Promise<E.Either<string, EncoderModel>> => {
  try {
    if (spec === "random") {
      const config = studentPreset(hints.model ?? "micro", {
        imageSize: hints.imageSize ?? 64,
        patchSize: hints.patchSize ?? 8,
        dropPath: 0,
      });
      gridOf(config);
      // Exactly the encoder `deno task pretrain --seed N` starts from (same key, same init), so that
      // "random" versus a checkpoint measures what pretraining changed.
      const seed = hints.seed ?? 0;
      const full = caev2Init(runKeys(seed).init, config);
      const { encoder: params, ...rest } = full;
      disposeTree(rest as Params);
      return E.right(
        withPos(config, params, `random init (the start of a pretraining run with seed ${seed})`, []),
      );
    }
    const dir = await isDir(spec);
    if (dir === undefined) {
      return E.left(
        `--checkpoint ${spec}: no such file or directory (give a run directory, a .safetensors file or "random")`,
      );
    }
    const warnings: string[] = [];
    let path = spec, runDir = "";
    if (dir) {
      runDir = spec;
      const latest = await latestCheckpoint(spec);
      warnings.push(...latest.warnings);
      if (latest.checkpoint === undefined) {
        return E.left(
          `${runPaths(spec).checkpointsDir}: no complete checkpoint${
            latest.warnings.length ? ` (${latest.warnings.join("; ")})` : ""
          }. Is ${spec} a pretraining run directory? Pass a checkpoint file instead, or let the run save one`,
        );
      }
      path = latest.checkpoint.path;
    } else if (path.endsWith(".json")) path = path.replace(/\.json$/, ".safetensors");
    else runDir = parentRun(path);
    // A checkpoint of a run carries its SHA-256 in its index: a file whose bytes changed is refused.
    const checked = await verifyCheckpointFile(path);
    if (E.isLeft(checked)) return checked;

    const shapes = await shapesOf(path);
    const layout = detectLayout(Object.keys(shapes));
    if (layout === undefined) {
      const some = Object.keys(shapes).slice(0, 4).join(", ");
      return E.left(
        `${path}: no student encoder found (looked for "params.encoder.patchEmbed.kernel", ` +
          `"encoder.patch_embed.proj.weight" or "patch_embed.proj.weight"; the file has ${some}${
            Object.keys(shapes).length > 4 ? ", ..." : ""
          }). See docs/evaluation.md for converting official .pth checkpoints`,
      );
    }
    const fromWeights = shapeFromTensors(shapes, layout, hints, path);
    if (E.isLeft(fromWeights)) return fromWeights;
    let config = fromWeights.right;
    const run = runDir ? await readRunShape(runPaths(runDir).configPath) : undefined;
    if (run !== undefined) {
      if (E.isLeft(run)) return run;
      const trained = run.right;
      if (trained.patchSize !== config.patchSize) {
        return E.left(
          `${path}: patch size ${config.patchSize} in the weights, ${trained.patchSize} in ${runDir}/config.json`,
        );
      }
      const heads = studentPreset(trained.model).heads;
      config = { ...config, heads, imageSize: hints.imageSize ?? trained.imageSize };
      if (hints.imageSize !== undefined && hints.imageSize !== trained.imageSize) {
        warnings.push(
          `evaluating at ${hints.imageSize} px; the encoder was pretrained at ${trained.imageSize} px`,
        );
      }
    }
    gridOf(config);
    const params = await readEncoder(path, layout, config);
    const step = /step-(\d+)\.safetensors$/.exec(path);
    return E.right(withPos(config, params, step ? `${path} (step ${Number(step[1])})` : path, warnings));
  } catch (e) {
    return E.left(message(e));
  }
};

/**
 * Loads an encoder from `spec`: a run directory (its newest complete checkpoint), a weights file, or
 * `random` (see the module doc). Rejects with an `Error` whose message says what is wrong and what to do
 * (the same messages as {@link loadEncoderEither}). Free it with {@link disposeEncoder}.
 *
 * @example
 * ```ts
 * import { disposeEncoder, loadEncoder } from "./load.ts";
 * import { tf } from "../deps.ts";
 * await tf.setBackend("cpu");
 * const m = await loadEncoder("random", { model: "micro", imageSize: 32, patchSize: 8 });
 * if (m.config.dim !== 64 || m.config.imageSize !== 32) throw new Error("unexpected");
 * disposeEncoder(m);
 * const why = await loadEncoder("no/such/run").then(() => "", (e: Error) => e.message);
 * if (!why.includes("no such file or directory")) throw new Error(why);
 * ```
 */
export const loadEncoder = async (spec: string, hints: EncoderHints = {}): Promise<EncoderModel> => {
  const r = await loadEncoderEither(spec, hints);
  if (E.isLeft(r)) throw new Error(r.left);
  return r.right;
};
