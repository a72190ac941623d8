/**
 * Augmentation: byte-exact agreement with Pillow for the resampling and the colour adjustments, the
 * official RandomResizedCrop parameters draw for draw, and the two-view contract.
 *
 * PIL references: SHA-256 (first 32 hex digits) of Pillow 9.4.0's output bytes on a 37x23 pattern image,
 * pixel byte i = (37 i + 11 floor(i / 3) + i^2 mod 97) mod 256, made by:
 *   src = Image.fromarray(pattern(37, 23))
 *   resize_X_Y_W_H_OW_OH_F: (src.transpose(FLIP_LEFT_RIGHT) if F else src).crop((X, Y, X+W, Y+H))
 *                           .resize((OW, OH), Image.BICUBIC)
 *   brightness_f / contrast_f / saturation_f: ImageEnhance.Brightness / Contrast / Color(src).enhance(f)
 *   eval_S: torchvision's Resize(int(S / (224/256)), BICUBIC) then CenterCrop(S), written out:
 *           s = int(S / (224/256)); (nw, nh) = (s, int(s*h/w)) if w <= h else (int(s*w/h), s);
 *           src.resize((nw, nh), BICUBIC).crop at (int(round((nw-S)/2)), int(round((nh-S)/2)))
 *   eval_tall_12: the same on pattern(19, 41).
 * Crop references: `RandomResizedCropAndInterpolationWithTwoPic.get_params` (Atten4Vis/CAE
 * furnace/transforms.py, verbatim) with random.uniform/randint scripted as in data_masking_test.ts;
 * keys "<W>_<H>_<scale min>_<seed>", values (i, j, h, w).
 */
import {
  adjustBrightness,
  adjustContrast,
  adjustSaturation,
  augmentParams,
  augmentPixels,
  CLIP_MEAN,
  CLIP_STD,
  colorJitter,
  colorJitterCrop,
  evalPixels,
  evalTransform,
  IMAGENET_MEAN,
  IMAGENET_STD,
  pretrainTransform,
  randomResizedCropParams,
} from "../data/augment.ts";
import { type RgbImage, rgbImage, roundHalfEven } from "../data/image.ts";
import { resizeBicubic } from "../data/resize.ts";
import { key } from "../lib/core/random.ts";
import { assert, assertAlmostEquals, assertEquals, assertNotEquals } from "../lib/core/std.ts";

const PIL: Record<string, string> = {
  "resize_0_0_37_23_16_16_0": "8d5f4356ad938aa3e671afd740432c0a",
  "resize_3_2_30_19_16_16_1": "dbfcd06a59d7cb9ff5e3638d3a210f35",
  "resize_5_4_11_9_20_14_0": "3790192f5809c74a247e48d0bf01dcc8",
  "resize_0_0_37_23_37_11_0": "184f7d8e5a3dba5809632332391a89d8",
  "resize_2_1_9_20_9_7_1": "59d8842f4cf52f82f97e60a2f0257886",
  "resize_1_1_35_21_6_5_1": "4650bd29a8a2019025adf225c52a2f5b",
  "brightness_0.6": "04938abc36a7123e47f946de3f65888c",
  "contrast_0.6": "92f77e5f857b001b6c0543ebebb3fcb5",
  "saturation_0.6": "617f6a4252a1e1efa5baf6c302ba7a8d",
  "brightness_0.8137": "df0fd77091c3118c7885275ec8f9adfc",
  "contrast_0.8137": "b1f2b2e07117fd5b227295e1ff07fd80",
  "saturation_0.8137": "116564c8485f87dd2eb6263b66f505c2",
  "brightness_1.2345": "32f9d645685f4e8ca1c32a5cae5c6189",
  "contrast_1.2345": "63862ad36d1828778f96e596f09ec9e0",
  "saturation_1.2345": "d98bc78cf21b7e2c73b44334e7e69da9",
  "brightness_1.4": "9b85047c6f6e65da237741eddf14f0e2",
  "contrast_1.4": "53983f54190586f58bee672a17290d69",
  "saturation_1.4": "c621cf8133d75b597c10644972f07f68",
  "eval_16": "454fe167baf94dcde54a1c3c9cdf62f1",
  "eval_8": "61c6e630e1519432d11e5cb295ad64b1",
  "eval_tall_12": "c8ba776dcad97793ae3e7d14e744f938",
};

