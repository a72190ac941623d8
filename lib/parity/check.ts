/**
 * Runs the project on a parity fixture in float32 and measures, group by group, how far it lands from the
 * official float64 numbers: teacher features, targets, predictions, the loss parts, every gradient group
 * and the optimizer step. Error of a tensor: ||x - ref||_2 / ||ref||_2 in float64 (fixture README;
 * lib/core/compare.ts `relativeError`);
 * a group's error is its worst tensor.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { flatten, mapTree } from "../core/tree.ts";
import { relativeError } from "../core/compare.ts";
import { caev2Apply, caev2Buffers, type CaeV2Params } from "../models/caev2.ts";
import { clipApply } from "../models/clip.ts";
import { studentOfficialName, toOfficial } from "../models/names.ts";
import { alignmentTargets, latentAlignment } from "../objectives/alignment.ts";
import { valueAndGrad } from "../core/autodiff.ts";
import { key } from "../core/random.ts";
import { applyGradients, disposeTrainState, initTrainState } from "../optim/train_state.ts";
import { globalNorm } from "../optim/clip.ts";
import { disposeState } from "../optim/transform.ts";
import { disposeFixture, type Fixture, fixtureAdamw, loadFixture } from "./fixture.ts";
import { type Precision, precision } from "../core/precision.ts";

/** Default tolerance: float32 lands well under it on the fixtures (fixture README). */
export const PARITY_TOLERANCE = 1e-4;

/**
 * `--precision f16`'s tolerance (relative, per group; issue 13 allows at most 2e-2): f16 operands carry 11
 * significant bits, so a product's relative error is about 2^-11 = 4.9e-4 per operand, and the errors
 * compound through the depth of the network and its backward pass.
 */
export const PARITY_TOLERANCE_F16 = 2e-2;

/** f16's tolerance for the tensors whose true gradient is zero (||g|| / grad_norm; f32: 1e-5). */
const ZERO_GRADIENT_F16 = 1e-4;

/** The loss scale of the f16 check: the initial dynamic scale a training run starts with. */
const PARITY_LOSS_SCALE = 2 ** 16;

/** One group's result. */
export interface GroupResult {
  readonly group: string;
  readonly worst: number;
  readonly at: string;
  readonly tensors: number;
  /** "relative" (||x-ref||/||ref||) or "absolute" (||g|| / grad_norm for zero-gradient tensors). */
  readonly kind: "relative" | "absolute";
  readonly tolerance: number;
  readonly skipped?: string;
}

/** A whole fixture's result. */
export interface ParityReport {
  readonly file: string;
  readonly backend: string;
  readonly groups: readonly GroupResult[];
  readonly pass: boolean;
  readonly worst: number;
  readonly worstAt: string;
  /** The precision checked ("f32" unless asked). */
  readonly precision: Precision;
  /** The relative tolerance the groups were held to. */
  readonly tolerance: number;
}

const norm = (x: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
};

class Groups {
  readonly results: GroupResult[] = [];
  private acc = new Map<
    string,
    { worst: number; at: string; n: number; kind: "relative" | "absolute"; tol: number }
  >();
  add(
    group: string,
    name: string,
    err: number,
    kind: "relative" | "absolute" = "relative",
    tol = PARITY_TOLERANCE,
  ) {
    const g = this.acc.get(group) ?? { worst: -1, at: "", n: 0, kind, tol };
    g.n++;
    // NaN counts as the worst possible.
    if (!(err <= g.worst) || Number.isNaN(err)) {
      if (Number.isNaN(err) || err > g.worst) (g.worst = Number.isNaN(err) ? Infinity : err), (g.at = name);
    }
    this.acc.set(group, g);
  }
  skip(group: string, why: string, tol: number) {
    this.acc.set(group, { worst: 0, at: why, n: 0, kind: "relative", tol });
  }
  done(): GroupResult[] {
    return [...this.acc.entries()].map(([group, g]) => ({
      group,
      worst: g.worst,
      at: g.n === 0 ? "" : g.at,
      tensors: g.n,
      kind: g.kind,
      tolerance: g.tol,
      ...(g.n === 0 ? { skipped: g.at } : {}),
    }));
  }
}

