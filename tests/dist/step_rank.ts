/**
 * One rank of the data-parallel equality test (tests/dist_test.ts), under `mpirun -np 2`: 3 steps of
 * `dataParallelStep` on this rank's half of each global batch; rank 0 prints the per-step losses and the
 * final parameters as one JSON line after `RESULT `.
 *
 * @module
 */
import { tf } from "../../lib/deps.ts";
import { selectBackend } from "../../lib/core/backend.ts";
import { registerDeviceGradients } from "../../lib/core/gradients.ts";
import { mpiCollective } from "../../lib/dist/mpi.ts";
import { broadcastParams, dataParallelStep } from "../../lib/train/data_parallel.ts";
import { disposeTree } from "../../lib/core/tree.ts";
import { readMetrics } from "../../lib/train/step.ts";
import { batchRows, GLOBAL, paramValues, setup, STEPS } from "./step_case.ts";

await selectBackend((Deno.env.get("CAEV2_BACKEND") ?? "wasm") as "wasm");
registerDeviceGradients();
const c = mpiCollective();
const { cfg, state: start } = setup();
const params = await broadcastParams(c, start.params);
disposeTree(start.params);
let state = { ...start, params };
const step = dataParallelStep(cfg, c);
const per = GLOBAL / c.size;
const losses: number[][] = [];
for (let s = 0; s < STEPS; s++) {
  const b = batchRows(s, c.rank * per, per);
  const r = await step(state, [b]);
  const m = await readMetrics(r.metrics);
  losses.push([m.loss, m.lossVisible, m.lossMasked, m.gradNorm]);
  tf.dispose([b.studentImages, r.metrics]);
  state = r.state;
}
if (c.rank === 0) console.log(`RESULT ${JSON.stringify({ losses, params: await paramValues(state) })}`);
await c.barrier();
c.finalize();
