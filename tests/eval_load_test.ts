/**
 * Loading encoders to evaluate: a pretraining run directory (newest complete checkpoint, shapes from its
 * config.json), a checkpoint file, a file in the official CAE names (with and without the `encoder.`
 * prefix, shapes read off the tensors), `random`; and errors that name what is wrong.
 */
import { tf } from "../lib/deps.ts";
import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertRejects,
  assertStringIncludes,
} from "../lib/core/std.ts";
import { key } from "../lib/core/random.ts";
import { flatten } from "../lib/core/tree.ts";
import { writeSafetensors } from "../lib/core/safetensors.ts";
import { caev2Init } from "../lib/models/caev2.ts";
import { studentOfficialName, toOfficial } from "../lib/models/names.ts";
import { studentPreset } from "../lib/models/presets.ts";
import { sinCos2d } from "../lib/nn/positions.ts";
import { saveCheckpoint } from "../lib/train/checkpoint.ts";
import { runKeys } from "../lib/train/run_keys.ts";
import { encodeImages } from "../lib/eval/features.ts";
import type { EncoderModel } from "../lib/models/encoder_model.ts";
import { disposeEncoder, loadEncoder, loadEncoderEither } from "../lib/eval/load.ts";
import { left, withTmp } from "./helpers.ts";

await tf.setBackend("cpu");

const cfg = studentPreset("micro", { imageSize: 32, patchSize: 8, dropPath: 0 });

const sameParams = async (m: EncoderModel, flat: Record<string, tf.Tensor>) => {
  const got = flatten(m.params);
  assertEquals(Object.keys(got).sort(), Object.keys(flat).sort());
  for (const [n, x] of Object.entries(flat)) {
    assertEquals(got[n].shape, x.shape, n);
    const [a, b] = [await got[n].data(), await x.data()];
    for (let i = 0; i < a.length; i++) assertAlmostEquals(a[i], b[i], 1e-7, n);
  }
};

const meta = (step: number) => ({
  step,
  key: [0, 1] as const,
  configHash: "h",
  dataPosition: { epoch: 0, index: step },
  optHost: null,
});

Deno.test("load: a run directory gives its newest checkpoint; a checkpoint file its own; shapes from config.json", () =>
  withTmp("caev2-eval-", async (dir) => {
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ model: "micro", imageSize: 32, patchSize: 8, extra: 1 }),
    );
    const a = caev2Init(key(1), cfg), b = caev2Init(key(2), cfg);
    await saveCheckpoint(dir, 3, { params: flatten(a), opt: {}, meta: meta(3) });
    await saveCheckpoint(dir, 5, { params: flatten(b), opt: {}, meta: meta(5) });
    const newest = await loadEncoder(dir);
    assertEquals(newest.config, cfg);
    assertStringIncludes(newest.origin, "step-000005.safetensors (step 5)");
    await sameParams(newest, flatten(b.encoder));
    const older = await loadEncoder(`${dir}/checkpoints/step-000003.safetensors`, { imageSize: 48 });
    assertEquals(older.config.imageSize, 48);
    assertEquals(older.pos.shape, [1, 1 + 36, 64]);
    assertStringIncludes(older.warnings.join(), "pretrained at 32 px");
    await sameParams(older, flatten(a.encoder));
    [newest, older].forEach(disposeEncoder);
  }));

Deno.test("load: official CAE names, with and without the encoder. prefix, give the same encoder and features", () =>
  withTmp("caev2-eval-", async (dir) => {
    const p = caev2Init(key(7), cfg);
    const official = toOfficial(p, studentOfficialName, cfg.patchSize);
    // As a converted .pth: encoder.* plus the decoder/regressor tensors and the fixed pos_embed.
    const withPos = { ...official, "encoder.pos_embed": sinCos2d(4, 4, 64) };
    await writeSafetensors(`${dir}/cae.safetensors`, withPos);
    const enc = await loadEncoder(`${dir}/cae.safetensors`);
    assertEquals(enc.config, cfg); // width, depth, patch, heads (micro), and the grid from pos_embed
    await sameParams(enc, flatten(p.encoder));
    // The fine-tuning VisionTransformer's names: no prefix, no pos_embed (image size from the flag).
    const bare = Object.fromEntries(
      Object.entries(official).filter(([n]) => n.startsWith("encoder.")).map(([n, x]) => [n.slice(8), x]),
    );
    await writeSafetensors(`${dir}/vit.safetensors`, bare);
    const vit = await loadEncoder(`${dir}/vit.safetensors`, { imageSize: 32 });
    await sameParams(vit, flatten(p.encoder));
    const images = tf.randomNormal([2, 32, 32, 3], 0, 1, "float32", 3) as tf.Tensor4D;
    const f1 = await encodeImages(enc, images, "cls").data(),
      f2 = await encodeImages(vit, images, "cls").data();
    f1.forEach((v, i) => assertAlmostEquals(v, f2[i], 1e-6));
    [enc, vit].forEach(disposeEncoder);
  }));