const gradGroup = (official: string) => {
  const top = official.split(".")[0];
  return top === "encoder" || top === "regresser" || top === "decoder" ? `grad.${top}` : "grad.other";
};

/** Options of {@link checkFixture}. */
export interface ParityOptions {
  /** Relative tolerance per group (default {@link PARITY_TOLERANCE}, in f16 {@link PARITY_TOLERANCE_F16}). */
  readonly tolerance?: number;
  /** Check the optimizer step too (default true). */
  readonly step?: boolean;
}

/**
 * Runs every check on one fixture. Uses the current tfjs backend and precision (lib/core/precision.ts: in
 * f16 the gradients are those of the loss scaled by 2^16, as a training run's first step computes them).
 */
export const checkFixture = async (
  f: Fixture,
  opts: ParityOptions = {},
): Promise<ParityReport> => {
  // f16 runs where lib/core/runtime.ts set it (the products read lib/core/precision.ts's setting).
  const f16 = precision() === "f16";
  const tol = opts.tolerance ?? (f16 ? PARITY_TOLERANCE_F16 : PARITY_TOLERANCE);
  // As in training: f16 gradients of the scaled loss, unscaled in f32 (lib/optim/loss_scale.ts).
  const scale = f16 ? PARITY_LOSS_SCALE : 1;
  const g = new Groups();
  const cmp = async (group: string, x: tf.Tensor, refName: string) => {
    const ref = f.refs[refName];
    if (!ref) throw new Error(`${f.file}: missing reference tensor "${refName}"`);
    g.add(group, refName, relativeError(await x.data(), ref.data), "relative", tol);
  };

  const buffers = caev2Buffers(f.student);
  const teacherFeatures = clipApply(f.teacherParams, f.teacher, f.teacherImages);
  await cmp("teacher_features", teacherFeatures, "output.teacher_features");

  const lossFn = (p: CaeV2Params) => {
    const out = caev2Apply(p, f.student, buffers, f.studentImages, f.mask, { training: false });
    const targets = alignmentTargets(teacherFeatures, out.index);
    const parts = latentAlignment(out.predictions, targets, out.index);
    return {
      loss: scale === 1 ? parts.loss : tf.mul(parts.loss, scale) as tf.Scalar,
      aux: {
        predictions: out.predictions,
        targets,
        visible: parts.visible,
        masked: parts.masked,
        unscaled: parts.loss,
      },
    };
  };
  const r = valueAndGrad(lossFn)(f.studentParams);
  const { aux } = r;
  const loss = aux.unscaled;
  const grads = scale === 1 ? r.grads : mapTree(r.grads, (x) => tf.mul(x, 1 / scale));
  if (scale !== 1) tf.dispose([r.loss, ...Object.values(flatten(r.grads))]);
  await cmp("targets", aux.targets, "output.targets");
  await cmp("predictions", aux.predictions, "output.predictions");
  await cmp("loss", loss, "output.loss");
  await cmp("loss", aux.visible, "output.loss_visible");
  await cmp("loss", aux.masked, "output.loss_masked");

  // Gradients, compared under the official names and layouts.
  const gradNorm = f.refs["output.grad_norm"].data[0];
  const officialGrads = toOfficial(grads, studentOfficialName, f.student.patchSize);
  for (const [name, x] of Object.entries(officialGrads)) {
    const data = await x.data();
    if (f.zeroGradient.includes(name)) {
      g.add(
        "grad.zero_gradient",
        `grad.${name}`,
        norm(data) / gradNorm,
        "absolute",
        f16 ? ZERO_GRADIENT_F16 : 1e-5,
      );
      continue;
    }
    const ref = f.refs[`grad.${name}`];
    if (!ref) throw new Error(`${f.file}: no reference gradient "grad.${name}" for the project's "${name}"`);
    g.add(gradGroup(name), `grad.${name}`, relativeError(data, ref.data), "relative", tol);
  }
  const gn = globalNorm(grads);
  await cmp("grad_norm", gn, "output.grad_norm");
  gn.dispose();
  tf.dispose(Object.values(officialGrads));

  // One optimizer step: clip, then AdamW (the fixture's optimizer metadata).
  if (opts.step === false) g.skip("step1", "skipped (--no-step)", tol);
  else {
    const opt = fixtureAdamw(f.optimizer, f.optimizer.clip_grad);
    // The fixture's step draws nothing at random (drop path off): the key is never read.
    const state = initTrainState(opt, f.studentParams, key(0));
    // applyGradients consumes the gradients it is given: a copy, since they are compared above and freed below.
    const next = applyGradients(opt, state, mapTree(grads, (g) => tf.clone(g)));
    const official = toOfficial(next.params, studentOfficialName, f.student.patchSize);
    for (const [name, x] of Object.entries(official)) {
      // Tensors with an exactly-zero true gradient are left out (fixture README: float32 noise becomes a step).
      if (f.zeroGradient.includes(name)) continue;
      await cmp("step1", x, `step1.${name}`);
    }
    tf.dispose(Object.values(official));
    disposeState(state.opt); // its params are the fixture's
    disposeTrainState(next);
  }

  tf.dispose([
    teacherFeatures,
    ...(scale === 1 ? [r.loss] : []),
    ...Object.values(aux),
    ...Object.values(flatten(grads)),
    buffers.pos,
    buffers.regressorPos,
  ]);
  const groups = g.done();
  const active = groups.filter((r) => !r.skipped);
  const failing = active.filter((r) => !(r.worst <= r.tolerance));
  const worstGroup = active.reduce((a, b) => (b.worst / b.tolerance > a.worst / a.tolerance ? b : a));
  const blame = failing.length > 0
    ? failing.reduce((a, b) => (b.worst / b.tolerance > a.worst / a.tolerance ? b : a))
    : worstGroup;
  return {
    file: f.file,
    backend: tf.getBackend(),
    groups,
    pass: failing.length === 0,
    worst: Math.max(...active.filter((r) => r.kind === "relative").map((r) => r.worst)),
    worstAt: blame.at,
    precision: f16 ? "f16" : "f32",
    tolerance: tol,
  };
};

