/**
 * A fine-tuned classifier on disk, and what classifies images with it. The file is safetensors: the
 * classifier's tensors in project names (`patchEmbed.kernel`, `blocks.0.attn.qkv.kernel`, ..., `fcNorm.scale`,
 * `head.kernel`; lib/eval/finetune.ts `ClassifierParams`) and in `__metadata__`:
 *
 * - `format`: `caev2-classifier`;
 * - `config`: the encoder's shapes (JSON of `CaeV2Config`);
 * - `numClasses`, and `classNames`: a JSON array of the class names in label order (what `deno task
 *   classify` prints; files written before class names were stored have none, and get `class <i>`);
 * - `origin`: the checkpoint it was fine-tuned from.
 *
 * Images go through the official evaluation transform (data/augment.ts `evalTransform`: bicubic resize of
 * the shorter side to `size / 0.875`, centre crop, ImageNet mean/std), exactly what the held-out split is
 * scored with during fine-tuning.
 *
 * @module
 */
import { E, tf } from "../deps.ts";
import { key } from "../core/random.ts";
import { flatten, type Params, unflatten } from "../core/tree.ts";
import { readSafetensors, toTensor, writeSafetensors } from "../core/safetensors.ts";
import { type CaeV2Config, gridOf } from "../models/config.ts";
import { encoderInit } from "../models/encoder.ts";
import { sinCos2d } from "../nn/positions.ts";
import { evalTransform } from "../../data/augment.ts";
import type { RgbImage } from "../../data/image.ts";
import { classifierApply, type ClassifierParams } from "./finetune.ts";
import { assertFinite } from "./finite.ts";
import { secondTopK } from "./heads.ts";
import { message } from "../core/fs.ts";

/** `__metadata__.format` of a classifier file. */
export const CLASSIFIER_FORMAT = "caev2-classifier";

/** A classifier ready to run. */
export interface SavedClassifier {
  /** Its tensors. */
  readonly params: ClassifierParams;
  /** The encoder's shapes (drop path 0: inference). */
  readonly config: CaeV2Config;
  /** `[1, 1 + L, D]` sin-cos positions of its grid. */
  readonly pos: tf.Tensor3D;
  /** Class names, label order. */
  readonly classNames: readonly string[];
  /** Where the file says it came from (the fine-tuned checkpoint), or the file itself. */
  readonly origin: string;
  /** Messages for the user (no class names stored). */
  readonly warnings: readonly string[];
}

/** Writes a classifier with its shapes, origin and class names (see the module doc). */
export const saveClassifier = (
  path: string,
  params: ClassifierParams,
  config: CaeV2Config,
  o: { readonly origin: string; readonly classNames: readonly string[] },
): Promise<void> => {
  const classes = params.head.kernel.shape[1];
  if (o.classNames.length !== classes) {
    throw new Error(`saveClassifier: ${o.classNames.length} class names for a head of ${classes} classes`);
  }
  return writeSafetensors(path, flatten(params), {
    format: CLASSIFIER_FORMAT,
    origin: o.origin,
    config: JSON.stringify(config),
    numClasses: String(classes),
    classNames: JSON.stringify(o.classNames),
  });
};

/** Disposes a loaded classifier's tensors. */
export const disposeClassifier = (c: SavedClassifier): void => {
  tf.dispose([...Object.values(flatten(c.params)), c.pos]);
};

const CONFIG_FIELDS = ["imageSize", "patchSize", "dim", "depth", "heads", "mlpRatio", "eps"] as const;

const fmt = (s: readonly number[]) => `[${s.join(", ")}]`;

/**
 * Reads a classifier written by `deno task finetune --out` ({@link saveClassifier}). Left: a message
 * naming the file and what is wrong (not a classifier, a missing tensor, a shape, bad class names).
 */
