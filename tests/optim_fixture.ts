/**
 * One AdamW step of the shared fixtures with this library, for the optimizer tests in-process
 * (tests/optim_test.ts) and on WebGPU (tests/webgpu/optim.ts). Not a test module itself.
 *
 * @module
 */
import { tf } from "../lib/deps.ts";
import { assert } from "../lib/core/std.ts";
import { disposeTree, flatten, unflatten } from "../lib/core/tree.ts";
import { readSafetensors, toTensor } from "../lib/core/safetensors.ts";
import { applyUpdates } from "../lib/optim/apply.ts";
import { globalNorm } from "../lib/optim/clip.ts";
import { type DecayMask, officialDecayMask } from "../lib/optim/decay.ts";
import { disposeState } from "../lib/optim/transform.ts";
import { relativeError } from "../lib/core/compare.ts";
import { fixtureAdamw } from "../lib/parity/fixture.ts";

export const FIXTURES = ["caev2-small-same-width", "caev2-projected-width"] as const;
const fixturePath = (name: string) => new URL(`./fixtures/${name}.safetensors`, import.meta.url).pathname;

export const values = async (t: tf.Tensor): Promise<Float32Array> => {
  const d = await t.data();
  return d instanceof Float32Array ? d : Float32Array.from(d);
};

/** One AdamW step of the fixture with this library; returns the worst errors (see the README). */
export const fixtureStep = async (name: string, mask: DecayMask = officialDecayMask) => {
  const { metadata, tensors } = await readSafetensors(fixturePath(name));
  const config = JSON.parse(metadata.config);
  const optimizer = JSON.parse(metadata.optimizer);
  const zeroGrad = new Set<string>(JSON.parse(metadata.zero_gradient_parameters));
  // Trainable params: the student tensors that have a gradient (pos embeddings are fixed buffers).
  const names = Object.keys(tensors).filter((k) => k.startsWith("grad.")).map((k) => k.slice("grad.".length));
  assert(names.length > 10, `${name}: expected gradients in the fixture, found ${names.length}`);
  const params = unflatten(Object.fromEntries(names.map((n) => [n, toTensor(tensors[`student.${n}`])])));
  const grads = unflatten(Object.fromEntries(names.map((n) => [n, toTensor(tensors[`grad.${n}`])])));

  const norm = globalNorm(grads);
  const normErr = Math.abs((await norm.data())[0] - tensors["output.grad_norm"].data[0]) /
    tensors["output.grad_norm"].data[0];

  const opt = fixtureAdamw(optimizer, config.clip, mask);
  const state0 = opt.init(params);
  const [updates, state1] = opt.update(grads, state0, params);
  const next = applyUpdates(params, updates);

  const flatNext = flatten(next), flatUpd = flatten(updates);
  let worstParam = 0, worstUpdate = 0, worstName = "";
  for (const n of names) {
    if (zeroGrad.has(n)) continue;
    const ref = tensors[`step1.${n}`].data, before = tensors[`student.${n}`].data;
    const e = relativeError(await values(flatNext[n]), ref);
    if (e > worstParam) [worstParam, worstName] = [e, n];
    // The step itself (step1 - params), a far sharper test than the params, which barely move.
    const refStep = Float64Array.from(ref, (v, i) => v - before[i]);
    worstUpdate = Math.max(worstUpdate, relativeError(await values(flatUpd[n]), refStep));
  }
  disposeTree(params, grads, updates, next);
  disposeState(state0);
  disposeState(state1);
  norm.dispose();
  return {
    normErr,
    worstParam,
    worstUpdate,
    worstName,
    count: names.length - zeroGrad.size,
    clip: config.clip,
  };
};
