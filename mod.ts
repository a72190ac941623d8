/**
 * CAE v2 for Deno: pretrain Vision Transformers with CAE v2 (Context Autoencoder with CLIP latent
 * alignment, Zhang et al., TMLR 2023) on TensorFlow.js, pure-functionally: parameter records with
 * `init`/`apply`, optimizers as gradient transformations, the training step as a reducer.
 *
 * This module only re-exports; every function is documented where it is defined.
 *
 * @example
 * ```ts
 * import { adamw, caev2Buffers, caev2Init, clipInit, clipMicro, key, split, studentPreset, trainStep } from "./mod.ts";
 * import { tf } from "./lib/deps.ts";
 * await tf.setBackend("cpu");
 * const teacher = clipMicro(32, 8);
 * const student = studentPreset("micro", { imageSize: 32, patchSize: 8, outDim: teacher.outDim });
 * const [k1, k2, k3] = split(key(0), 3);
 * const optimizer = adamw({ lr: 1e-3, clip: 3 });
 * const params = caev2Init(k1, student);
 * const step = trainStep({ student, teacher, teacherParams: clipInit(k2, teacher), buffers: caev2Buffers(student), optimizer });
 * const mask = new Uint8Array(2 * 16).map((_, i) => (i % 16 < 6 ? 1 : 0));
 * const images = tf.randomNormal([2, 32, 32, 3]) as tf.Tensor4D;
 * const { state, metrics } = step({ params, opt: optimizer.init(params), step: 0, key: k3 }, [
 *   { studentImages: images, teacherImages: images, mask },
 * ]);
 * if (state.step !== 1 || metrics.shape[0] !== 4) throw new Error("unexpected");
 * ```
 *
 * @module
 */

// Core: parameter records, PRNG keys, backends, safetensors.
export {
  countParams,
  disposeTree,
  type Flat,
  flatten,
  mapTree,
  type Params,
  unflatten,
  zipTree,
} from "./lib/core/tree.ts";
export { bits, foldIn, type Key, key, permutation, seedOf, split, uniform } from "./lib/core/random.ts";
export {
  type BackendChoice,
  type BackendInfo,
  type BackendName,
  backendNames,
  describeBackend,
  selectBackend,
} from "./lib/core/backend.ts";
export { registerDeviceGradients } from "./lib/core/gradients.ts";
export { gemmReady, gemmThreads, setGemmThreads } from "./lib/core/kernels/gemm_pool.ts";
export {
  type HostTensor,
  loadSafetensors,
  readSafetensors,
  SafetensorsError,
  toTensor,
  writeSafetensors,
} from "./lib/core/safetensors.ts";

// Models: the CAE v2 student, the CLIP teacher, presets and the official names.
export type { CaeV2Config, ClipConfig } from "./lib/models/config.ts";
export {
  caev2Apply,
  caev2Buffers,
  caev2Init,
  type CaeV2Outputs,
  type CaeV2Params,
} from "./lib/models/caev2.ts";
export { encoder } from "./lib/models/encoder.ts";
export { clipApply, clipInit, type ClipParams } from "./lib/models/clip.ts";
export { loadClip } from "./lib/models/clip_load.ts";
export {
  clipB16,
  clipMicro,
  defaultNumMasked,
  type PresetName,
  presetNames,
  studentPreset,
} from "./lib/models/presets.ts";
export { clipOpenAiName, fromOfficial, studentOfficialName, toOfficial } from "./lib/models/names.ts";

// Objectives.
export { type AlignmentLosses, alignmentTargets, latentAlignment } from "./lib/objectives/alignment.ts";

// Optimizers (optax-style gradient transformations) and schedules.
export { chain, disposeState, type GradientTransformation, identity } from "./lib/optim/transform.ts";
export { adam, adamw, type AdamWOptions, type AdamWState } from "./lib/optim/adamw.ts";
export { type AdamWImpl, fusedAdamw } from "./lib/optim/fused_adamw.ts";
export { scaleByAdam } from "./lib/optim/adam.ts";
export { clipByGlobalNorm, globalNorm } from "./lib/optim/clip.ts";
export { addDecayedWeights, officialDecayMask } from "./lib/optim/decay.ts";
export { scaleByLearningRate } from "./lib/optim/lr.ts";
export { constantSchedule, cosineSchedule, type Schedule } from "./lib/optim/schedule.ts";
export { applyUpdates, optimizerStep } from "./lib/optim/apply.ts";
export {
  applyGradients,
  disposeTrainState,
  initTrainState,
  type TrainState,
} from "./lib/optim/train_state.ts";
export { type FlatState, flattenState, type StateJson, unflattenState } from "./lib/optim/state_tree.ts";