export const loadClassifier = async (path: string): Promise<E.Either<string, SavedClassifier>> => {
  let file;
  try {
    file = await readSafetensors(path);
  } catch (e) {
    return E.left(message(e));
  }
  const meta = file.metadata;
  const notOne =
    `${path}: not a fine-tuned classifier (written by deno task finetune --out FILE.safetensors)`;
  if (meta.config === undefined || file.tensors["head.kernel"] === undefined) {
    return E.left(`${notOne}: it has no "config" metadata or no "head.kernel" tensor`);
  }
  let config: CaeV2Config;
  try {
    config = { ...JSON.parse(meta.config), dropPath: 0 };
  } catch (e) {
    return E.left(`${path}: its "config" metadata is not JSON (${(e as Error).message})`);
  }
  const bad = CONFIG_FIELDS.filter((k) => typeof config[k] !== "number");
  if (bad.length > 0) return E.left(`${path}: its "config" metadata lacks ${bad.join(", ")}`);
  const classes = file.tensors["head.kernel"].shape[1];
  const warnings: string[] = [];
  let classNames: readonly string[];
  if (meta.classNames === undefined) {
    classNames = Array.from({ length: classes }, (_, i) => `class ${i}`);
    warnings.push(`${path} stores no class names (fine-tuned before they were kept): printing "class <i>"`);
  } else {
    let names: unknown;
    try {
      names = JSON.parse(meta.classNames);
    } catch {
      names = undefined;
    }
    if (!Array.isArray(names) || names.length !== classes || names.some((n) => typeof n !== "string")) {
      return E.left(`${path}: its "classNames" metadata is not a JSON array of ${classes} strings`);
    }
    classNames = names;
  }
  // The names and shapes expected, from the encoder of this config (its final norm is the classifier's
  // fcNorm) and a head of `classes` outputs.
  const like = encoderInit(key(0), config);
  const expected: Record<string, readonly number[]> = {};
  for (const [n, x] of Object.entries(flatten(like))) {
    expected[n.startsWith("norm.") ? `fcNorm.${n.slice(5)}` : n] = x.shape;
  }
  tf.dispose(Object.values(flatten(like)));
  expected["head.kernel"] = [config.dim, classes];
  expected["head.bias"] = [classes];
  for (const [n, shape] of Object.entries(expected)) {
    const h = file.tensors[n];
    if (h === undefined) return E.left(`${path}: missing tensor "${n}" (shape ${fmt(shape)})`);
    if (h.shape.length !== shape.length || h.shape.some((v, i) => v !== shape[i])) {
      return E.left(`${path}: tensor "${n}" has shape ${fmt(h.shape)}, expected ${fmt(shape)}`);
    }
  }
  const params = unflatten(
    Object.fromEntries(Object.keys(expected).map((n) => [n, toTensor(file.tensors[n])])),
  ) as Params as ClassifierParams;
  const { side } = gridOf(config);
  return E.right({
    params,
    config,
    pos: sinCos2d(side, side, config.dim),
    classNames,
    origin: meta.origin ? `${path} (fine-tuned from ${meta.origin})` : path,
    warnings,
  });
};

/** One class of a prediction. */
export interface Prediction {
  /** Label. */
  readonly index: number;
  /** Its name. */
  readonly name: string;
  /** Softmax probability. */
  readonly probability: number;
}

/**
 * The top classes of one image (decoded RGB): the evaluation transform at the classifier's size, the
 * classifier, softmax; `k` classes (default `secondTopK(classes)`: 5, or classes - 1 with fewer than 6,
 * at least 1), most probable first. Throws, naming the classifier, on non-finite logits.
 */
export const classifyImage = async (c: SavedClassifier, img: RgbImage, k?: number): Promise<Prediction[]> => {
  const S = c.config.imageSize;
  const probs = tf.tidy(() =>
    tf.softmax(
      classifierApply(c.params, c.config, c.pos, tf.tensor4d(evalTransform(img, S), [1, S, S, 3]), {
        training: false,
      }),
    )
  );
  const p = await probs.data();
  probs.dispose();
  assertFinite(p, "the class probabilities", c.origin);
  const take = Math.min(k ?? secondTopK(p.length), p.length);
  // Stable: ties go to the lower label, as countTopK ranks them.
  const order = Array.from(p, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
  return order.slice(0, take).map((i) => ({ index: i, name: c.classNames[i], probability: p[i] }));
};
