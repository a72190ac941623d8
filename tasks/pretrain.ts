/**
 * `deno task pretrain [--config FILE] [--model micro|tiny|small|base|large] [--data SOURCE] [--steps N]
 * [--batch-size N] [--seed N] [--out DIR] [--resume DIR] [--teacher FILE] [--backend auto|webgpu|wasm|cpu] ...`
 *
 * With no arguments: the embedded default (synthetic data, micro student, a small random CLIP-shaped
 * teacher), a few minutes on 2 CPU cores. `--help` lists every flag; `--blr`, `--mask-ratio` and
 * `--warmup-epochs` are the other ways to give `--lr`, `--num-masked` and `--warmup-steps`
 * (lib/config/pretrain.ts). `--out DIR` is the run directory (lib/train/rundir.ts).
 *
 * @module
 */
import { E } from "../lib/deps.ts";
import { pretrainUsage, resolvePretrainConfig, wantsHelp } from "../lib/config/pretrain.ts";
import { formatSummary, pretrain } from "../lib/train/pretrain.ts";
import { pretrainEvaluators } from "../lib/eval/monitor.ts";

if (wantsHelp(Deno.args)) {
  console.log(pretrainUsage());
  Deno.exit(0);
}
const cfg = resolvePretrainConfig(Deno.args);
if (E.isLeft(cfg)) {
  console.error(`pretrain: ${cfg.left}`);
  Deno.exit(2);
}
/** "rank R of N: " under mpirun or srun, where several processes print. */
const rankPrefix = (() => {
  const rank = Deno.env.get("OMPI_COMM_WORLD_RANK") ?? Deno.env.get("PMI_RANK");
  const size = Deno.env.get("OMPI_COMM_WORLD_SIZE") ?? Deno.env.get("PMI_SIZE");
  return rank !== undefined && size !== undefined && size !== "1" ? `rank ${rank} of ${size}: ` : "";
})();
try {
  // The run's evaluators (--knn-every N: the k-NN monitor) are built here; the trainer imports no evaluation.
  const result = await pretrain(cfg.right, { log: (l) => console.log(l) }, {
    evaluators: pretrainEvaluators(cfg.right),
  });
  if (E.isLeft(result)) {
    // Under mpirun, the first rank to fail ends the whole job (mpirun stops the others): say which rank.
    console.error(`pretrain: ${rankPrefix}${result.left}`);
    Deno.exit(1);
  }
  if (result.right.rank === 0) console.log(formatSummary(result.right));
} catch (e) {
  console.error(`pretrain: ${rankPrefix}${(e as Error).message}`);
  Deno.exit(1);
}