/** Loads, checks and disposes one fixture file. */
export const runParity = async (file: string, opts: ParityOptions = {}): Promise<ParityReport> => {
  const f = await loadFixture(file);
  try {
    return await checkFixture(f, opts);
  } finally {
    disposeFixture(f);
  }
};

/** Human report: one line per group, then `parity: PASS worst=<err>` or `parity: FAIL worst=<err> at <name>`. */
export const formatReport = (r: ParityReport): string[] => {
  const lines = [
    `fixture ${r.file} on ${r.backend}${
      r.precision === "f16" ? " in f16" : ""
    }; tolerance ${r.tolerance} relative (||x-ref||/||ref||)`,
  ];
  for (const gr of r.groups) {
    if (gr.skipped) lines.push(`  ${gr.group.padEnd(20)} ${gr.skipped}`);
    else {
      const ok = gr.worst <= gr.tolerance ? "ok  " : "FAIL";
      const how = gr.kind === "absolute" ? ` (absolute: ||g||/grad_norm <= ${gr.tolerance})` : "";
      lines.push(
        `  ${gr.group.padEnd(20)} ${ok} worst=${
          gr.worst.toExponential(2)
        } over ${gr.tensors} tensor(s), at ${gr.at}${how}`,
      );
    }
  }
  const worst = r.worst.toExponential(2);
  lines.push(r.pass ? `parity: PASS worst=${worst}` : `parity: FAIL worst=${worst} at ${r.worstAt}`);
  return lines;
};
