/**
 * Reverse-mode differentiation over tfjs's tape that frees what the backward pass no longer needs.
 *
 * tfjs-core 4.22's `engine.gradients` (what `tf.grads` and `tf.valueAndGrads` run) keeps three things
 * alive until the whole backward pass has ended: every tensor an op saved for its gradient, the
 * gradient of every intermediate tensor (the `dy`s of the walk, held in one map inside one `tidy`), and,
 * because the tape is still set while the backward ops run, the saved inputs of every backward op too.
 * So the peak of a training step is about forward activations + all their gradients + the backward's
 * own saved inputs at once. PyTorch frees each saved tensor and each gradient as soon as the node that
 * consumes it has run.
 *
 * {@link gradients} does the same walk as tfjs (same tape, same registered gradient functions, same
 * accumulation order, so bit-identical results) with three differences:
 * - the tape is closed before the backward pass, so backward ops record and save nothing;
 * - a node's saved tensors are released right after its gradient has run, and saved tensors of nodes
 *   that do not lie between the inputs and the output are released before the walk starts;
 * - the gradient of a tensor is released once its producing node has consumed it (the tape is in
 *   creation order, so every consumer of a tensor comes after its producer: when the walk reaches the
 *   producer, the tensor's gradient is complete and nothing else reads it).
 *
 * It may be called inside a custom gradient's backward function (block recomputation does): there no
 * tape is active, and this call opens and closes its own. It refuses to run under an outer tape
 * (`tf.grad` of a function that calls it), which would need the tape kept for a second derivative.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { flatten, type Params, unflatten } from "./tree.ts";

/** A tape node as tfjs-core 4.22 records it (`tape.d.ts` `TapeNode`). */
interface TapeNode {
  readonly id: number;
  readonly kernelName: string;
  readonly outputs: readonly tf.Tensor[];
  readonly inputs: Readonly<Record<string, tf.Tensor>>;
  readonly gradient?: (dys: (tf.Tensor | null)[]) => Record<string, () => tf.Tensor>;
  readonly saved?: readonly tf.Tensor[];
}

/** The engine members this module uses (tfjs-core 4.22 `engine.js`). */
interface EngineInternals {
  startTape(): void;
  endTape(): void;
  tidy<T extends tf.TensorContainer>(name: string, f: () => T): T;
  state: { activeTape: TapeNode[] | null; gradientDepth: number; kernelDepth: number };
}

const engine = (): EngineInternals => {
  const e = tf.engine() as unknown as Partial<EngineInternals>;
  if (typeof e.startTape !== "function" || typeof e.endTape !== "function" || e.state == null) {
    throw new Error(
      "lib/core/autodiff.ts: tfjs engine internals (startTape, endTape, state) not found; " +
        "it is written against @tensorflow/tfjs-core 4.22.0: update it with tfjs",
    );
  }
  return e as EngineInternals;
};

/**
 * The nodes of `tape` on a path from one of `xs` to `y`, inputs pruned to those that depend on `xs`
 * (tfjs-core `getFilteredNodesXToY`, in one pass each way).
 */
const nodesBetween = (tape: readonly TapeNode[], xs: readonly tf.Tensor[], y: tf.Tensor): TapeNode[] => {
  const fromX = new Set<number>(xs.map((x) => x.id));
  const nodeFromX = new Set<number>();
  for (const node of tape) {
    if (Object.values(node.inputs).some((t) => fromX.has(t.id))) {
      nodeFromX.add(node.id);
      node.outputs.forEach((o) => fromX.add(o.id));
    }
  }
  const toY = new Set<number>([y.id]);
  const nodeToY = new Set<number>();
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    if (node.outputs.some((o) => toY.has(o.id))) {
      nodeToY.add(node.id);
      Object.values(node.inputs).forEach((t) => toY.add(t.id));
    }
  }
  const out: TapeNode[] = [];
  for (const node of tape) {
    if (!nodeFromX.has(node.id) || !nodeToY.has(node.id)) continue;
    const inputs: Record<string, tf.Tensor> = {};
    for (const [name, t] of Object.entries(node.inputs)) if (fromX.has(t.id)) inputs[name] = t;
    out.push({ ...node, inputs });
  }
  return out;
};

