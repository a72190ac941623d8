/**
 * Semantic segmentation on frozen features, the linear form of the CAE v2 paper's ADE20K evaluation (the
 * paper fine-tunes a UperNet; this is the frozen-encoder probe, close to DINOv2's "linear" protocol without
 * its cls token concatenated to each patch): the encoder runs once over every training image (all patches,
 * no mask, inference mode); its patch tokens after the final LayerNorm (cls dropped) are standardised per
 * channel with the training set's mean and variance (a BatchNorm with frozen statistics and no affine, eps
 * 1e-6) and fed to a linear per-patch head (`[D, C]` + bias: mmseg's `conv_seg`, a 1x1 convolution, weight
 * ~ N(0, 0.01²), bias 0). Its logits on the `S/p x S/p` patch grid are upsampled bilinearly to pixels
 * (PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`, {@link bilinearWeights}) and trained
 * with per-pixel cross-entropy averaged over the labelled pixels (mmseg's `avg_non_ignore=True`; label
 * 255 ignored), AdamW with a warmup + cosine schedule, on the cached tokens (no augmentation: a frozen
 * encoder sees each training image once). The held-out split is encoded on the fly, its logits upsampled
 * to each label map's own size, the argmax scored with lib/eval/seg_metrics.ts (mmseg's mIoU, mAcc, aAcc).
 *
 * The cached tokens take `N x L x D x 4` bytes of host memory (1000 images of the micro encoder at 64 px:
 * 16 MiB; ADE20K's 20,210 training images through ViT-B at 224 px: 12 GiB): bound N with `maxTrain`.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { foldIn, type Key, permutation, seedOf, split } from "../core/random.ts";
import { disposeTree } from "../core/tree.ts";
import { valueAndGrad } from "../core/autodiff.ts";
import { encoder } from "../models/encoder.ts";
import type { FrozenEncoder } from "../models/encoder_model.ts";
import { fusedAdamw } from "../optim/fused_adamw.ts";
import { applyGradients, disposeTrainState, initTrainState } from "../optim/train_state.ts";
import { cosineSchedule } from "../optim/schedule.ts";
import { disposeState } from "../optim/transform.ts";
import { IGNORE_INDEX, type SegBatch, segBatches, type SegSource } from "../../data/segmentation.ts";
import { assertFinite } from "./finite.ts";
import { addSegCounts, segCounts, type SegScores, segScores } from "./seg_metrics.ts";

/**
 * Weights of 1-D linear interpolation from `inSize` to `outSize` samples, `[outSize, inSize]` row-major,
 * with PyTorch's `align_corners=False` rule: output `i` reads source `(i + 0.5) * in / out - 0.5`,
 * clamped at 0, between its floor and the next sample (the last sample repeated at the far edge).
 *
 * @example
 * ```ts
 * import { bilinearWeights } from "./segment.ts";
 * // 2 -> 4: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to the last sample).
 * const w = bilinearWeights(2, 4);
 * if (w.join() !== "1,0,0.75,0.25,0.25,0.75,0,1") throw new Error(w.join());
 * ```
 */
export const bilinearWeights = (inSize: number, outSize: number): Float32Array => {
  const w = new Float32Array(outSize * inSize);
  const scale = inSize / outSize;
  for (let i = 0; i < outSize; i++) {
    const src = Math.max(0, (i + 0.5) * scale - 0.5);
    const i0 = Math.min(Math.floor(src), inSize - 1);
    const i1 = i0 < inSize - 1 ? i0 + 1 : i0;
    const l1 = src - i0, l0 = 1 - l1;
    w[i * inSize + i0] += l0;
    w[i * inSize + i1] += l1;
  }
  return w;
};

/**
 * `x: [B, h, w, C]` -> `[B, H, W, C]`, bilinear ({@link bilinearWeights} along each axis), as two 2-D
 * matrix products (differentiable on every backend). `rows` computes only output rows `[r0, r1)`.
 */
export const upsampleBilinear = (
  x: tf.Tensor4D,
  H: number,
  W: number,
  rows: readonly [number, number] = [0, H],
): tf.Tensor4D =>
  tf.tidy(() => {
    const [b, h, w, c] = x.shape;
    const [r0, r1] = rows;
    // Along the width: [w, B*h*C] -> [W, B*h*C].
    const ux = tf.tensor2d(bilinearWeights(w, W), [W, w]);
    const xw = tf.reshape(tf.transpose(x, [2, 0, 1, 3]), [w, b * h * c]);
    const yw = tf.transpose(tf.reshape(tf.matMul(ux, xw), [W, b, h, c]), [2, 1, 0, 3]); // [h, B, W, C]
    // Along the height: [h, B*W*C] -> [r1 - r0, B*W*C].
    const uy = tf.tensor2d(bilinearWeights(h, H).subarray(r0 * h, r1 * h), [r1 - r0, h]);
    const y = tf.matMul(uy, tf.reshape(yw, [h, b * W * c]));
    return tf.transpose(tf.reshape(y, [r1 - r0, b, W, c]), [1, 0, 2, 3]) as tf.Tensor4D;
  });