const OFFICIAL_CROPS: Record<string, [number, number, number, number]> = {
  "500_375_0.4_11": [54, 210, 316, 266],
  "224_224_0.4_12": [10, 6, 142, 188],
  "375_500_0.08_13": [25, 8, 344, 326],
  "64_64_0.4_14": [2, 16, 51, 42],
  "1000_100_0.4_15": [0, 433, 100, 133],
  "100_1000_0.9_16": [433, 0, 133, 100],
  "37_23_0.4_17": [0, 6, 23, 23],
};

const pattern = (w: number, h: number): RgbImage => {
  const d = new Uint8Array(w * h * 3);
  for (let i = 0; i < d.length; i++) d[i] = (i * 37 + Math.floor(i / 3) * 11 + ((i * i) % 97)) % 256;
  return rgbImage(w, h, d);
};

const sha = async (b: Uint8Array) =>
  Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", b.slice())),
    (x) => x.toString(16).padStart(2, "0"),
  )
    .join("").slice(0, 32);

const scripted = (seed: number) => {
  let s = BigInt(seed);
  const u = () => {
    s = (s * 6364136223846793005n + 1442695040888963407n) % 2n ** 64n;
    return Number(s >> 11n) / 2 ** 53;
  };
  return {
    next: u,
    uniform: (a: number, b: number) => a + (b - a) * u(),
    int: (a: number, b: number) => a + Math.floor(u() * (b - a + 1)),
  };
};

Deno.test("bicubic resize of crops (flipped or not) matches Pillow byte for byte", async () => {
  const src = pattern(37, 23);
  for (const [name, expected] of Object.entries(PIL).filter(([n]) => n.startsWith("resize_"))) {
    const [x, y, w, h, ow, oh, f] = name.split("_").slice(1).map(Number);
    assertEquals(await sha(resizeBicubic(src, { x, y, w, h }, ow, oh, f === 1).data), expected, name);
  }
});

Deno.test("brightness, contrast and saturation match Pillow's ImageEnhance byte for byte", async () => {
  const src = pattern(37, 23);
  const fns = { brightness: adjustBrightness, contrast: adjustContrast, saturation: adjustSaturation };
  for (const [name, expected] of Object.entries(PIL).filter(([n]) => !/^(resize|eval)_/.test(n))) {
    const [op, f] = name.split("_");
    assertEquals(await sha(fns[op as keyof typeof fns](src, Number(f)).data), expected, name);
  }
  // Factor 1 is the identity.
  assertEquals(adjustContrast(src, 1).data, src.data);
});

Deno.test("jittering only the crop gives the crop of the jittered image, for every order of adjustments", () => {
  const src = pattern(37, 23);
  for (let s = 0; s < 60; s++) {
    const p = augmentParams(key(s), 37, 23);
    assert(p.jitter);
    const full = colorJitter(src, p.jitter);
    const { x, y, w, h } = p.crop;
    const want = new Uint8Array(w * h * 3);
    for (let r = 0; r < h; r++) {
      want.set(full.data.subarray(((y + r) * 37 + x) * 3, ((y + r) * 37 + x + w) * 3), r * w * 3);
    }
    assertEquals(colorJitterCrop(src, p.jitter, p.crop).data, want, `key ${s}, order ${p.jitter.order}`);
    // And the whole view is jitter -> flip -> crop -> resize of the whole image.
    const view = resizeBicubic(full, p.crop, 12, 12, p.flip);
    assertEquals(augmentPixels(src, key(s), 12).pixels.data, view.data, `key ${s}`);
  }
});

Deno.test("evaluation resize + centre crop matches torchvision on PIL byte for byte", async () => {
  assertEquals(await sha(evalPixels(pattern(37, 23), 16).data), PIL.eval_16);
  assertEquals(await sha(evalPixels(pattern(37, 23), 8).data), PIL.eval_8);
  assertEquals(await sha(evalPixels(pattern(19, 41), 12).data), PIL.eval_tall_12);
});

Deno.test("RandomResizedCrop parameters match the official get_params draw for draw", () => {
  for (const [name, [i, j, h, w]] of Object.entries(OFFICIAL_CROPS)) {
    const [W, H, s0, seed] = name.split("_").map(Number);
    assertEquals(
      randomResizedCropParams(scripted(seed), W, H, [s0, 1], [3 / 4, 4 / 3]),
      { x: j, y: i, w, h },
      name,
    );
  }
});

