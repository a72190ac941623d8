/**
 * `mpirun -np N deno task bench:allreduce [--model base] [--rounds 5] [--bucket-mib 32]`: the time to
 * average one step's gradients across N ranks (lib/dist/collective.ts `allReduceParts`, bucketed,
 * over Open MPI through FFI), for the student preset's parameter tensors in their real sizes. Rank 0
 * prints the median of the rounds, the bytes, and the bus bandwidth (`2 (N-1)/N x bytes / time`, the
 * figure ring all-reduce is usually quoted by).
 *
 * @module
 */
import { parseArgs } from "../lib/core/std.ts";
import { allReduceParts } from "../lib/dist/collective.ts";
import { mpiCollective } from "../lib/dist/mpi.ts";
import { type PresetName, presetNames, studentPreset } from "../lib/models/presets.ts";
import { studentParamCount } from "../lib/train/footprint.ts";

const args = parseArgs(Deno.args, { string: ["model", "rounds", "bucket-mib"] });
const model = (args.model ?? "base") as PresetName;
if (!presetNames.includes(model)) {
  console.error(`bench:allreduce: --model ${model}: expected one of ${presetNames.join(", ")}`);
  Deno.exit(2);
}
const rounds = Number(args.rounds ?? 5), bucket = Number(args["bucket-mib"] ?? 32) * 2 ** 20;
const c = mpiCollective();
const s = studentPreset(model, { outDim: 512 });
// The tensors of one block, repeated per block, plus the rest as one tensor: the sizes the buckets see.
const d = s.dim, h = s.mlpRatio * d;
const block = [d, d, 3 * d * d, d, d, d * d, d, d, d, d, d * h, h, h * d, d, d];
const sizes = Array.from({ length: s.depth }, () => block).flat();
const rest = studentParamCount(s) - sizes.reduce((a, b) => a + b, 0);
sizes.push(rest);
const parts = sizes.map((n) => new Float32Array(n).fill(c.rank + 1));
const bytes = sizes.reduce((a, b) => a + b, 0) * 4;
const times: number[] = [];
for (let r = 0; r < rounds + 1; r++) {
  await c.barrier();
  const t0 = performance.now();
  await allReduceParts(c, parts, bucket);
  if (r > 0) times.push(performance.now() - t0); // round 0 warms up
}
times.sort((a, b) => a - b);
const ms = times[Math.floor(times.length / 2)];
if (c.rank === 0) {
  const bus = (2 * (c.size - 1) / c.size) * bytes / (ms / 1000) / 1e9;
  console.log(
    `allreduce ${model}: ${
      (bytes / 2 ** 20).toFixed(0)
    } MiB of float32 gradients (${sizes.length} tensors, ` +
      `${bucket / 2 ** 20} MiB buckets) across ${c.size} ranks (${c.name}): median ${
        ms.toFixed(0)
      } ms of ${rounds}, ` +
      `bus bandwidth ${bus.toFixed(2)} GB/s`,
  );
}
c.finalize();
