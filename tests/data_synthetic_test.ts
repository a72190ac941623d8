/** The synthetic dataset: deterministic, balanced labels, the same scene at any size. */
import { resizeBicubic } from "../data/resize.ts";
import { classNames, numClasses, syntheticImage, syntheticLabel } from "../data/synthetic.ts";
import { key } from "../lib/core/random.ts";
import { assert, assertEquals, assertLess, assertNotEquals } from "../lib/core/std.ts";

Deno.test("syntheticImage is a pure function of (seed, index, size)", () => {
  const a = syntheticImage(3, 17, 64), b = syntheticImage(key(3), 17, 64);
  assertEquals(a.image.data, b.image.data);
  assertEquals(a.label, b.label);
  assertNotEquals(syntheticImage(3, 18, 64).image.data, a.image.data);
  assertNotEquals(syntheticImage(4, 17, 64).image.data, a.image.data);
  assertEquals([a.image.width, a.image.height, a.image.data.length], [64, 64, 64 * 64 * 3]);
});

Deno.test("labels cycle through all classes", () => {
  assertEquals(numClasses, 10);
  assertEquals(classNames.length, numClasses);
  assertEquals(
    Array.from({ length: 20 }, (_, i) => syntheticImage(0, i, 16).label),
    Array.from({ length: 20 }, (_, i) => i % 10),
  );
  assertEquals(syntheticLabel(123), 3);
});

Deno.test("a small image is the large one, smaller: 224 px resized to 64 px matches the 64 px render", () => {
  for (let i = 0; i < 10; i++) {
    const big = syntheticImage(0, i, 224).image, small = syntheticImage(0, i, 64).image;
    const down = resizeBicubic(big, { x: 0, y: 0, w: 224, h: 224 }, 64, 64);
    const mad = down.data.reduce((s, v, j) => s + Math.abs(v - small.data[j]), 0) / down.data.length;
    assertLess(mad, 6, `image ${i}: mean difference ${mad.toFixed(2)}`);
  }
});

Deno.test("images have a visible object: contrast between the object and the background", () => {
  for (let i = 0; i < 20; i++) {
    const { data } = syntheticImage(1, i, 64).image;
    let lo = 255, hi = 0;
    for (let j = 0; j < data.length; j += 3) {
      const l = (data[j] + data[j + 1] + data[j + 2]) / 3;
      lo = Math.min(lo, l);
      hi = Math.max(hi, l);
    }
    assert(hi - lo > 60, `image ${i}: brightness range ${lo}..${hi}`);
  }
});
