/**
 * The hand-written backward passes (`customOp`, lib/core/autodiff.ts) against their plain-tfjs references
 * on WebGPU (llvmpipe on the CPU machines; skipped where no adapter exists):
 * - with tfjs's own kernels: `linear` vs `linearReference` (bias, none, `extraBias`; x of rank 2 and 3),
 *   `layerNorm` vs `layerNormReference` (eps 1e-6 and 1e-5, D = 7 and 70), `geluOp` / `quickGeluOp` vs
 *   `gelu` / `quickGelu`, `attentionCore` vs `scaledDotProductAttention` for every Nq from 1 to Nk, the
 *   residual `add` vs `tf.add` with broadcasts;
 * - with the project's (`registerKernels()`): the fused LayerNorm under `layerNorm`, the fused activations
 *   that `mlp` picks, one `linear` and one `attentionCore` case on its matmul, attention with its heads in
 *   place (self and cross), the MLP as one op, and residual branches fused into their last product;
 * - each time the value, and the gradient of `sum(op(...) * w)` (a fixed random `w`) w.r.t. every input by
 *   tfjs's walk (`tf.grads`) and the project's (`gradients`, also seeded with `dy = w`), odd sizes (D = 7,
 *   N = 5, dh = 3, 2 heads), no leaked tensor.
 *
 * The cpu and wasm halves, and the memory checks, are tests/nn_grad_test.ts.
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { selectBackend } from "../../lib/core/backend.ts";
import { checkDeviceErrors } from "../../lib/core/webgpu_errors.ts";
import { fusedActivation, registerKernels, restoreStockKernels } from "../../lib/core/kernels/dispatch.ts";
import { linear, type LinearParams, linearReference } from "../../lib/nn/linear.ts";
import { layerNorm, type LayerNormParams, layerNormReference } from "../../lib/nn/norm.ts";
import { gelu, geluOp, quickGelu, quickGeluOp } from "../../lib/nn/mlp.ts";
import { attentionCore, scaledDotProductAttention } from "../../lib/nn/sdpa.ts";
import { add, residualLinear } from "../../lib/nn/residual.ts";
import { headAttention } from "../../lib/nn/sdpa.ts";
import { mlp } from "../../lib/nn/mlp.ts";
import { type Case, checkCase, type Op, randn } from "../custom_grad_check.ts";
import { assert } from "../../lib/core/std.ts";

const hasWebGPU = await selectBackend("webgpu").then(() => tf.getBackend() === "webgpu", () => false);

const linearCases: Case[] = [[5, 7], [2, 5, 7]].flatMap((xShape, i): Case[] => {
  const at = `x [${xShape}], 7 -> 3`;
  const p = (k: tf.Tensor, b?: tf.Tensor): LinearParams => ({
    kernel: k as tf.Tensor2D,
    bias: b as tf.Tensor1D | undefined,
  });
  return [
    {
      name: `linear with bias, ${at}`,
      names: ["x", "kernel", "bias"],
      make: () => ({
        xs: [randn(xShape, 1 + i), randn([7, 3], 3), randn([3], 4)],
        custom: (x, k, b) => linear(p(k, b), x),
        reference: (x, k, b) => linearReference(p(k, b), x),
      }),
    },
    {
      name: `linear without bias, ${at}`,
      names: ["x", "kernel"],
      make: () => ({
        xs: [randn(xShape, 5 + i), randn([7, 3], 7)],
        custom: (x, k) => linear(p(k), x),
        reference: (x, k) => linearReference(p(k), x),
      }),
    },
    {
      name: `linear with extraBias, ${at}`,
      names: ["x", "kernel", "extraBias"],
      make: () => {
        const own = randn([3], 8, 5); // the layer's own bias, replaced by the extra one
        return {
          xs: [randn(xShape, 9 + i), randn([7, 3], 11), randn([3], 12)],
          consts: [own],
          custom: (x, k, e) => linear(p(k, own), x, e as tf.Tensor1D),
          reference: (x, k, e) => linearReference(p(k, own), x, e as tf.Tensor1D),
        };
      },
    },
  ];
});

/** D = 7, and D = 70: over the fused kernel's 64-thread row, not a multiple of 4. */
const layerNormCases: Case[] = ([[[2, 5, 7], 1e-6], [[5, 7], 1e-5], [[3, 70], 1e-6]] as const).map(
  ([xShape, eps], i) => {
    const ln = (f: typeof layerNorm): Op => (x, scale, bias) => f({ scale, bias } as LayerNormParams, x, eps);
    return {
      name: `layerNorm eps ${eps}, x [${xShape}]`,
      names: ["x", "scale", "bias"],
      make: () => ({
        xs: [
          randn([...xShape], 20 + i, 0.5, 2),
          randn(xShape.slice(-1), 23 + i, 1, 0.5),
          randn(xShape.slice(-1), 26 + i),
        ],
        custom: ln(layerNorm),
        reference: ln(layerNormReference),
      }),
    };
  },
);

