/**
 * A pretraining run directory made by hand for the evaluation tests: `config.json` of the micro preset at
 * 16 px and one checkpoint (step 1) whose parameters are `f` of a fresh init (NaN weights, huge weights, ...).
 *
 * @module
 */
import { tf } from "../lib/deps.ts";
import { key } from "../lib/core/random.ts";
import { flatten } from "../lib/core/tree.ts";
import { caev2Init } from "../lib/models/caev2.ts";
import { studentPreset } from "../lib/models/presets.ts";
import { saveCheckpoint } from "../lib/train/checkpoint.ts";

/** Writes the run at `dir`; returns the checkpoint file's path. */
export const writeMicroRun = async (dir: string, f: (x: tf.Tensor) => tf.Tensor): Promise<string> => {
  const cfg = studentPreset("micro", { imageSize: 16, patchSize: 8, dropPath: 0 });
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({ model: "micro", imageSize: 16, patchSize: 8 }),
  );
  const flat = flatten(caev2Init(key(1), cfg));
  const params = Object.fromEntries(Object.entries(flat).map(([n, x]) => [n, f(x)]));
  const meta = {
    step: 1,
    key: [0, 1] as const,
    configHash: "h",
    dataPosition: { epoch: 0, index: 1 },
    optHost: null,
  };
  await saveCheckpoint(dir, 1, { params, opt: {}, meta });
  tf.dispose([...Object.values(flat), ...Object.values(params)]);
  return `${dir}/checkpoints/step-000001.safetensors`;
};

/** NaN in every weight. */
export const nanWeights = (x: tf.Tensor): tf.Tensor => tf.fill(x.shape, NaN);