// Training: the step reducer, gradients, the pretraining run, configs, checkpoints.
export { type PretrainState, readMetrics, type StepBatch, trainStep } from "./lib/train/step.ts";
export type { BatchRows } from "./lib/nn/drop_path.ts";
export { allReduceParts, type Collective, single } from "./lib/dist/collective.ts";
export { launchedByMpi, mpiCollective } from "./lib/dist/mpi.ts";
export { broadcastParams, dataParallelStep, rowsOf } from "./lib/train/data_parallel.ts";
export { customOp, gradients, recomputed, valueAndGrad } from "./lib/core/autodiff.ts";
export { type MemoryMark, peakMemory, resetPeakMemory } from "./lib/core/memory.ts";
export { capGpuPool, gpuPoolBytes, resetGpuPeak } from "./lib/core/gpu_pool.ts";
export {
  type BackendLimits,
  backendLimits,
  checkFits,
  type Footprint,
  stepFootprint,
} from "./lib/train/footprint.ts";
export { formatSummary, pretrain, type PretrainHooks } from "./lib/train/pretrain.ts";
export type { Evaluator, EvaluatorInput } from "./lib/train/evaluator.ts";
export {
  defaultPretrainConfig,
  type PretrainConfig,
  pretrainFields,
  resolvePretrainConfig,
} from "./lib/config/pretrain.ts";
export { latestCheckpoint, loadCheckpoint, saveCheckpoint } from "./lib/train/checkpoint.ts";

// Data: sources, masking, the loader.
export { type DataSource, parseDataSource } from "./data/source.ts";
export { evalLoader, pretrainLoader } from "./data/loader.ts";
export { blockMasking, randomMasking } from "./data/masking.ts";
export { syntheticImage } from "./data/synthetic.ts";
export { type Batch, type HostBatch, toBatch } from "./data/batch.ts";
// Images: decoding (JPEG, PNG) to 8-bit RGB, and the official evaluation preprocessing (resize the shorter
// side to size / 0.875 bicubic, centre crop, ImageNet mean/std) that every evaluation and embedImages use.
export { decodeImage, readImage } from "./data/decode.ts";
// (Their image type, data/image.ts RgbImage `{ width, height, data }`, is what readImage returns; it is not
// re-exported here until its fields carry the JSDoc that `deno doc --lint` asks of public types.)
export { rgbImage } from "./data/image.ts";
export { evalPixels, evalTransform, IMAGENET_MEAN, IMAGENET_STD } from "./data/augment.ts";

// Evaluation: frozen-encoder features, linear probe (LARS), k-NN, fine-tuning; student save/load.
export { disposeEncoder, type EncoderHints, loadEncoder, randomEncoder } from "./lib/eval/load.ts";
export type { EncoderModel, FrozenEncoder } from "./lib/models/encoder_model.ts";
export { type FeatureSet, type Pooling, splitFeatures } from "./lib/eval/features.ts";
// The encoder as a feature extractor: images (a folder, files, pixels) -> features [N, D].
export { type Embeddings, embedImages, type EmbedOptions, listImages } from "./lib/eval/embed.ts";
export { type Probe, type ProbeOptions, type ProbeResult, trainProbe } from "./lib/eval/probe.ts";
export type { ClassifierParams, FinetuneSettings } from "./lib/eval/finetune.ts";
export { knnClassify, type KnnOptions } from "./lib/eval/knn.ts";
export { knnEvaluator, knnMonitor, pretrainEvaluators } from "./lib/eval/monitor.ts";
export { type FinetuneResult, type FinetuneRunOptions, runFinetune } from "./lib/eval/finetune_run.ts";
export type { Accuracy, FitSummary } from "./lib/eval/heads.ts";
export type { BatchNormState } from "./lib/nn/batchnorm.ts";
// Semantic segmentation on frozen features (deno task segment): linear head on patch tokens, mmseg's mIoU.
export {
  runSegmentation,
  type SegRunOptions,
  type SegRunResult,
  type SegTrainOptions,
} from "./lib/eval/segment.ts";
export {
  addSegCounts,
  type SegCounts,
  segCounts,
  type SegScores,
  segScores,
} from "./lib/eval/seg_metrics.ts";
export { type LabelMap, parseSegSource, readLabelPng, type SegSource } from "./data/segmentation.ts";
export { lars, scaleByLars } from "./lib/optim/lars.ts";
export { loadStudent, type Naming, saveStudent } from "./lib/models/student_io.ts";
export { PrecisionError, type RuntimeOptions, startRuntime } from "./lib/core/runtime.ts";
// Measured matmul tiles (`deno task bench --tune`, docs/tuning.md): startRuntime installs the adapter's.
export { installTileTable, TILE_TABLE_ENV } from "./lib/core/kernels/tile_table.ts";
// Mixed precision (`--precision f16`): the setting, its checks, and the dynamic loss scale.
export {
  type Precision,
  precision,
  precisionNames,
  precisionProblem,
  setPrecision,
} from "./lib/core/precision.ts";
export {
  DEFAULT_LOSS_SCALE,
  initialLossScale,
  type LossScale,
  type LossScaleConfig,
  nextLossScale,
} from "./lib/optim/loss_scale.ts";