const activationCases: Case[] = [false, true].flatMap((quick, i): Case[] => {
  const [name, op, reference] = quick ? ["quickGeluOp", quickGeluOp, quickGelu] : ["geluOp", geluOp, gelu];
  const x = () => [randn([2, 5, 7], 30 + i, 0, 2.5)];
  return [
    { name: `${name}, x [2,5,7]`, names: ["x"], make: () => ({ xs: x(), custom: op, reference }) },
    {
      // What mlp runs: the fused kernel when registered, the custom op otherwise.
      name: `mlp's ${quick ? "QuickGELU" : "GELU"}, x [2,5,7]`,
      names: ["x"],
      make: () => ({ xs: x(), custom: (t) => fusedActivation(t, quick) ?? op(t), reference }),
    },
  ];
});

/** q [2, 2, Nq, 3], k and v [2, 2, 6, 3]: every Nq from 1 to Nk - 1, and Nq = Nk. */
const attentionCases: Case[] = Array.from({ length: 6 }, (_, i): Case => ({
  name: `attentionCore Nq ${i + 1}, Nk 6, dh 3, 2 heads`,
  names: ["q", "k", "v"],
  make: () => ({
    xs: [
      randn([2, 2, i + 1, 3], 40 + i, 0, 2),
      randn([2, 2, 6, 3], 50 + i, 0, 2),
      randn([2, 2, 6, 3], 60 + i),
    ],
    custom: attentionCore as Op,
    reference: scaledDotProductAttention as Op,
  }),
}));

const addCases: Case[] = [[[2, 5, 7], [7]], [[2, 5, 7], [1, 5, 7]], [[2, 5, 7], [2, 5, 7]], [[5, 1], [
  2,
  5,
  7,
]]]
  .map(([sa, sb], i) => ({
    name: `add [${sa}] + [${sb}]`,
    names: ["a", "b"],
    make: () => ({ xs: [randn(sa, 70 + 2 * i), randn(sb, 71 + 2 * i)], custom: add, reference: tf.add }),
  }));

/** The heads of `[B, N, H dh]` columns `col..`: `[B, H, N, dh]` by plain ops. */
const headsOf = (x: tf.Tensor, col: number, heads: number, dh: number) => {
  const [b, n] = x.shape as [number, number];
  return tf.transpose(tf.reshape(tf.slice(x, [0, 0, col], [-1, -1, heads * dh]), [b, n, heads, dh]), [
    0,
    2,
    1,
    3,
  ]);
};
/** `[B, H, N, dh]` merged to `[B, N, H dh]` by plain ops. */
const merged = (o: tf.Tensor) => {
  const [b, h, n, dh] = o.shape as [number, number, number, number];
  return tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [b, n, h * dh]);
};
const sdpa = (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) =>
  scaledDotProductAttention(q as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D);

/**
 * The fused paths of issue 12 against plain ops: attention with its heads in place (self: one [2, 5, 3 x 6]
 * projection; cross: three sources, Nq 3, Nk 5), the MLP as one op, and residual branches fused into their
 * last product (with layer scale and drop path, and CLIP's plain add), each through `mlp` too.
 */
