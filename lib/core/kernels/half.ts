/**
 * Tensors kept in f16 for the backward pass (`--precision f16`, lib/core/precision.ts). tfjs has no f16
 * dtype, so a packed tensor is an int32 tensor whose last axis is half as long: each int32 holds two f16
 * values (element 2i in the low 16 bits, 2i + 1 in the high ones). {@link packHalf} rounds a float32
 * tensor `[..., D]` (D even) into one `[..., D/2]`; {@link unpackHalf} widens it back, exactly (every f16
 * is a float32). Only core WGSL is used (`pack2x16float`/`unpack2x16float` on u32), not `shader-f16`.
 *
 * Out-of-range values: WGSL leaves `pack2x16float` of a value outside f16's range indeterminate, so the
 * bits are set here: |v| >= 65520 (which rounds past 65504) becomes an infinity of its sign, NaN stays
 * NaN. The dynamic loss scale (lib/optim/loss_scale.ts) then sees the overflow as a non-finite gradient.
 *
 * @module
 */
import { tf, type WebGPUBackend } from "../../deps.ts";
import { type Program, runProgram, type TensorInfo, toTensor, webgpu } from "./program.ts";

const WG = 256;

const PACK = `
fn halfBits(v: f32) -> u32 {
  let bits = bitcast<u32>(v);
  let sign = (bits >> 16u) & 0x8000u;
  let mag = bits & 0x7fffffffu;
  if (mag > 0x7f800000u) { return sign | 0x7e00u; }
  if (mag > 0x477fefffu) { return sign | 0x7c00u; }
  return pack2x16float(vec2<f32>(v, 0.0)) & 0xffffu;
}
fn main(index: i32) {
  if (index >= uniforms.pairs) { return; }
  result[index] = bitcast<i32>(halfBits(X[2 * index]) | (halfBits(X[2 * index + 1]) << 16u));
}
`;

const UNPACK = `
fn main(index: i32) {
  if (index >= uniforms.pairs) { return; }
  let v = unpack2x16float(bitcast<u32>(P[index]));
  result[2 * index] = v.x;
  result[2 * index + 1] = v.y;
}
`;

const pairsProgram = (name: string, input: string, outputShape: number[], pairs: number, code: string) => ({
  variableNames: [input],
  outputShape,
  shaderKey: name,
  dispatchLayout: { x: [0] },
  dispatch: [Math.ceil(pairs / WG), 1, 1] as [number, number, number],
  workgroupSize: [WG, 1, 1] as [number, number, number],
  uniforms: "pairs : i32,",
  getUserCode: () => code,
});

const pairsOf = (shape: readonly number[], what: string): number => {
  const last = shape[shape.length - 1];
  if (shape.length === 0 || last % 2 !== 0) {
    throw new Error(`${what}: the last axis must have an even length (got shape [${shape.join(", ")}])`);
  }
  return tf.util.sizeFromShape([...shape]) / 2;
};

/** `[..., D]` float32 -> `[..., D/2]` int32 of f16 pairs (WebGPU). The caller owns the result. */
export const packHalf = (x: tf.Tensor): tf.Tensor => {
  if (x.dtype !== "float32") throw new Error(`packHalf: float32 expected, got ${x.dtype}`);
  const pairs = pairsOf(x.shape, "packHalf");
  const shape = [...x.shape.slice(0, -1), x.shape[x.shape.length - 1] / 2];
  const program: Program = {
    ...pairsProgram("caePackHalf", "X", shape, pairs, PACK),
    outputDtype: "int32",
  };
  const backend: WebGPUBackend = webgpu();
  const info: TensorInfo = { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
  return toTensor(runProgram(backend, program, [info], [{ type: "int32", data: [pairs] }]));
};

/** The float32 tensor `[..., 2 D]` a {@link packHalf} result `[..., D]` holds (WebGPU). */
export const unpackHalf = (p: tf.Tensor): tf.Tensor => {
  if (p.dtype !== "int32") throw new Error(`unpackHalf: a packed (int32) tensor expected, got ${p.dtype}`);
  const pairs = tf.util.sizeFromShape(p.shape);
  const shape = [...p.shape.slice(0, -1), p.shape[p.shape.length - 1] * 2];
  const info: TensorInfo = { dataId: p.dataId, shape: [...p.shape], dtype: p.dtype };
  return toTensor(
    runProgram(webgpu(), pairsProgram("caeUnpackHalf", "P", shape, pairs, UNPACK), [info], [{
      type: "int32",
      data: [pairs],
    }]),
  );
};
