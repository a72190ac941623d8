/**
 * Loader benchmark: images per second out of `pretrainLoader` for the synthetic source and for a folder
 * of JPEGs, with 0, 1 and 2 Workers, at 224 and 64 px; and the chosen decoders' time per image.
 * Prints a Markdown report (the numbers in BENCHMARKS.md come from here).
 *
 *   deno run -A tasks/bench_loader.ts [--images 256] [--batch 32] [--workers 0,1,2] [--sizes 224,64]
 *
 * The JPEG folder is written to a temporary directory first: `--images` photo-like 500 x 375 images
 * (a synthetic scene with fine texture and noise, so they compress like photos, ~100 KB at quality 90)
 * in 10 class folders, removed afterwards.
 *
 * @module
 */
import { decodeImage } from "../data/decode.ts";
import { pretrainLoader } from "../data/loader.ts";
import type { DataSource } from "../data/source.ts";
import { syntheticImage } from "../data/synthetic.ts";
import { resizeBicubic } from "../data/resize.ts";
import { key } from "../lib/core/random.ts";
import { parseArgs } from "../lib/core/std.ts";
import { encodeJpeg, encodePng, jpegJs } from "../lib/deps.ts";

const args = parseArgs(Deno.args, { string: ["images", "batch", "workers", "sizes"] });
const nImages = Number(args.images ?? 256);
const batch = Number(args.batch ?? 32);
const workerCounts = String(args.workers ?? "0,1,2").split(",").map(Number);
const sizes = String(args.sizes ?? "224,64").split(",").map(Number);

/** A photo-like W x H RGBA image: a synthetic scene, upscaled, with texture and noise. */
const photo = (i: number, w: number, h: number): ImageData => {
  const scene = syntheticImage(7, i, 128).image;
  const big = resizeBicubic(scene, { x: 0, y: 0, w: 128, h: 128 }, w, h);
  const d = new Uint8ClampedArray(w * h * 4);
  let s = (i * 2654435761) >>> 0;
  for (let p = 0; p < w * h; p++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const n = ((s >>> 24) - 128) / 6 + 14 * Math.sin(p * 0.37 + i);
    for (let c = 0; c < 3; c++) d[p * 4 + c] = big.data[p * 3 + c] + n;
    d[p * 4 + 3] = 255;
  }
  return new ImageData(d, w, h);
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const timePer = (f: () => void, reps: number) => {
  f();
  const ts = Array.from({ length: reps }, () => {
    const t0 = performance.now();
    f();
    return performance.now() - t0;
  });
  return median(ts);
};

const lines: string[] = [];
const out = (s: string) => {
  lines.push(s);
  console.log(s);
};

out(`# Data loader benchmark\n`);
out(
  `Machine: ${navigator.hardwareConcurrency} cores (${Deno.build.os} ${Deno.build.arch}), Deno ${Deno.version.deno}; ${
    new Date().toISOString().slice(0, 10)
  }\n`,
);

// Decoders, one thread, median of 30.
out(`## Decoding, ms per image (one thread, median of 30)\n`);
out(`| image | bytes | @jsquash/jpeg or png (used) | jpeg-js |`);
out(`| --- | --- | --- | --- |`);
for (const [w, h] of [[224, 224], [500, 375]]) {
  const img = photo(1, w, h);
  const jpg = new Uint8Array(await encodeJpeg(img, { quality: 90 }));
  const png = new Uint8Array(await encodePng(img));
  const a = timePer(() => decodeImage(jpg, "b.jpg"), 30);
  const b = timePer(() => jpegJs.decode(jpg, { useTArray: true, formatAsRGBA: false }), 30);
  out(`| JPEG ${w}x${h} q90 | ${jpg.length} | ${a.toFixed(2)} | ${b.toFixed(2)} |`);
  const c = timePer(() => decodeImage(png, "b.png"), 30);
  out(`| PNG ${w}x${h} | ${png.length} | ${c.toFixed(2)} | |`);
}

// A folder of JPEGs.
const root = await Deno.makeTempDir({ prefix: "bench_loader_" });
let bytes = 0;
for (let i = 0; i < nImages; i++) {
  const dir = `${root}/class${i % 10}`;
  await Deno.mkdir(dir, { recursive: true });
  const jpg = new Uint8Array(await encodeJpeg(photo(i, 500, 375), { quality: 90 }));
  bytes += jpg.length;
  await Deno.writeFile(`${dir}/${i}.jpg`, jpg);
}

const sources: [string, DataSource][] = [
  ["synthetic", { kind: "synthetic", size: nImages }],
  [`folder, ${nImages} JPEGs 500x375 (${(bytes / nImages / 1024).toFixed(0)} KB)`, {
    kind: "folder",
    path: root,
  }],
];
out(`\n## pretrainLoader throughput, images/s (batch ${batch}, block masking, after the first batch)\n`);
out(`| source | size | ${workerCounts.map((w) => `${w} workers`).join(" | ")} |`);
out(`| --- | --- | ${workerCounts.map(() => "---").join(" | ")} |`);
try {
  for (const [name, source] of sources) {
    for (const size of sizes) {
      const patch = size >= 224 ? 16 : 8;
      const grid = (size / patch) ** 2;
      const rates: string[] = [];
      for (const workers of workerCounts) {
        const loader = pretrainLoader(
          {
            source,
            batchSize: batch,
            imageSize: size,
            patchSize: patch,
            numMasked: Math.floor(grid / 2),
            masking: "block",
            workers,
            dropLast: true,
          },
          key(0),
        );
        let n = 0, t0 = 0;
        // Whole epochs' worth of batches from the (training) split, first batch excluded (worker start).
        const batches = Math.max(2, Math.floor((nImages * 0.9) / batch));
        for await (const b of loader) {
          if (n === 0) t0 = performance.now();
          n++;
          if (n > batches) break;
          void b;
        }
        const dt = (performance.now() - t0) / 1000;
        await loader.close();
        rates.push(((batches * batch) / dt).toFixed(0));
      }
      out(`| ${name} | ${size} | ${rates.join(" | ")} |`);
    }
  }
} finally {
  await Deno.remove(root, { recursive: true });
}
