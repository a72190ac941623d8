/**
 * LARS (You et al. 2017, "Large Batch Training of Convolutional Networks") as the MAE/CAE linear probe
 * uses it: the MoCo v3 implementation copied into facebookresearch/mae `util/lars.py` and CAE's
 * `linear_util/lars.py`. For every parameter with more than one dimension, the gradient gets weight decay
 * and is rescaled by the trust ratio `eta * ||p|| / ||g + wd p||` (1 when either norm is 0); 1-D
 * parameters (norm weights, biases) pass unchanged. Then heavy-ball momentum `mu = m * mu + dp` and the
 * step `p -= lr * mu`.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { mapTree, type Params, zipTree } from "../core/tree.ts";
import { scaleByLearningRate } from "./lr.ts";
import type { Schedule } from "./schedule.ts";
import {
  assertSameNames,
  chain,
  type CountState,
  type GradientTransformation,
  tensorsIn,
  tidy,
} from "./transform.ts";

/** Which parameters LARS adapts (and decays). Receives the dotted name. */
export type LarsMask = (name: string, x: tf.Tensor) => boolean;

/** The official rule: `p.ndim > 1` ("if not normalization gamma/beta or bias"); names play no part. */
export const larsOfficialMask: LarsMask = (_name, x) => x.rank > 1;

/** Options of {@link scaleByLars}; the defaults are the official ones (weight decay 0 for linear probing). */
export interface LarsOptions {
  /** Weight decay added to the gradient of adapted params before the trust ratio (official probe: 0). */
  readonly weightDecay?: number;
  /** Heavy-ball momentum (0.9). */
  readonly momentum?: number;
  /** Trust coefficient eta (0.001). */
  readonly trustCoefficient?: number;
  /** Which params are adapted (default {@link larsOfficialMask}). */
  readonly mask?: LarsMask;
}

/** LARS's state: the momentum buffer `mu`, shaped like the params. */
export interface LarsState {
  /** Heavy-ball momentum buffer, shaped like the params. */
  readonly mu: Params;
}

/**
 * The LARS direction: `mu = momentum * mu + q * (g + wd * p)` where adapted, `mu = momentum * mu + g`
 * elsewhere, with `q = eta * ||p|| / ||g + wd p||` (or 1 when a norm is 0). The updates are `mu`
 * (multiply by `-lr` afterwards). Norms stay on the device.
 */
export const scaleByLars = (opts: LarsOptions = {}): GradientTransformation<LarsState> => {
  const { weightDecay = 0, momentum = 0.9, trustCoefficient = 0.001, mask = larsOfficialMask } = opts;
  if (!(momentum >= 0 && momentum < 1)) {
    throw new Error(`scaleByLars: momentum must be in [0, 1), got ${momentum}`);
  }
  if (!(weightDecay >= 0)) throw new Error(`scaleByLars: weightDecay must be >= 0, got ${weightDecay}`);
  if (!(trustCoefficient > 0)) {
    throw new Error(`scaleByLars: trustCoefficient must be > 0, got ${trustCoefficient}`);
  }
  return {
    // PyTorch creates `mu` lazily as zeros: the first step's momentum term is zero either way.
    init: (params) => ({ mu: tidy(() => mapTree(params, (p) => tf.zerosLike(p))) }),
    update: (updates, state, params) => {
      assertSameNames("scaleByLars.update", updates, "updates", params, "params");
      assertSameNames("scaleByLars.update", updates, "updates", state.mu, "LARS state");
      return tidy(() => {
        // One scope per tensor, so each leaf's temporaries go before the next leaf's are made.
        const direction = zipTree(updates, params, (g, p, name) =>
          tf.tidy(() => {
            if (!mask(name, p)) return tf.clone(g);
            const dp = weightDecay === 0 ? g : tf.add(g, tf.mul(p, weightDecay));
            const pn = tf.norm(p), un = tf.norm(dp);
            const one = tf.onesLike(pn);
            const q = tf.where(
              tf.greater(pn, 0),
              tf.where(tf.greater(un, 0), tf.div(tf.mul(pn, trustCoefficient), un), one),
              one,
            );
            return tf.mul(dp, q);
          }));
        const mu = zipTree(state.mu, direction, (m, d) => tf.tidy(() => tf.add(tf.mul(m, momentum), d)));
        tf.dispose(tensorsIn(direction));
        // The updates are a copy of the new state (the caller may dispose them without touching the state).
        return [mapTree(mu, (m) => tf.clone(m)), { mu }] as const;
      });
    },
  };
};

/** LARS's full state: the momentum buffer and the learning-rate count. */
export type LarsFullState = readonly [LarsState, CountState];

/**
 * LARS with a learning rate or schedule: `chain(scaleByLars(opts), scaleByLearningRate(lr))`, i.e.
 * `p -= lr_t * mu_t`, the official `p.add_(mu, alpha=-lr)`.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { lars } from "./lars.ts";
 * import { applyUpdates } from "./apply.ts";
 * await tf.setBackend("cpu");
 * const opt = lars({ lr: 0.1 });
 * const params = { w: tf.tensor2d([[3, 4]]), b: tf.tensor1d([1]) };
 * const [u] = opt.update({ w: tf.tensor2d([[1, 0]]), b: tf.tensor1d([2]) }, opt.init(params), params);
 * // w: q = 0.001 * 5 / 1, step -0.1 * 0.005; b (1-D): plain momentum SGD, step -0.1 * 2.
 * const w = await applyUpdates(params, u).w.data();
 * if (Math.abs(w[0] - (3 - 0.0005)) > 1e-6) throw new Error("unexpected");
 * ```
 */
export const lars = (
  opts: LarsOptions & { readonly lr: number | Schedule },
): GradientTransformation<LarsFullState> => chain(scaleByLars(opts), scaleByLearningRate(opts.lr));
