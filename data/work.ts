/**
 * The per-sample work of the loader, as one function over a chunk of samples: read or render, decode,
 * augment (or the evaluation transform), normalise, mask. The same function runs in the Workers
 * (data/worker.ts) and inline (`workers: 0`), so the batches do not depend on where it ran.
 *
 * @module
 */
import type { Key } from "../lib/core/random.ts";
import { split } from "../lib/core/random.ts";
import { E } from "../lib/deps.ts";
import {
  augmentPixels,
  CLIP_MEAN,
  CLIP_STD,
  evalPixels,
  IMAGENET_MEAN,
  IMAGENET_STD,
  normalizeInto,
} from "./augment.ts";
import { decodeImage } from "./decode.ts";
import type { RgbImage } from "./image.ts";
import { blockMasking, randomMasking } from "./masking.ts";
import { syntheticImage } from "./synthetic.ts";

/** Where a sample's pixels come from. */
export type SampleRef =
  | { readonly kind: "synthetic"; readonly seed: Key; readonly index: number; readonly size: number }
  | { readonly kind: "file"; readonly path: string; readonly name: string }
  | { readonly kind: "bytes"; readonly bytes: Uint8Array; readonly name: string }
  | { readonly kind: "missing"; readonly name: string; readonly message: string };

/** One sample of a chunk: its key (`foldIn(foldIn(dataKey, epoch), index)`), label and source. */
export interface JobSample {
  readonly index: number;
  readonly key: Key;
  readonly label: number;
  readonly ref: SampleRef;
}

/** What to make of each sample. */
export interface JobSpec {
  /** "pretrain": two views and a mask; "eval": the evaluation transform only. */
  readonly mode: "pretrain" | "eval";
  readonly imageSize: number;
  readonly patchSize: number;
  readonly numMasked: number;
  readonly masking: "block" | "random";
  readonly minBlockPatches: number;
  /** false: the evaluation transform for both views (no jitter, flip or random crop). */
  readonly augment: boolean;
}

/** A chunk of consecutive samples of one epoch. */
export interface Job {
  readonly id: number;
  readonly spec: JobSpec;
  readonly samples: readonly JobSample[];
}

/** A sample that could not be used, and why. */
export interface Failure {
  readonly name: string;
  readonly message: string;
}

/** The processed chunk: the successful samples, packed, in order. */
export interface JobResult {
  readonly id: number;
  /** Samples that succeeded. */
  readonly count: number;
  /** `[count]`: epoch index of each. */
  readonly indices: Int32Array;
  /** `[count, S, S, 3]`: the student view (pretrain) or the evaluation image (eval). */
  readonly student: Float32Array;
  /** `[count, S, S, 3]`: the teacher view (pretrain); empty for eval. */
  readonly teacher: Float32Array;
  /** `[count, L]`; empty for eval. */
  readonly mask: Uint8Array;
  /** `[count]`. */
  readonly labels: Int32Array;
  readonly failures: readonly Failure[];
}

/** What a non-regular file is, for messages; undefined for a regular file. `stat` follows symlinks. */
const notRegular = (st: Deno.FileInfo): string | undefined =>
  st.isFile
    ? undefined
    : st.isDirectory
    ? "a directory"
    : st.isFifo
    ? "a FIFO"
    : st.isSocket
    ? "a socket"
    : st.isCharDevice || st.isBlockDevice
    ? "a device"
    : "not a file";

const pixelsOf = (ref: SampleRef): E.Either<Failure, RgbImage> => {
  switch (ref.kind) {
    case "synthetic":
      return E.right(syntheticImage(ref.seed, ref.index, ref.size).image);
    case "missing":
      return E.left({ name: ref.name, message: ref.message });
    case "bytes": {
      const r = decodeImage(ref.bytes, ref.name);
      return E.isLeft(r) ? E.left({ name: ref.name, message: r.left }) : r;
    }
    case "file": {
      let bytes: Uint8Array;
      try {
        // Never open what is not a regular file: opening a FIFO for reading blocks until a writer comes
        // (a FIFO named x.jpg hung the loader, inline or in a Worker), and a device may never end.
        const kind = notRegular(Deno.statSync(ref.path));
        if (kind !== undefined) {
          return E.left({
            name: ref.name,
            message:
              `${ref.name}: not a regular file (${kind}); not opened, as reading it could block: remove it`,
          });
        }
        bytes = Deno.readFileSync(ref.path);
      } catch (e) {
        return E.left({ name: ref.name, message: `${ref.name}: cannot read (${(e as Error).message})` });
      }
      const r = decodeImage(bytes, ref.name);
      return E.isLeft(r) ? E.left({ name: ref.name, message: r.left }) : r;
    }
  }
};

/** Processes a chunk. Unusable samples become failures; a wrong spec throws. */
export const processJob = (job: Job): JobResult => {
  const { spec, samples } = job;
  const S = spec.imageSize, n = samples.length, px = S * S * 3;
  const grid = S / spec.patchSize, L = grid * grid;
  const pretrain = spec.mode === "pretrain";
  const student = new Float32Array(n * px);
  const teacher = new Float32Array(pretrain ? n * px : 0);
  const mask = new Uint8Array(pretrain ? n * L : 0);
  const labels = new Int32Array(n);
  const indices = new Int32Array(n);
  const failures: Failure[] = [];
  let count = 0;
  for (const s of samples) {
    const img = pixelsOf(s.ref);
    if (E.isLeft(img)) {
      failures.push(img.left);
      continue;
    }
    if (pretrain) {
      const [augKey, maskKey] = split(s.key);
      const pixels = spec.augment ? augmentPixels(img.right, augKey, S).pixels : evalPixels(img.right, S);
      normalizeInto(pixels.data, IMAGENET_MEAN, IMAGENET_STD, student, count * px);
      normalizeInto(pixels.data, CLIP_MEAN, CLIP_STD, teacher, count * px);
      const opts = { height: grid, width: grid, numMasked: spec.numMasked };
      mask.set(
        spec.masking === "block"
          ? blockMasking(maskKey, { ...opts, minPatches: spec.minBlockPatches })
          : randomMasking(maskKey, opts),
        count * L,
      );
    } else {
      normalizeInto(evalPixels(img.right, S).data, IMAGENET_MEAN, IMAGENET_STD, student, count * px);
    }
    labels[count] = s.label;
    indices[count] = s.index;
    count++;
  }
  return {
    id: job.id,
    count,
    indices: indices.subarray(0, count),
    student: student.subarray(0, count * px),
    teacher: teacher.subarray(0, pretrain ? count * px : 0),
    mask: mask.subarray(0, pretrain ? count * L : 0),
    labels: labels.subarray(0, count),
    failures,
  };
};

/** The buffers of a result, to transfer rather than copy. */
export const transferables = (r: JobResult): ArrayBuffer[] =>
  [r.indices, r.student, r.teacher, r.mask, r.labels].map((a) => a.buffer as ArrayBuffer);
