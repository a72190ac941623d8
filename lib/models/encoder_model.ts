/**
 * An encoder as the code above the models passes it around: its shapes, its parameters and its fixed
 * position embedding. Evaluation loads one from a run or a weights file (lib/eval/load.ts); a pretraining
 * run hands its live student encoder to its evaluators (lib/train/evaluator.ts) as the same shape.
 *
 * @module
 */
import type { Tensor3D } from "../core/tree.ts";
import type { CaeV2Config } from "./config.ts";
import type { EncoderParams } from "./encoder.ts";

/** What running an encoder forward needs: a loaded one, or the live student of a pretraining run. */
export interface FrozenEncoder {
  /** Shapes of the student. */
  readonly config: CaeV2Config;
  /** The encoder's parameters, project names (lib/models/encoder.ts). */
  readonly params: EncoderParams;
  /** `[1, 1 + L, D]` sin-cos position embedding (cls row zero). */
  readonly pos: Tensor3D;
}

/** An encoder ready to run, with where it came from: what lib/eval/load.ts returns. */
export interface EncoderModel extends FrozenEncoder {
  /** Shapes of the student (drop path 0: evaluation). */
  readonly config: CaeV2Config;
  /** Where the weights came from, for logs ("runs/x/checkpoints/step-000150.safetensors (step 150)"). */
  readonly origin: string;
  /** Messages for the user (a skipped damaged checkpoint, an image size that differs from training). */
  readonly warnings: readonly string[];
}