// Parity with the official implementation.
export { formatReport, runParity } from "./lib/parity/check.ts";

// Scripted experiments: named grids of runs, evaluation, report and plots (SVG, PNG).
export { type ExperimentIO, type ExperimentSummary, runExperiment } from "./lib/experiment/runner.ts";
export { type ExperimentOptions, planExperiment, type PlannedRun } from "./lib/experiment/plan.ts";
export type {
  BaselineRecord,
  EvalRecord,
  ExperimentResults,
  FinalLosses,
  RunRecord,
} from "./lib/experiment/results.ts";
export {
  alignmentAblation,
  type ConfigOverrides,
  type Experiment,
  experiments,
  type ExperimentSize,
  findExperiment,
  maskRatio,
  type Plain,
  planRuns,
  type RunSpec,
  type Setting,
  type SettingValue,
} from "./lib/experiment/registry.ts";
export {
  type EncoderSource,
  type EvalResult,
  type EvalSpec,
  evaluateEncoder,
  type KnnSpec,
  type ProbeSpec,
  type Scores,
} from "./lib/experiment/evaluate.ts";
export {
  type Bar,
  barChart,
  type BarChartSpec,
  type BarSeries,
  lineChart,
  type LineChartSpec,
  type LineSeries,
} from "./lib/plot/svg.ts";
export { type PngOptions, svgToPng } from "./lib/plot/png.ts";
export { collectVersions, type GitInfo, gitInfo, type Versions } from "./lib/experiment/versions.ts";

// Types that the public signatures above mention.
export type { Scalar, Tensor, Tensor1D, Tensor2D, Tensor3D, Tensor4D } from "./lib/core/tree.ts";
export type { LinearParams } from "./lib/nn/linear.ts";
export type { LayerNormParams } from "./lib/nn/norm.ts";
export type { MlpParams } from "./lib/nn/mlp.ts";
export type { AttentionParams } from "./lib/nn/attention.ts";
export type { CrossAttentionParams } from "./lib/nn/cross_attention.ts";
export type { BlockParams, EncoderParams } from "./lib/models/encoder.ts";
export type { RegressorBlockParams, RegressorParams } from "./lib/models/regressor.ts";
export type { ClipBlockParams } from "./lib/models/clip.ts";
export type { MaskIndex } from "./lib/models/mask_index.ts";
export type { AdamState } from "./lib/optim/adam.ts";
export type { CountState, EmptyState } from "./lib/optim/transform.ts";
export type { DecayMask } from "./lib/optim/decay.ts";
export type { DataPosition } from "./data/batch.ts";

// Logging and comparing runs: TensorBoard event files (no dependency) and `deno task compare`.
export {
  type EventWriter,
  type EventWriterOptions,
  openEventWriter,
  tolerantEventWriter,
} from "./lib/core/tensorboard.ts";
export {
  compareChart,
  type CompareCommand,
  type ComparedRun,
  type CompareOptions,
  type CompareResult,
  compareRuns,
  compareTable,
  parseCompareArgs,
  readRuns,
} from "./lib/experiment/compare.ts";
export type { MetricsRecord, MetricValue } from "./lib/train/metrics.ts";
// Exporting weights (`deno task export`), the names users type, and what a run resolved.
export { encoderTimmName, encoderToOfficial, encoderToTimm } from "./lib/models/names.ts";
export { maskedOfRatio } from "./lib/config/pretrain.ts";
export { lrRule, peakLr } from "./lib/train/lr_policy.ts";
export { type ResolvedRun, resolvedRun, type RunFacts } from "./lib/train/rundir.ts";
