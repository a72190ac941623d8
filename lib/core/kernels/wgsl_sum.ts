/**
 * WGSL shared by the reductions (lib/core/kernels/reduce.ts: the full sum; adamw.ts: the gradients' sums of
 * squares and the clip factor): each of `groups` workgroups of `wg` threads sums a strided share of its
 * input, then the workgroup folds its threads' sums in shared memory. One copy of that code, so the two
 * stay the same arithmetic.
 *
 * @module
 */

/**
 * The in-workgroup fold: with each thread's sum in `s`, leaves the workgroup's sum in `part[0]`.
 * Needs `var<workgroup> part: array<f32, wg>;` and `lid` (the local index).
 */
export const foldWorkgroup = (wg: number): string =>
  `part[lid] = s;
  workgroupBarrier();
  for (var w = ${wg / 2}; w > 0; w /= 2) {
    if (lid < w) { part[lid] += part[lid + w]; }
    workgroupBarrier();
  }`;

/**
 * A whole shader: workgroup `wg` of `groups` sums `term` (an expression of `v = input[j]`) over
 * `j = wg * WG + lid, + groups * WG, ... < uniforms.n`, and thread 0 runs `store` (which may read
 * `part[0]` and `wg`).
 */
export const stridedPartialSums = (
  input: string,
  wg: number,
  groups: number,
  term: string,
  store: string,
): string => `
var<workgroup> part: array<f32, ${wg}>;
fn main(index: i32) {
  let lid = i32(localId.x);
  let wg = i32(workgroupId.x);
  var s = 0.0;
  for (var j = wg * ${wg} + lid; j < uniforms.n; j += ${groups * wg}) {
    let v = ${input}[j];
    s += ${term};
  }
  ${foldWorkgroup(wg)}
  if (lid == 0) { ${store} }
}
`;