/** The linear head: a 1x1 convolution over the patch grid. */
export type SegHead = {
  /** `[D, C]`. */
  readonly w: tf.Tensor2D;
  /** `[C]`. */
  readonly b: tf.Tensor1D;
};

/** Per-channel standardisation of the features: `(x - mean) / std`. */
export interface FeatureNorm {
  /** `[D]`. */
  readonly mean: tf.Tensor1D;
  /** `[D]`, `sqrt(var + 1e-6)`. */
  readonly std: tf.Tensor1D;
}

/** The head drawn as mmseg draws `conv_seg`: weight ~ N(0, 0.01²), bias 0. */
export const segHeadInit = (k: Key, dim: number, numClasses: number): SegHead => ({
  w: tf.randomNormal([dim, numClasses], 0, 0.01, "float32", seedOf(k)) as tf.Tensor2D,
  b: tf.zeros([numClasses]) as tf.Tensor1D,
});

/** Disposes a head and its feature normalisation. */
export const disposeSegHead = (h: { readonly head: SegHead; readonly norm: FeatureNorm }): void => {
  disposeTree(h.head);
  tf.dispose([h.norm.mean, h.norm.std]);
};

/** `tokens: [B, L, D]` (L = side²) -> logits on the patch grid `[B, side, side, C]`. */
export const segLogits = (head: SegHead, norm: FeatureNorm, tokens: tf.Tensor3D): tf.Tensor4D =>
  tf.tidy(() => {
    const [b, l, d] = tokens.shape;
    const side = Math.round(Math.sqrt(l));
    if (side * side !== l) throw new Error(`segLogits: ${l} patch tokens do not make a square grid`);
    const x = tf.div(tf.sub(tf.reshape(tokens, [b * l, d]), norm.mean), norm.std);
    const z = tf.add(tf.matMul(x, head.w), head.b);
    return tf.reshape(z, [b, side, side, head.b.shape[0]]) as tf.Tensor4D;
  });

/**
 * Mean cross-entropy over the labelled pixels: `logits: [N, C]`, `labels: [N]` with {@link IGNORE_INDEX}
 * (or any value outside `0..C-1`) for pixels that do not count. 0 when no pixel is labelled.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { pixelCrossEntropy } from "./segment.ts";
 * await tf.setBackend("cpu");
 * const l = pixelCrossEntropy(tf.tensor2d([[0, 0], [5, -5]]), Int32Array.from([1, 255]));
 * if (Math.abs((await l.data())[0] - Math.log(2)) > 1e-6) throw new Error("only the labelled pixel counts");
 * ```
 */
export const pixelCrossEntropy = (logits: tf.Tensor2D, labels: Int32Array): tf.Scalar =>
  tf.tidy(() => {
    const c = logits.shape[1];
    const idx = new Int32Array(labels.length);
    let valid = 0;
    for (let i = 0; i < labels.length; i++) {
      const y = labels[i];
      const ok = y >= 0 && y < c;
      idx[i] = ok ? y : -1; // tf.oneHot gives an all-zero row outside 0..C-1
      if (ok) valid++;
    }
    const picked = tf.sum(tf.mul(tf.oneHot(tf.tensor1d(idx, "int32"), c), tf.logSoftmax(logits)));
    return tf.div(tf.neg(picked), Math.max(1, valid)) as tf.Scalar;
  });

/** `images: [B, S, S, 3]` -> patch tokens `[B, L, D]` after the final norm, cls dropped (inference mode). */
export const patchTokens = (m: FrozenEncoder, images: tf.Tensor4D): tf.Tensor3D =>
  tf.tidy(() => {
    const t = encoder(m.params, m.config, images, m.pos, undefined, { training: false });
    const [b, n, d] = t.shape;
    return tf.slice(t, [0, 1, 0], [b, n - 1, d]) as tf.Tensor3D;
  });

/** The training split's patch tokens and labels, on the host. */
export interface SegFeatureSet {
  /** Images N. */
  readonly count: number;
  /** Patches per image L (a `side x side` grid). */
  readonly patches: number;
  /** Token width D. */
  readonly dim: number;
  /** Input side S in pixels. */
  readonly imageSize: number;
  /** `[N, L, D]`. */
  readonly tokens: Float32Array;
  /** `[N, S, S]`, {@link IGNORE_INDEX} unlabelled. */
  readonly labels: Uint8Array;
}

