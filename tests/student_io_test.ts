/**
 * The student round-trips through both namings, official files (the parity fixture's `student.*`) load to
 * the same numbers the parity check proves, and a misshapen tensor fails naming it.
 */
import { tf } from "../lib/deps.ts";
import { assertEquals, assertRejects } from "../lib/core/std.ts";
import { selectBackend } from "../lib/core/backend.ts";
import { key } from "../lib/core/random.ts";
import { disposeTree, flatten } from "../lib/core/tree.ts";
import { caev2Init } from "../lib/models/caev2.ts";
import { studentPreset } from "../lib/models/presets.ts";
import { loadStudent, saveStudent } from "../lib/models/student_io.ts";
import { encodeSafetensors, readSafetensors } from "../lib/core/safetensors.ts";
import { disposeFixture, loadFixture } from "../lib/parity/fixture.ts";

await selectBackend("cpu");
const fixture = new URL("./fixtures/caev2-projected-width.safetensors", import.meta.url).pathname;

const same = async (a: Record<string, tf.Tensor>, b: Record<string, tf.Tensor>) => {
  assertEquals(Object.keys(a).sort(), Object.keys(b).sort());
  for (const n of Object.keys(a)) {
    assertEquals(Array.from(await a[n].data()), Array.from(await b[n].data()), n);
  }
};

Deno.test("student round trip under project and official names", async () => {
  const cfg = studentPreset("micro", { imageSize: 32, patchSize: 8, outDim: 16 });
  const p = caev2Init(key(3), { ...cfg, regressorDim: 32 }); // narrower regressor: the projection exists
  const c = { ...cfg, regressorDim: 32 };
  const dir = await Deno.makeTempDir();
  try {
    for (const naming of ["project", "official"] as const) {
      await saveStudent(`${dir}/${naming}.safetensors`, p, c, naming);
      const back = await loadStudent(`${dir}/${naming}.safetensors`, c);
      assertEquals(back.naming, naming);
      await same(flatten(p), flatten(back.params));
      disposeTree(back.params);
    }
    const { tensors } = await readSafetensors(`${dir}/official.safetensors`);
    assertEquals(tensors["encoder.patch_embed.proj.weight"].shape, [64, 3, 8, 8]);
    assertEquals(tensors["encoder_to_regresser.weight"].shape, [32, 64]);
  } finally {
    disposeTree(p);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an official-names file (the fixture's student.*) loads to the fixture's parameters", async () => {
  const f = await loadFixture(fixture);
  try {
    const { params, naming } = await loadStudent(fixture, f.student);
    assertEquals(naming, "official");
    await same(flatten(f.studentParams), flatten(params));
    disposeTree(params);
  } finally {
    disposeFixture(f);
  }
});

Deno.test("a misshapen or missing student tensor fails naming it", async () => {
  const { metadata, tensors } = await readSafetensors(fixture);
  const f = await loadFixture(fixture);
  const cfg = f.student;
  disposeFixture(f);
  const dir = await Deno.makeTempDir();
  try {
    const bad = { ...tensors, "student.mask_token": { shape: [1, 1, 23], data: new Float64Array(23) } };
    await Deno.writeFile(`${dir}/bad.safetensors`, encodeSafetensors(bad, metadata));
    await assertRejects(
      () => loadStudent(`${dir}/bad.safetensors`, cfg),
      Error,
      `tensor "mask_token" has shape [1, 1, 23], expected [1, 1, 24]`,
    );
    const missing = { ...tensors };
    delete (missing as Record<string, unknown>)["student.decoder.head.bias"];
    await Deno.writeFile(`${dir}/missing.safetensors`, encodeSafetensors(missing, metadata));
    await assertRejects(
      () => loadStudent(`${dir}/missing.safetensors`, cfg),
      Error,
      `missing tensor "decoder.head.bias"`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