Deno.test("RandomResizedCrop falls back to the centre crop after 10 misses", () => {
  // An area of 1.5x the image never fits: the fallback clamps a 10:1 image to the 4/3 ratio.
  const never = { next: () => 0.5, uniform: (a: number, b: number) => (a + b) / 2, int: (a: number) => a };
  assertEquals(randomResizedCropParams(never, 1000, 100, [1.5, 1.5]), { x: 433, y: 0, w: 133, h: 100 });
  assertEquals(randomResizedCropParams(never, 100, 1000, [1.5, 1.5]), { x: 0, y: 433, w: 100, h: 133 });
  assertEquals(randomResizedCropParams(never, 120, 100, [1.5, 1.5]), { x: 0, y: 0, w: 120, h: 100 });
});

Deno.test("roundHalfEven is Python's round", () => {
  assertEquals([0.5, 1.5, 2.5, -1.5, 2.4999, 2.5001].map(roundHalfEven), [0, 2, 2, -2, 2, 3]);
});

Deno.test("pretrainTransform: deterministic per key, two normalisations of the same pixels", () => {
  const img = pattern(37, 23);
  const a = pretrainTransform(img, key(1), 16), b = pretrainTransform(img, key(1), 16);
  assertEquals(a.student, b.student);
  assertEquals(a.teacher, b.teacher);
  assertNotEquals(pretrainTransform(img, key(2), 16).student, a.student);
  // Undo each normalisation: both views are the same uint8 crop.
  const { pixels } = augmentPixels(img, key(1), 16);
  for (let i = 0; i < a.student.length; i++) {
    const c = i % 3;
    assertAlmostEquals(a.student[i] * IMAGENET_STD[c] + IMAGENET_MEAN[c], pixels.data[i] / 255, 1e-6);
    assertAlmostEquals(a.teacher[i] * CLIP_STD[c] + CLIP_MEAN[c], pixels.data[i] / 255, 1e-6);
  }
});

Deno.test("augmentation draws: factors in [0.6, 1.4], all jitter orders, flips half the time, crops in range", () => {
  const orders = new Set<string>();
  let flips = 0;
  for (let s = 0; s < 600; s++) {
    const p = augmentParams(key(s), 500, 375);
    assert(p.jitter);
    orders.add(p.jitter.order.join(""));
    for (const f of [p.jitter.brightness, p.jitter.contrast, p.jitter.saturation]) {
      assert(f >= 0.6 && f < 1.4);
    }
    if (p.flip) flips++;
    const area = (p.crop.w * p.crop.h) / (500 * 375), ratio = p.crop.w / p.crop.h;
    assert(area >= 0.39 && area <= 1.01, `area ${area}`);
    assert(ratio >= 0.74 && ratio <= 1.34, `ratio ${ratio}`);
    assert(p.crop.x >= 0 && p.crop.y >= 0 && p.crop.x + p.crop.w <= 500 && p.crop.y + p.crop.h <= 375);
  }
  assertEquals(orders.size, 6);
  assert(flips > 240 && flips < 360, `${flips} flips of 600`);
  assertEquals(augmentParams(key(0), 50, 50, { colorJitter: 0 }).jitter, undefined);
});

Deno.test("a flip mirrors the view", () => {
  const img = pattern(37, 23);
  const opts = {
    colorJitter: 0,
    scale: [1, 1] as [number, number],
    ratio: [37 / 23, 37 / 23] as [number, number],
  };
  // Find a key that flips and one that does not; with the whole image as the crop, views are mirrors.
  const ks = Array.from({ length: 20 }, (_, s) => key(s));
  const kf = ks.find((k) => augmentParams(k, 37, 23, opts).flip)!;
  const kn = ks.find((k) => !augmentParams(k, 37, 23, opts).flip)!;
  const f = augmentPixels(img, kf, 37, opts).pixels, n = augmentPixels(img, kn, 37, opts).pixels;
  assertEquals(augmentParams(kf, 37, 23, opts).crop, { x: 0, y: 0, w: 37, h: 23 });
  for (let y = 0; y < f.height; y++) {
    for (let x = 0; x < f.width; x++) {
      for (let c = 0; c < 3; c++) {
        assertEquals(f.data[(y * f.width + x) * 3 + c], n.data[(y * n.width + (n.width - 1 - x)) * 3 + c]);
      }
    }
  }
});

Deno.test("evalTransform: shape, ImageNet normalisation of the centre crop", () => {
  const img = rgbImage(40, 30, new Uint8Array(40 * 30 * 3).fill(200));
  const out = evalTransform(img, 16);
  assertEquals(out.length, 16 * 16 * 3);
  for (let i = 0; i < out.length; i++) {
    assertAlmostEquals(out[i], (200 / 255 - IMAGENET_MEAN[i % 3]) / IMAGENET_STD[i % 3], 1e-6);
  }
});