/** What {@link gradients} returns: the value of `f` and one gradient per input, in order. */
export interface ValueAndGrads<T extends tf.Tensor> {
  readonly value: T;
  readonly grads: tf.Tensor[];
}

/**
 * `f(...xs)` and the gradients of `sum(f(...xs) * dy)` with respect to each of `xs` (`dy` defaults to
 * ones, the gradient of a scalar loss). Every tensor made inside `f` other than its result is released;
 * the caller owns the value and the gradients. Inputs that `f` does not use get zero gradients.
 */
export const gradients = <T extends tf.Tensor>(
  f: (...xs: tf.Tensor[]) => T,
  xs: readonly tf.Tensor[],
  dy?: tf.Tensor,
): ValueAndGrads<T> => {
  const e = engine();
  if (e.state.gradientDepth !== 0) {
    throw new Error(
      "gradients (lib/core/autodiff.ts): called while another tape records (inside tf.grad or a " +
        "second-order gradient); this walk frees the tape as it goes and cannot serve an outer one",
    );
  }
  // A tape that has stopped recording but is still set: tfjs's own backward walk in progress (a custom
  // gradient of ours called from tf.grad), or one left by a walk that threw. Put back when done.
  const outer = e.state.activeTape;
  e.state.activeTape = null;
  e.startTape();
  let y: T;
  let tape: TapeNode[];
  try {
    y = e.tidy("forward", () => f(...xs));
  } catch (err) {
    tf.dispose(
      ((e.state.activeTape as TapeNode[] | null) ?? []).flatMap((n) => n.saved ?? []) as tf.Tensor[],
    );
    throw err;
  } finally {
    tape = e.state.activeTape ?? [];
    e.endTape();
    // Closed before the walk: the backward's ops record nothing and save nothing.
    e.state.activeTape = null;
  }
  if (!(y instanceof tf.Tensor)) {
    tf.dispose(tape.flatMap((n) => n.saved ?? []));
    throw new Error("gradients: f must return a tensor");
  }
  const path = nodesBetween(tape, xs, y);
  const onPath = new Set(path.map((n) => n.id));
  // Saved tensors of nodes off the path (ops on constants only) are never read.
  for (const node of tape) if (!onPath.has(node.id)) tf.dispose(node.saved as tf.Tensor[] ?? []);

  let grads: tf.Tensor[];
  try {
    grads = walk(e, path, xs, y, dy);
  } catch (err) {
    // Whatever the walk had not released yet (disposing twice is a no-op).
    tf.dispose(path.flatMap((n) => n.saved ?? []) as tf.Tensor[]);
    y.dispose();
    throw err;
  } finally {
    e.state.activeTape = outer;
  }
  return { value: y, grads };
};

