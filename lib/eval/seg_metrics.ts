/**
 * Segmentation scores as mmsegmentation computes them (`mmseg/evaluation/metrics/iou_metric.py`,
 * `intersect_and_union` and `total_area_to_metrics`): over the whole held-out set, per class, the pixel
 * counts of intersection, prediction and label are summed, pixels whose label is the ignore index (255)
 * left out of all three; then per class `IoU = intersection / union` with
 * `union = prediction + label - intersection`, and `Acc = intersection / label`. A class whose union is 0
 * (absent from both the labels and the predictions) has IoU NaN and is left out of the mean (`np.nanmean`);
 * a class predicted but never labelled has IoU 0 and counts. mIoU is that mean, mAcc the mean of the
 * per-class accuracies over the classes that occur in the labels, aAcc the fraction of labelled pixels
 * predicted right.
 *
 * @module
 */

/** Per-class pixel counts summed over images (float64: a large set overflows nothing). */
export interface SegCounts {
  /** Classes C. */
  readonly numClasses: number;
  /** `[C]`: pixels predicted as the class whose label is the class. */
  readonly intersect: Float64Array;
  /** `[C]`: labelled pixels predicted as the class. */
  readonly predArea: Float64Array;
  /** `[C]`: pixels labelled as the class. */
  readonly labelArea: Float64Array;
}

/** Empty counts for `numClasses` classes. */
export const segCounts = (numClasses: number): SegCounts => ({
  numClasses,
  intersect: new Float64Array(numClasses),
  predArea: new Float64Array(numClasses),
  labelArea: new Float64Array(numClasses),
});

/**
 * Adds one image (or any set of pixels): `pred` and `label` of the same length, `label` == `ignoreIndex`
 * skipped. A label outside `0..C-1` that is not the ignore index is an error (a wrong `--num-classes` or
 * an unreduced label map), named with its position. Predictions must lie in `0..C-1`.
 */
export const addSegCounts = (
  counts: SegCounts,
  pred: ArrayLike<number>,
  label: ArrayLike<number>,
  ignoreIndex = 255,
): void => {
  if (pred.length !== label.length) {
    throw new Error(`addSegCounts: ${pred.length} predictions for ${label.length} labels`);
  }
  const C = counts.numClasses;
  for (let i = 0; i < label.length; i++) {
    const y = label[i];
    if (y === ignoreIndex) continue;
    const p = pred[i];
    if (!(y >= 0 && y < C)) {
      throw new Error(
        `label ${y} at pixel ${i} is outside the ${C} classes 0..${C - 1} and is not the ignore index ` +
          `${ignoreIndex} (wrong --num-classes, or a label map whose zero was not reduced?)`,
      );
    }
    if (!(p >= 0 && p < C)) {
      throw new Error(`addSegCounts: prediction ${p} at pixel ${i} outside 0..${C - 1}`);
    }
    counts.labelArea[y]++;
    counts.predArea[p]++;
    if (p === y) counts.intersect[y]++;
  }
};

/** Scores from {@link SegCounts}, in percent as mmseg prints them; `null` for a class left out (NaN). */
export interface SegScores {
  /** Mean IoU over the classes present in the labels or the predictions. */
  readonly mIoU: number;
  /** Mean per-class accuracy over the classes present in the labels. */
  readonly mAcc: number;
  /** Pixel accuracy over all labelled pixels. */
  readonly aAcc: number;
  /** `[C]` IoU per class, null where the class is absent from labels and predictions. */
  readonly iou: readonly (number | null)[];
  /** `[C]` accuracy per class, null where the class is absent from the labels. */
  readonly acc: readonly (number | null)[];
  /** Labelled pixels scored. */
  readonly pixels: number;
}

const nanMean = (xs: readonly (number | null)[]): number => {
  const v = xs.filter((x): x is number => x !== null);
  return v.length === 0 ? NaN : v.reduce((a, b) => a + b, 0) / v.length;
};

/**
 * mIoU, mAcc, aAcc and the per-class figures (module doc).
 *
 * @example
 * ```ts
 * import { addSegCounts, segCounts, segScores } from "./seg_metrics.ts";
 * const c = segCounts(3);
 * // Pixel 0: label 0, hit; pixel 1: label 1, hit; pixel 2: label 1 predicted 0; pixel 3 ignored.
 * addSegCounts(c, [0, 1, 0, 2], [0, 1, 1, 255]);
 * const s = segScores(c);
 * // IoU0 = 1 / (2 + 1 - 1), IoU1 = 1 / (1 + 2 - 1); class 2 (absent, its one prediction ignored) left out.
 * if (s.mIoU !== 50 || s.iou[2] !== null || Math.abs(s.aAcc - 200 / 3) > 1e-9) throw new Error(`${s.mIoU}`);
 * ```
 */
export const segScores = (c: SegCounts): SegScores => {
  const iou: (number | null)[] = [], acc: (number | null)[] = [];
  let hits = 0, pixels = 0;
  for (let k = 0; k < c.numClasses; k++) {
    const union = c.predArea[k] + c.labelArea[k] - c.intersect[k];
    iou.push(union > 0 ? (100 * c.intersect[k]) / union : null);
    acc.push(c.labelArea[k] > 0 ? (100 * c.intersect[k]) / c.labelArea[k] : null);
    hits += c.intersect[k];
    pixels += c.labelArea[k];
  }
  return {
    mIoU: nanMean(iou),
    mAcc: nanMean(acc),
    aAcc: pixels > 0 ? (100 * hits) / pixels : NaN,
    iou,
    acc,
    pixels,
  };
};