Deno.test("load: random encoders and errors that say what to do", () =>
  withTmp("caev2-eval-", async (dir) => {
    const r = await loadEncoder("random", { model: "tiny", imageSize: 32, patchSize: 16 });
    assertEquals([r.config.dim, r.config.depth, r.config.heads, r.config.imageSize], [192, 12, 12, 32]);
    disposeEncoder(r);
    // `random --seed 3` is the encoder a pretraining run with seed 3 starts from.
    const start = caev2Init(runKeys(3).init, cfg);
    const r3 = await loadEncoder("random", { imageSize: 32, patchSize: 8, seed: 3 });
    await sameParams(r3, flatten(start.encoder));
    disposeEncoder(r3);
    assertStringIncludes(left(await loadEncoderEither(`${dir}/nope`)), "no such file or directory");
    // loadEncoder rejects with the message loadEncoderEither gives as Left.
    await assertRejects(
      () => loadEncoder(`${dir}/nope`),
      Error,
      `--checkpoint ${dir}/nope: no such file or directory`,
    );
    await assertRejects(() => loadEncoder(dir), Error, "no complete checkpoint");
    assertStringIncludes(left(await loadEncoderEither(dir)), "no complete checkpoint");
    await writeSafetensors(`${dir}/other.safetensors`, { "foo.weight": tf.ones([2]) });
    const other = left(await loadEncoderEither(`${dir}/other.safetensors`));
    assertStringIncludes(other, "no student encoder found");
    assertStringIncludes(other, "foo.weight");
    const official = toOfficial(caev2Init(key(0), cfg), studentOfficialName, 8);
    const { ["encoder.blocks.1.attn.v_bias"]: _gone, ...missing } = official;
    await writeSafetensors(`${dir}/missing.safetensors`, missing);
    assertStringIncludes(
      left(await loadEncoderEither(`${dir}/missing.safetensors`, { imageSize: 32 })),
      'missing tensor "encoder.blocks.1.attn.v_bias" (project name "blocks.1.attn.vBias"',
    );
    const wide = toOfficial(
      caev2Init(key(0), studentPreset("micro", { imageSize: 32, patchSize: 8 })),
      studentOfficialName,
      8,
    );
    await writeSafetensors(`${dir}/odd.safetensors`, { ...wide, "encoder.blocks.4.gamma_1": tf.ones([64]) });
    assert(
      left(await loadEncoderEither(`${dir}/odd.safetensors`, { imageSize: 32 })).includes(
        "matches no preset",
      ),
    );
  }));

Deno.test("load: a checkpoint whose bytes changed is refused by its checksum, by the evaluations too", () =>
  withTmp("caev2-eval-", async (dir) => {
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ model: "micro", imageSize: 32, patchSize: 8 }),
    );
    const a = caev2Init(key(1), cfg);
    await saveCheckpoint(dir, 3, { params: flatten(a), opt: {}, meta: meta(3) });
    const file = `${dir}/checkpoints/step-000003.safetensors`;
    const bytes = await Deno.readFile(file);
    bytes[bytes.length - 5] ^= 0xff; // one flipped byte in the last tensor, same size
    await Deno.writeFile(file, bytes);
    assertStringIncludes(left(await loadEncoderEither(dir)), "is damaged");
    assertStringIncludes(left(await loadEncoderEither(file)), "SHA-256");
    tf.dispose(Object.values(flatten(a)));
  }));