/** The backward walk over `path` (see the module doc), seeded with `dy` (ones by default) at `y`. */
const walk = (
  e: EngineInternals,
  path: readonly TapeNode[],
  xs: readonly tf.Tensor[],
  y: tf.Tensor,
  dy: tf.Tensor | undefined,
): tf.Tensor[] =>
  e.tidy("backward", () => {
    const acc = new Map<number, tf.Tensor>();
    acc.set(y.id, dy ?? tf.onesLike(y));
    for (let i = path.length - 1; i >= 0; i--) {
      const node = path[i];
      const dys = node.outputs.map((o) => acc.get(o.id) ?? null);
      if (node.gradient == null) {
        throw new Error(`gradients: no gradient registered for ${node.kernelName}`);
      }
      const names = Object.keys(node.inputs);
      // One scope per node: a custom gradient computes its results when called, so its intermediates
      // belong to this scope too.
      const dxs = e.tidy(node.kernelName, () => {
        const fns = node.gradient!(dys);
        return names.map((name) => {
          if (!(name in fns)) {
            throw new Error(`gradients: ${node.kernelName} gives no gradient for input ${name}`);
          }
          return fns[name]();
        });
      });
      // A gradient function may hand back its dy, a saved tensor or one tensor for two inputs as it is
      // (Identity, custom gradients): give each its own handle, since dys and saved are released below.
      const held = new Set<tf.Tensor>([
        ...dys.filter((d): d is tf.Tensor => d != null),
        ...(node.saved ?? []),
      ]);
      names.forEach((name, k) => {
        const x = node.inputs[name];
        let dx = dxs[k];
        if (dx.dtype !== "float32") {
          throw new Error(`gradients: ${node.kernelName}'s gradient of ${name} is ${dx.dtype}, not float32`);
        }
        if (!tf.util.arraysEqual(dx.shape, x.shape)) {
          throw new Error(
            `gradients: ${node.kernelName}'s gradient of ${name} has shape [${dx.shape}], input [${x.shape}]`,
          );
        }
        if (held.has(dx)) dx = tf.clone(dx);
        held.add(dx);
        const cur = acc.get(x.id);
        if (cur === undefined) acc.set(x.id, dx);
        else {
          acc.set(x.id, tf.add(cur, dx));
          cur.dispose();
          dx.dispose();
        }
      });
      // This node was the only reader of its outputs' gradients and of its saved tensors.
      node.outputs.forEach((o, j) => {
        if (dys[j] != null && (o.id !== y.id || dy === undefined)) dys[j]!.dispose();
        acc.delete(o.id);
      });
      tf.dispose(node.saved as tf.Tensor[] ?? []);
    }
    return xs.map((x) => acc.get(x.id) ?? tf.zerosLike(x));
  });

/** What a function differentiated by {@link valueAndGrad} returns: the scalar and named auxiliaries. */
export interface WithAux<A extends Readonly<Record<string, tf.Tensor>>> {
  /** The scalar that is differentiated. */
  readonly loss: tf.Scalar;
  /** Tensors returned alongside, not differentiated (kept alive for the caller). */
  readonly aux: A;
}

/**
 * `valueAndGrad(f)(params)` -> `{ loss, aux, grads }`, `grads` shaped like `params`: {@link gradients}
 * over a parameter record (flattened into the tensor list and rebuilt inside, so callers work with
 * records only). Only `params` is differentiated; everything `f` closes over is a constant. The caller
 * owns every returned tensor.
 */
export const valueAndGrad = <P extends Params, A extends Readonly<Record<string, tf.Tensor>>>(
  f: (p: P) => WithAux<A>,
): (params: P) => { loss: tf.Scalar; aux: A; grads: P } =>
(params: P): { loss: tf.Scalar; aux: A; grads: P } => {
  const flat = flatten(params);
  const names = Object.keys(flat);
  let aux: A | undefined;
  const { value, grads } = gradients((...xs: tf.Tensor[]) => {
    const rebuilt: Record<string, tf.Tensor> = {};
    names.forEach((n, i) => (rebuilt[n] = xs[i]));
    const r = f(unflatten(rebuilt) as P);
    for (const t of Object.values(r.aux)) tf.keep(t);
    aux = r.aux;
    return r.loss;
  }, names.map((n) => flat[n]));
  const g: Record<string, tf.Tensor> = {};
  names.forEach((n, i) => (g[n] = grads[i]));
  return { loss: value as tf.Scalar, aux: aux as A, grads: unflatten(g) as P };
};