const fusedCases: Case[] = [
  {
    name: "headAttention, self, qkv [2,5,18], 2 heads of 3",
    names: ["qkv"],
    make: () => ({
      xs: [randn([2, 5, 18], 80, 0, 2)],
      custom: (qkv) => headAttention([qkv as tf.Tensor3D], { q: [0, 0], k: [0, 6], v: [0, 12] }, 2),
      reference: (qkv) => merged(sdpa(headsOf(qkv, 0, 2, 3), headsOf(qkv, 6, 2, 3), headsOf(qkv, 12, 2, 3))),
    }),
  },
  {
    name: "headAttention, cross, q [2,3,6], k and v [2,5,6], 2 heads of 3",
    names: ["q", "k", "v"],
    make: () => ({
      xs: [randn([2, 3, 6], 81, 0, 2), randn([2, 5, 6], 82, 0, 2), randn([2, 5, 6], 83)],
      custom: (q, k, v) => headAttention([q, k, v] as tf.Tensor3D[], { q: [0, 0], k: [1, 0], v: [2, 0] }, 2),
      reference: (q, k, v) => merged(sdpa(headsOf(q, 0, 2, 3), headsOf(k, 0, 2, 3), headsOf(v, 0, 2, 3))),
    }),
  },
  ...[undefined, Float32Array.of(2, 0)].map((rowScale, i): Case => ({
    name: `residualLinear with layer scale${rowScale ? " and drop path" : ""}, a [2,5,7] -> 4`,
    names: ["a", "W", "b", "gamma", "x"],
    make: () => ({
      xs: [
        randn([2, 5, 7], 84 + i),
        randn([7, 4], 86 + i),
        randn([4], 88 + i),
        randn([4], 90 + i),
        randn([2, 5, 4], 92 + i),
      ],
      custom: (a, w, b, g, x) =>
        residualLinear({ kernel: w as tf.Tensor2D, bias: b as tf.Tensor1D }, a, {
          x,
          gamma: g as tf.Tensor1D,
          rowScale,
        }),
      reference: (a, w, b, g, x) => {
        const y = tf.mul(tf.add(tf.matMul(tf.reshape(a, [10, 7]), w), b), g);
        const s = rowScale ? tf.reshape(tf.tensor1d(rowScale), [2, 1, 1]) : tf.scalar(1);
        return tf.add(x, tf.mul(tf.reshape(y, [2, 5, 4]), s));
      },
    }),
  })),
  ...[false, true].map((withResidual, i): Case => ({
    name: `mlp as one op${
      withResidual ? " with its residual (layer scale, drop path)" : ""
    }, x [2,5,4], 8 hidden`,
    names: ["x", "W1", "b1", "W2", "b2", "gamma"],
    make: () => ({
      xs: [
        randn([2, 5, 4], 94 + i),
        randn([4, 8], 96 + i),
        randn([8], 98 + i),
        randn([8, 4], 100 + i),
        randn([4], 102 + i),
        randn([4], 104 + i),
      ],
      custom: (x, w1, b1, w2, b2, g) => {
        const p = {
          fc1: { kernel: w1 as tf.Tensor2D, bias: b1 as tf.Tensor1D },
          fc2: { kernel: w2 as tf.Tensor2D, bias: b2 as tf.Tensor1D },
        };
        // gamma enters through the residual only; without one it is multiplied in after, as the reference does.
        return withResidual
          ? mlp(p, x, "gelu", { x, gamma: g as tf.Tensor1D, rowScale: Float32Array.of(0, 1.5) })
          : tf.mul(mlp(p, x), g);
      },
      reference: (x, w1, b1, w2, b2, g) => {
        const h = gelu(tf.add(tf.matMul(tf.reshape(x, [10, 4]), w1), b1));
        const y = tf.reshape(tf.add(tf.matMul(h, w2), b2), [2, 5, 4]);
        return withResidual
          ? tf.add(x, tf.mul(tf.mul(y, g), tf.reshape(tf.tensor1d([0, 1.5]), [2, 1, 1])))
          : tf.mul(y, g);
      },
    }),
  })),
];

/**
 * With the project's kernels: the fused paths, and one case each of the products through its matmul
 * (every new product shape compiles shaders: all the cases took 30 s on llvmpipe).
 */
const groups: Record<"tfjs kernels" | "project kernels", [string, Case[]][]> = {
  "tfjs kernels": [
    ["linear", linearCases],
    ["layerNorm", layerNormCases],
    ["GELU and QuickGELU", activationCases],
    ["attentionCore", attentionCases],
    ["add", addCases],
  ],
  "project kernels": [
    ["layerNorm (fused)", layerNormCases],
    ["GELU and QuickGELU (fused in mlp)", activationCases],
    ["linear and attentionCore (project matmul)", [linearCases[3], attentionCases[2]]],
    ["head attention, the MLP as one op, residual branches (fused)", fusedCases],
  ],
};

for (const kernels of ["tfjs kernels", "project kernels"] as const) {
  for (const [what, cases] of groups[kernels]) {
    Deno.test({
      name: `[webgpu, ${kernels}] ${what}: value and gradients equal the reference's, no leak`,
      ignore: !hasWebGPU,
      sanitizeOps: false,
      sanitizeResources: false,
      fn: async () => {
        await selectBackend("webgpu"); // another suite in this process may have switched backends
        if (kernels === "project kernels") registerKernels();
        else restoreStockKernels();
        try {
          const problems: string[] = [];
          for (const [i, c] of cases.entries()) problems.push(...await checkCase(c, 100 + i));
          checkDeviceErrors();
          assert(problems.length === 0, problems.join("\n"));
        } finally {
          restoreStockKernels();
        }
      },
    });
  }
}