/** What an error about an encoder's numbers calls it. */
const nameOf = (m: FrozenEncoder, modelName?: string): string =>
  modelName ?? ("origin" in m && typeof m.origin === "string" ? m.origin : "the encoder");

/**
 * Encodes every batch and keeps the patch tokens and the input-size labels. Stops at the first batch whose
 * tokens hold a NaN or an infinity, naming the model (`modelName`, else the encoder's origin).
 */
export const extractSegFeatures = async (
  m: FrozenEncoder,
  batches: AsyncIterable<SegBatch>,
  o: { readonly modelName?: string; readonly onBatch?: (done: number) => void } = {},
): Promise<SegFeatureSet> => {
  const S = m.config.imageSize;
  let d = m.config.dim;
  const tokens: Float32Array[] = [], labels: Uint8Array[] = [];
  let count = 0, patches = 0;
  for await (const b of batches) {
    const images = tf.tensor4d(b.images, [b.size, S, S, 3]);
    const t = patchTokens(m, images);
    images.dispose();
    patches = t.shape[1];
    d = t.shape[2];
    const data = await t.data() as Float32Array;
    t.dispose();
    assertFinite(
      data,
      `the patch tokens of training images ${count}..${count + b.size - 1}`,
      nameOf(m, o.modelName),
    );
    tokens.push(data);
    labels.push(b.labels);
    count += b.size;
    o.onBatch?.(count);
  }
  const cat = <T extends Float32Array | Uint8Array>(parts: T[], make: (n: number) => T): T => {
    const out = make(parts.reduce((a, p) => a + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  };
  return {
    count,
    patches,
    dim: d,
    imageSize: S,
    tokens: cat(tokens, (n) => new Float32Array(n)),
    labels: cat(labels, (n) => new Uint8Array(n)),
  };
};

/** Per-channel mean and `sqrt(var + 1e-6)` over every token of the set (float64 sums). */
export const featureNorm = (set: SegFeatureSet): FeatureNorm => {
  const d = set.dim, n = set.count * set.patches;
  const sum = new Float64Array(d), sq = new Float64Array(d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) {
      const v = set.tokens[i * d + j];
      sum[j] += v;
      sq[j] += v * v;
    }
  }
  const mean = Float32Array.from(sum, (s) => s / Math.max(1, n));
  const std = Float32Array.from(
    sq,
    (s, j) => Math.sqrt(Math.max(0, s / Math.max(1, n) - mean[j] ** 2) + 1e-6),
  );
  return { mean: tf.tensor1d(mean), std: tf.tensor1d(std) };
};

/** Settings of the head's training. */
export interface SegTrainOptions {
  /** Classes C (labels 0..C-1; 255 ignored). */
  readonly numClasses: number;
  /** Passes over the training set. */
  readonly epochs: number;
  /** Images per step (the last incomplete batch of an epoch is dropped, unless it is the only one). */
  readonly batchSize: number;
  /** Peak lr. */
  readonly lr: number;
  /** Final lr of the cosine. */
  readonly minLr?: number;
  /** Linear warmup from 0, in epochs. */
  readonly warmupEpochs?: number;
  /** AdamW decoupled weight decay of the head's weight (the bias does not decay). */
  readonly weightDecay?: number;
  /** Head init and the order of every epoch. */
  readonly key: Key;
  /** Called after every step with the step's loss. */
  readonly onStep?: (s: { step: number; total: number; loss: number; lr: number }) => void;
  /** Names the model in the error raised on a non-finite loss. */
  readonly modelName?: string;
}

/** A trained head. */
export interface TrainedSegHead {
  /** The head's weights. */
  readonly head: SegHead;
  /** The standardisation of its input, from the training tokens. */
  readonly norm: FeatureNorm;
  /** Optimizer steps taken. */
  readonly steps: number;
  /** Mean training loss of the last epoch. */
  readonly lastLoss: number;
}

/** Trains the linear head on cached tokens (module doc). */
export const trainSegHead = async (set: SegFeatureSet, o: SegTrainOptions): Promise<TrainedSegHead> => {
  if (set.count === 0) throw new Error("trainSegHead: no training images");
  const { dim: d, patches: L, imageSize: S } = set;
  const C = o.numClasses;
  const B = Math.min(o.batchSize, set.count);
  const perEpoch = Math.max(1, Math.floor(set.count / B));
  const total = perEpoch * o.epochs;
  const [kInit, kOrder] = split(o.key);
  const norm = featureNorm(set);
  const lr = cosineSchedule({
    base: o.lr,
    final: o.minLr ?? 0,
    totalSteps: total,
    warmupSteps: Math.min(total, Math.round((o.warmupEpochs ?? 0) * perEpoch)),
  });
  const opt = fusedAdamw({ lr, weightDecay: o.weightDecay ?? 0 });
  let ts = initTrainState(opt, segHeadInit(kInit, d, C), kOrder);
  const tokens = new Float32Array(B * L * d);
  const labels = new Int32Array(B * S * S);
  let epochLoss = 0;
  try {
    for (let epoch = 0; epoch < o.epochs; epoch++) {
      const order = permutation(foldIn(ts.key, epoch), set.count);
      epochLoss = 0;
      for (let s = 0; s < perEpoch; s++) {
        for (let i = 0; i < B; i++) {
          const j = order[s * B + i];
          tokens.set(set.tokens.subarray(j * L * d, (j + 1) * L * d), i * L * d);
          const y = set.labels.subarray(j * S * S, (j + 1) * S * S);
          for (let p = 0; p < S * S; p++) labels[i * S * S + p] = y[p];
        }
        const x = tf.tensor3d(tokens, [B, L, d]);
        const { loss, grads } = valueAndGrad((p: SegHead) => {
          const up = upsampleBilinear(segLogits(p, norm, x), S, S);
          return { loss: pixelCrossEntropy(tf.reshape(up, [B * S * S, C]) as tf.Tensor2D, labels), aux: {} };
        })(ts.params);
        x.dispose();
        const value = (await loss.data())[0];
        loss.dispose();
        if (!Number.isFinite(value)) {
          disposeTree(grads);
          throw new Error(
            `the segmentation head's loss is ${value} at step ${ts.step + 1} (${
              o.modelName ?? "the encoder"
            }'s features are finite): lower --lr`,
          );
        }
        const next = applyGradients(opt, ts, grads);
        disposeTrainState(ts);
        ts = next;
        epochLoss += value;
        o.onStep?.({ step: ts.step, total, loss: value, lr: lr(ts.step - 1) });
      }
    }
  } catch (e) {
    disposeTrainState(ts);
    tf.dispose([norm.mean, norm.std]);
    throw e;
  }
  disposeState(ts.opt);
  return { head: ts.params, norm, steps: ts.step, lastLoss: epochLoss / perEpoch };
};

/** Predicted classes `[H * W]` of one image's patch-grid logits `[1, h, w, C]`, upsampled in row chunks. */
export const predictPixels = async (logits: tf.Tensor4D, H: number, W: number): Promise<Int32Array> => {
  const C = logits.shape[3];
  const out = new Int32Array(H * W);
  const chunk = Math.max(1, Math.floor(2 ** 22 / (W * C)));
  for (let r0 = 0; r0 < H; r0 += chunk) {
    const r1 = Math.min(H, r0 + chunk);
    const p = tf.tidy(() => tf.argMax(upsampleBilinear(logits, H, W, [r0, r1]), 3));
    out.set(await p.data() as Int32Array, r0 * W);
    p.dispose();
  }
  return out;
};

/** Options of {@link evaluateSegHead}. */
export interface SegEvalOptions {
  /** Classes C. */
  readonly numClasses: number;
  /** Names the model in the error raised on non-finite tokens (default: the encoder's origin). */
  readonly modelName?: string;
  /** Called after every batch with the images scored so far. */
  readonly onBatch?: (done: number) => void;
}

/**
 * Scores a trained head on a stream of held-out batches: encoder, head, logits upsampled to each label
 * map's own size, argmax, mmseg's counts. Non-finite tokens stop it, naming the model.
 */
export const evaluateSegHead = async (
  m: FrozenEncoder,
  trained: { readonly head: SegHead; readonly norm: FeatureNorm },
  batches: AsyncIterable<SegBatch>,
  o: SegEvalOptions,
): Promise<SegScores & { readonly images: number }> => {
  const S = m.config.imageSize;
  const counts = segCounts(o.numClasses);
  let done = 0;
  for await (const b of batches) {
    const images = tf.tensor4d(b.images, [b.size, S, S, 3]);
    const t = patchTokens(m, images);
    images.dispose();
    const finite = await t.data();
    assertFinite(
      finite,
      `the patch tokens of held-out images ${done}..${done + b.size - 1}`,
      nameOf(m, o.modelName),
    );
    const logits = segLogits(trained.head, trained.norm, t);
    t.dispose();
    try {
      for (let i = 0; i < b.size; i++) {
        const [, h, w, c] = logits.shape;
        const one = tf.slice(logits, [i, 0, 0, 0], [1, h, w, c]);
        const map = b.full[i];
        const pred = await predictPixels(one, map.height, map.width);
        one.dispose();
        try {
          addSegCounts(counts, pred, map.labels, IGNORE_INDEX);
        } catch (e) {
          throw new Error(`${b.names[i]}: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
    } finally {
      logits.dispose();
    }
    done += b.size;
    o.onBatch?.(done);
  }
  return { ...segScores(counts), images: done };
};

/** Options of {@link runSegmentation}. */
export interface SegRunOptions extends Omit<SegTrainOptions, "modelName"> {
  /** Where the images and labels come from. */
  readonly source: SegSource;
  /** Images per encoder forward pass (default 64). */
  readonly extractBatch?: number;
  /** Use at most this many training images (default: all). */
  readonly maxTrain?: number;
  /** Score at most this many held-out images (default: all). */
  readonly maxVal?: number;
  /** Names the model in errors (default: the encoder's origin). */
  readonly modelName?: string;
  /** Progress lines ("features: ...", "val: ..."). */
  readonly log?: (line: string) => void;
}

/** What {@link runSegmentation} measured. */
export interface SegRunResult {
  /** Held-out scores (percent). */
  readonly scores: SegScores;
  /** Training images used. */
  readonly train: number;
  /** Held-out images scored. */
  readonly val: number;
  /** Optimizer steps of the head. */
  readonly steps: number;
  /** Mean training loss of the head's last epoch. */
  readonly lastLoss: number;
  /** Seconds spent encoding the training set, training the head, scoring the held-out set. */
  readonly seconds: { readonly features: number; readonly train: number; readonly val: number };
}

/** Throws naming the first training label that is neither a class of `0..C-1` nor the ignore index. */
const checkTrainLabels = (set: SegFeatureSet, C: number): void => {
  const per = set.imageSize * set.imageSize;
  for (let i = 0; i < set.labels.length; i++) {
    const y = set.labels[i];
    if (y !== IGNORE_INDEX && y >= C) {
      throw new Error(
        `training image ${Math.floor(i / per)} has label ${y}, outside the ${C} classes 0..${
          C - 1
        } and not ` +
          `the ignore index ${IGNORE_INDEX}: pass --num-classes ${y + 1} or more, or check the label maps`,
      );
    }
  }
};

/**
 * The whole evaluation: encode the training split, train the head, score the held-out split (module doc).
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { key } from "../core/random.ts";
 * import { disposeEncoder, loadEncoder } from "./load.ts";
 * import { runSegmentation } from "./segment.ts";
 * await tf.setBackend("cpu");
 * const m = await loadEncoder("random", { imageSize: 16, patchSize: 8 });
 * const r = await runSegmentation(m, {
 *   source: { kind: "synthetic-seg", size: 8 }, numClasses: 5, epochs: 1, batchSize: 4, lr: 1e-3, key: key(0),
 * });
 * if (r.train !== 8 || r.val !== 2 || !(r.scores.mIoU >= 0)) throw new Error(JSON.stringify(r));
 * disposeEncoder(m);
 * ```
 */
export const runSegmentation = async (m: FrozenEncoder, o: SegRunOptions): Promise<SegRunResult> => {
  const log = o.log ?? (() => {});
  const S = m.config.imageSize;
  const batchSize = o.extractBatch ?? 64;
  const t0 = performance.now();
  const set = await extractSegFeatures(
    m,
    segBatches(o.source, "train", { imageSize: S, batchSize, limit: o.maxTrain }),
    { modelName: o.modelName },
  );
  const t1 = performance.now();
  log(
    `features: ${set.count} training images, ${set.patches} patches x ${set.dim}, ${
      ((t1 - t0) / 1000).toFixed(1)
    } s`,
  );
  checkTrainLabels(set, o.numClasses);
  const trained = await trainSegHead(set, o);
  const t2 = performance.now();
  try {
    const scores = await evaluateSegHead(
      m,
      trained,
      segBatches(o.source, "val", { imageSize: S, batchSize, limit: o.maxVal }),
      { numClasses: o.numClasses, modelName: o.modelName },
    );
    const t3 = performance.now();
    const { images, ...rest } = scores;
    return {
      scores: rest,
      train: set.count,
      val: images,
      steps: trained.steps,
      lastLoss: trained.lastLoss,
      seconds: { features: (t1 - t0) / 1000, train: (t2 - t1) / 1000, val: (t3 - t2) / 1000 },
    };
  } finally {
    disposeSegHead(trained);
  }
};
