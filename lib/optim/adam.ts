/**
 * Adam's scaling (Kingma & Ba 2015), the readable reference for any fused kernel (docs/design.md, principle 7).
 *
 * @module
 */
import { tf } from "../deps.ts";
import { mapTree, type Params, zipTree } from "../core/tree.ts";
import { assertSameNames, type GradientTransformation, tidy } from "./transform.ts";

/** Adam's hyperparameters (PyTorch defaults; CAE v2 uses exactly these). */
export interface AdamOptions {
  /** Decay of the first moment (0.9). */
  readonly b1?: number;
  /** Decay of the second moment (0.999). */
  readonly b2?: number;
  /** Added to the root of the second moment (1e-8). */
  readonly eps?: number;
}

/** Adam's state: the update count (on the host) and the two moment estimates. */
export interface AdamState {
  /** Number of updates applied so far. */
  readonly count: number;
  /** First moment, `b1 * mu + (1 - b1) * g`, same structure as the params. */
  readonly mu: Params;
  /** Second moment, `b2 * nu + (1 - b2) * g^2`. */
  readonly nu: Params;
}

/**
 * Replaces the updates `g` by Adam's direction, with PyTorch `AdamW`'s bias correction:
 * `(mu / bc1) / (sqrt(nu) / sqrt(bc2) + eps)`, `bc_k = 1 - b_k^t`, `t` = updates including this one.
 * (PyTorch writes `denom = sqrt(nu) / sqrt(bc2) + eps`; optax's `sqrt(nu / bc2) + eps` is the same math.)
 * Multiply by `-lr` afterwards ({@link scaleByLearningRate} in lr.ts).
 */
export const scaleByAdam = (opts: AdamOptions = {}): GradientTransformation<AdamState> => {
  const { b1 = 0.9, b2 = 0.999, eps = 1e-8 } = opts;
  for (const [k, v] of [["b1", b1], ["b2", b2]] as const) {
    if (!(v >= 0 && v < 1)) throw new Error(`scaleByAdam: ${k} must be in [0, 1), got ${v}`);
  }
  if (!(eps >= 0)) throw new Error(`scaleByAdam: eps must be >= 0, got ${eps}`);
  return {
    init: (params) => ({
      count: 0,
      mu: tidy(() => mapTree(params, (p) => tf.zerosLike(p))),
      nu: tidy(() => mapTree(params, (p) => tf.zerosLike(p))),
    }),
    update: (updates, state) => {
      assertSameNames("scaleByAdam.update", updates, "updates", state.mu, "Adam state");
      return tidy(() => {
        const count = state.count + 1;
        // Bias corrections on the host, in float64.
        const invBc1 = 1 / (1 - b1 ** count);
        const invSqrtBc2 = 1 / Math.sqrt(1 - b2 ** count);
        // One scope per tensor: each leaf's temporaries go before the next leaf's are made (over the whole
        // tree at once they were 9 parameter-sized copies: 3.9 GiB for ViT-B, past the wasm heap).
        const mu = zipTree(
          state.mu,
          updates,
          (m, g) => tf.tidy(() => tf.add(tf.mul(m, b1), tf.mul(g, 1 - b1))),
        );
        const nu = zipTree(
          state.nu,
          updates,
          (v, g) => tf.tidy(() => tf.add(tf.mul(v, b2), tf.mul(tf.square(g), 1 - b2))),
        );
        const direction = zipTree(
          mu,
          nu,
          (m, v) => tf.tidy(() => tf.div(tf.mul(m, invBc1), tf.add(tf.mul(tf.sqrt(v), invSqrtBc2), eps))),
        );
        return [direction, { count, mu, nu }] as const;
      });
    },
  };
};
