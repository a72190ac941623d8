/**
 * AdamW as one transformation instead of a chain: the same options, state and arithmetic as `adamw(opts)`
 * (lib/optim/adamw.ts: global-norm clip, Adam with PyTorch's bias correction, decoupled weight decay with
 * the same mask, the learning rate or schedule), so checkpoints and the reference are interchangeable.
 * Two implementations, chosen by the `impl` argument:
 *
 * - `"kernel"`: the WebGPU kernel `CaeAdamW` (lib/core/kernels/adamw.ts): one sum-of-squares pass per
 *   tensor plus one for the clip factor, then three elementwise passes per tensor. The reference chain
 *   runs about 19 small kernels per parameter tensor, each paying tfjs's host-side dispatch.
 * - `"leafwise"`: plain tfjs, one parameter tensor at a time, each leaf's temporaries released before the
 *   next leaf's are made: the chain's ops in the chain's order (so the same values, bit for bit), but at
 *   most the gradients, the new moments and the updates beside the state, not also a second set of
 *   updates in flight between chain members (0.32 GiB less for ViT-B's 86 M parameters).
 *
 * The default, `"auto"`, takes the kernel where it is registered for the active backend (the project's
 * kernels are on: lib/core/kernels/dispatch.ts) and the leafwise path everywhere else.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { flatten, type Params, unflatten } from "../core/tree.ts";
import { ADAMW_KERNEL, type AdamWAttrs } from "../core/kernels/adamw.ts";
import { adamw, type AdamWOptions, type AdamWState } from "./adamw.ts";
import { officialDecayMask } from "./decay.ts";
import { globalNorm } from "./clip.ts";
import { assertSameNames, type GradientTransformation, tidy, valueAt } from "./transform.ts";

/** Which implementation {@link fusedAdamw} runs. */
export type AdamWImpl = "auto" | "kernel" | "leafwise";

/**
 * AdamW in one transformation; numerically the reference `adamw(opts)` (same options, same state).
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { fusedAdamw } from "./fused_adamw.ts";
 * await tf.setBackend("cpu");
 * const opt = fusedAdamw({ lr: 0.1, clip: 3 });
 * const params = { w: tf.tensor2d([[1, 2]]) };
 * const [updates] = opt.update({ w: tf.tensor2d([[0.5, -0.5]]) }, opt.init(params), params);
 * // First Adam step: the direction is sign(g), so the update is -lr * (sign(g) + wd * p).
 * const u = await (updates.w as tf.Tensor).data();
 * if (Math.abs(u[0] - -0.1 * (1 + 0.05)) > 1e-6) throw new Error(`unexpected ${u[0]}`);
 * ```
 */
export const fusedAdamw = (
  opts: AdamWOptions,
  impl: AdamWImpl = "auto",
): GradientTransformation<AdamWState> => {
  const reference = adamw(opts);
  const { b1 = 0.9, b2 = 0.999, eps = 1e-8 } = opts;
  const mask = opts.mask ?? officialDecayMask;
  const weightDecay = opts.weightDecay ?? 0.05;
  const useKernel = () =>
    impl === "kernel" || (impl === "auto" && tf.getKernel(ADAMW_KERNEL, tf.getBackend()) !== undefined);
  return {
    init: reference.init,
    update: (updates, state, params) => {
      const [clipState, adam, decayCount, lrCount] = state;
      assertSameNames("fusedAdamw.update", updates, "updates", adam.mu, "Adam state");
      assertSameNames("fusedAdamw.update", updates, "updates", params, "params");
      const g = flatten(updates), mu = flatten(adam.mu), nu = flatten(adam.nu), p = flatten(params);
      const names = Object.keys(g);
      const wd = valueAt(weightDecay, decayCount.count);
      const attrs: AdamWAttrs = {
        count: adam.count + 1,
        b1,
        b2,
        eps,
        wd,
        lr: valueAt(opts.lr, lrCount.count),
        clip: opts.clip ?? 0,
        decays: names.map((name) => wd !== 0 && mask(name, p[name])),
      };
      const nextState = (m: Record<string, tf.Tensor>, v: Record<string, tf.Tensor>): AdamWState => [
        clipState,
        { count: attrs.count, mu: unflatten(m) as Params, nu: unflatten(v) as Params },
        { count: decayCount.count + 1 },
        { count: lrCount.count + 1 },
      ];
      if (useKernel()) {
        const inputs: Record<string, tf.Tensor> = {};
        names.forEach((name, i) => {
          inputs[`g${i}`] = g[name];
          inputs[`m${i}`] = mu[name];
          inputs[`v${i}`] = nu[name];
          inputs[`p${i}`] = p[name];
        });
        return tidy(() => {
          const outs = tf.engine().runKernel(
            ADAMW_KERNEL,
            inputs,
            attrs as unknown as tf.NamedAttrMap,
          ) as tf.Tensor[];
          const pick = (k: number) =>
            Object.fromEntries(
              names.map((name, i) => [name, tf.reshape(outs[k * names.length + i], g[name].shape)]),
            );
          return [unflatten(pick(0)) as Params, nextState(pick(1), pick(2))] as const;
        });
      }
      // Leafwise: the reference chain's ops (clip.ts, adam.ts, decay.ts, lr.ts) in its order, per tensor.
      const invBc1 = 1 / (1 - b1 ** attrs.count);
      const invSqrtBc2 = 1 / Math.sqrt(1 - b2 ** attrs.count);
      const factor = opts.clip === undefined
        ? undefined
        : tf.tidy(() => tf.minimum(1, tf.div(opts.clip!, tf.add(globalNorm(updates), 1e-6))));
      const u: Record<string, tf.Tensor> = {},
        m: Record<string, tf.Tensor> = {},
        v: Record<string, tf.Tensor> = {};
      names.forEach((name, i) => {
        [u[name], m[name], v[name]] = tf.tidy(() => {
          const gc = factor === undefined ? g[name] : tf.mul(g[name], factor);
          const m1 = tf.add(tf.mul(mu[name], b1), tf.mul(gc, 1 - b1));
          const v1 = tf.add(tf.mul(nu[name], b2), tf.mul(tf.square(gc), 1 - b2));
          const d = tf.div(tf.mul(m1, invBc1), tf.add(tf.mul(tf.sqrt(v1), invSqrtBc2), eps));
          const dw = attrs.decays[i] ? tf.add(d, tf.mul(p[name], wd)) : d;
          return [tf.mul(dw, -attrs.lr), m1, v1];
        });
      });
      factor?.dispose();
      return [unflatten(u) as Params, nextState(m, v)] as const;
    },
  };
};
