/**
 * Value and gradient of a scalar function of a parameter record, with auxiliary outputs (the loss parts).
 * A thin functional layer over `tf.valueAndGrads`: the record is flattened into the tensor list tfjs
 * differentiates and rebuilt inside, so callers work with records only.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { flatten, type Params, unflatten } from "../core/tree.ts";

/** What the differentiated function returns: the scalar to differentiate and named auxiliaries. */
export interface WithAux<A extends Readonly<Record<string, tf.Tensor>>> {
  /** The scalar that is differentiated. */
  readonly loss: tf.Scalar;
  /** Tensors returned alongside, not differentiated (kept alive for the caller). */
  readonly aux: A;
}

/**
 * `valueAndGrad(f)(params)` -> `{ loss, aux, grads }`, `grads` shaped like `params`. Only `params` is
 * differentiated; everything `f` closes over is a constant. The caller owns every returned tensor.
 */
export const valueAndGrad = <P extends Params, A extends Readonly<Record<string, tf.Tensor>>>(
  f: (p: P) => WithAux<A>,
): (params: P) => { loss: tf.Scalar; aux: A; grads: P } =>
(params: P): { loss: tf.Scalar; aux: A; grads: P } => {
  const flat = flatten(params);
  const names = Object.keys(flat);
  let aux: A | undefined;
  const { value, grads } = tf.valueAndGrads((...xs: tf.Tensor[]) => {
    const rebuilt: Record<string, tf.Tensor> = {};
    names.forEach((n, i) => (rebuilt[n] = xs[i]));
    const r = f(unflatten(rebuilt) as P);
    for (const t of Object.values(r.aux)) tf.keep(t);
    aux = r.aux;
    return r.loss;
  })(names.map((n) => flat[n]));
  const g: Record<string, tf.Tensor> = {};
  names.forEach((n, i) => (g[n] = grads[i]));
  return { loss: value as tf.Scalar, aux: aux as A, grads: unflatten(g) as P };
};