/**
 * A differentiable op with a hand-written backward pass that saves only what that pass reads.
 *
 * `forward(...xs)` returns the value and the tensors to keep for the backward pass (inputs or
 * intermediates: each is kept as a handle on the same data, everything else `forward` made is released);
 * `backward(dy, saved)` returns one gradient per input, in order. Nothing inside `forward` is recorded
 * on the tape, so its intermediates are never held for the backward pass. Off the tape (inference) the
 * op saves nothing. The backward runs in its own scope: only the gradients it returns survive.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { customOp, gradients } from "./autodiff.ts";
 * await tf.setBackend("cpu");
 * // x^2 with its derivative 2x, saving x only.
 * const square = customOp(
 *   (x: tf.Tensor) => ({ value: tf.square(x), save: [x] }),
 *   (dy, [x]) => [tf.mul(dy, tf.mul(x, 2))],
 * );
 * const { grads } = gradients((x) => tf.sum(square(x)), [tf.tensor1d([3])]);
 * if ((await grads[0].data())[0] !== 6) throw new Error("unexpected gradient");
 * ```
 */
export const customOp = <X extends tf.Tensor[]>(
  forward: (...xs: X) => { readonly value: tf.Tensor; readonly save: readonly tf.Tensor[] },
  backward: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[],
): (...xs: X) => tf.Tensor => {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const { value, save: keep } = forward(...(args.slice(0, -1) as X));
    save([...keep]);
    return {
      value,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const d = Array.isArray(dy) ? dy[0] : dy;
          // Each gradient gets its own handle: one returned as dy, as a saved tensor or twice would
          // otherwise be released with them (tfjs's own walk frees a gradient it accumulates into).
          const seen = new Set<tf.Tensor>([d, ...saved]);
          return backward(d, saved).map((g) => {
            const own = seen.has(g) ? tf.clone(g) : g;
            seen.add(own);
            return own;
          });
        }),
    };
  });
  // Off the tape (inference, the frozen teacher) the forward pass runs as plain ops: no custom-gradient
  // node, so profiles list its kernels once and nothing is saved.
  return (...xs: X) => {
    // Whether this op's forward pass keeps its saves; nested ops inside it run off the tape and do not.
    const was = saving;
    saving = recording();
    try {
      return saving ? op(...xs) as tf.Tensor : tf.tidy(() => forward(...xs).value);
    } finally {
      saving = was;
    }
  };
};

let saving = false;

/**
 * Whether ops are being recorded on a tape now: false in inference, for the frozen teacher, and inside a
 * custom op's forward pass. Layers may take a path that keeps nothing for a backward pass when it is false.
 */
export const onTape = (): boolean => recording();

/**
 * Whether the custom op whose forward pass is running will keep what it saves (it is on a tape). Off the
 * tape its `save` list is dropped at once, so work done only to save (packing to f16,
 * lib/core/precision.ts `toSaved`) can be skipped.
 */
export const savingForBackward = (): boolean => saving;

/**
 * Whether ops are being recorded on a tape now (tfjs-core 4.22 `isTapeOn` in `runKernelFunc`). Inside a
 * custom op's forward pass this is false; {@link customOp} runs `forward` off the tape only when the op
 * itself is not recorded, which `savingForBackward` tells a forward pass.
 */
const recording = (): boolean => {
  const s = engine().state;
  return s.activeTape != null && s.kernelDepth === 0;
};

/**
 * `f` with its activations recomputed in the backward pass instead of kept (gradient checkpointing,
 * `torch.utils.checkpoint`): the forward pass runs `f` off the tape and keeps only its inputs; the
 * backward pass runs `f` again on the tape and walks it with {@link gradients}. Costs one more forward
 * pass of `f`; holds one `f`'s activations at a time. `f` must be deterministic (randomness from keys it
 * closes over, as everywhere in this project), so the replay computes what the forward pass did.
 */
export const recomputed = <X extends tf.Tensor[]>(f: (...xs: X) => tf.Tensor): (...xs: X) => tf.Tensor =>
  customOp(
    (...xs: X) => ({ value: f(...xs), save: xs }),
    (dy, saved) => {
      const r = gradients((...ys: tf.Tensor[]) => f(...(ys as X)), saved, dy);
      r.value.dispose();
      return r.grads;
    },
  );
