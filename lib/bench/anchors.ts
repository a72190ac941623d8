/**
 * The reference figures a full-step benchmark is compared with: PyTorch with the official CAE v2 model
 * code (BENCHMARKS.md, "PyTorch reference figures") and the targets for this toolkit. Keyed by
 * where the benchmark ran: "h200" (WebGPU on the H200) or "cpu2" (the 2-core CPU machines).
 *
 * @module
 */
import type { PresetName } from "../models/presets.ts";

/** Where a figure was measured. */
export type Machine = "h200" | "cpu2";

/** One reference row: PyTorch fp32 throughput and this project's target at a preset and batch. */
export interface Anchor {
  readonly machine: Machine;
  readonly model: PresetName;
  readonly batch: number;
  /** PyTorch images/s (H200: fp32, TF32 off; CPU: torch 1.13, OpenBLAS, 2 threads). */
  readonly pytorchImagesPerSec: number;
  /** PyTorch peak GPU memory in bytes, where BENCHMARKS.md gives it. */
  readonly pytorchPeakBytes?: number;
  /** The target for this toolkit, images/s (absent where the issue sets none). */
  readonly targetImagesPerSec?: number;
}

const GiB = 2 ** 30;

/** Every PyTorch row of BENCHMARKS.md (teacher: CLIP ViT-B/16 in all). */
export const anchors: readonly Anchor[] = [
  {
    machine: "h200",
    model: "tiny",
    batch: 256,
    pytorchImagesPerSec: 800,
    pytorchPeakBytes: 12.4 * GiB,
    targetImagesPerSec: 400,
  },
  {
    machine: "h200",
    model: "base",
    batch: 256,
    pytorchImagesPerSec: 375,
    pytorchPeakBytes: 29.3 * GiB,
    targetImagesPerSec: 190,
  },
  { machine: "h200", model: "base", batch: 32, pytorchImagesPerSec: 290, pytorchPeakBytes: 5.5 * GiB },
  { machine: "cpu2", model: "tiny", batch: 8, pytorchImagesPerSec: 1.96, targetImagesPerSec: 0.98 },
];

/** The anchor for a machine, preset and batch, if BENCHMARKS.md has one. */
export const anchorFor = (machine: Machine, model: PresetName, batch: number): Anchor | undefined =>
  anchors.find((a) => a.machine === machine && a.model === model && a.batch === batch);
