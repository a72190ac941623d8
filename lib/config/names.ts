/**
 * The names the command lines share, as codecs: the model presets (one list, which lib/models/presets.ts
 * `PresetName` and `presetNames` read too) and the backends a `--backend` flag may name (lib/core/backend.ts
 * `backendNames`, and "auto").
 *
 * @module
 */
import { t } from "../deps.ts";
import { type BackendChoice as Choice, backendNames } from "../core/backend.ts";
import { precisionNames } from "../core/precision.ts";

/** The model presets, smallest first; `micro` is a small local variant for tests and CPU runs (not from the paper). */
export const modelNames = ["micro", "tiny", "small", "base", "large"] as const;
/** A model preset name. */
export type ModelName = (typeof modelNames)[number];

/** `{ a: null, b: null }`: what `t.keyof` takes, in the order of `names`. */
const keysOf = <K extends string>(names: readonly K[]): Record<K, null> =>
  Object.fromEntries(names.map((n) => [n, null])) as Record<K, null>;

/** Codec of a model preset name (errors list {@link modelNames}). */
export const ModelName = t.keyof(keysOf(modelNames), "ModelName");

/** Codec of a `--backend` value: "auto" or one of lib/core/backend.ts `backendNames`. */
export const BackendChoice = t.keyof(keysOf<Choice>(["auto", ...backendNames]), "BackendChoice");
/** A `--backend` value (lib/core/backend.ts `BackendChoice`). */
export type BackendChoice = Choice;

/** Codec of a `--precision` value (lib/core/precision.ts `precisionNames`). */
export const PrecisionName = t.keyof(keysOf(precisionNames), "Precision");
