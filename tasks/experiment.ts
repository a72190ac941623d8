/**
 * `deno task experiment NAME [--size test|small|medium|large] [--seeds N] [--out DIR] [pretraining flags]`:
 * runs a named experiment (lib/experiment/registry.ts) and writes a run folder per run plus `report.md`
 * with a results table and plots. `--list` names the experiments, `--help` lists the flags.
 *
 * @module
 */
import { E } from "../lib/deps.ts";
import { resolveExperimentArgs } from "../lib/experiment/cli.ts";
import { runExperiment } from "../lib/experiment/runner.ts";
import { formatScores } from "../lib/experiment/results.ts";
import { message } from "../lib/core/fs.ts";

const cmd = resolveExperimentArgs(Deno.args);
if (E.isLeft(cmd)) {
  console.error(`experiment: ${cmd.left}`);
  Deno.exit(2);
}
if (cmd.right.kind !== "run") {
  console.log(cmd.right.text);
  Deno.exit(0);
}
const { experiment, options } = cmd.right;
try {
  const t0 = performance.now();
  const r = await runExperiment(experiment, options, {
    log: (l) => console.log(l),
    tty: Deno.stdout.isTerminal(),
  });
  if (E.isLeft(r)) {
    console.error(`experiment: ${r.left}`);
    Deno.exit(1);
  }
  const s = r.right;
  for (const run of s.results.runs) console.log(`${run.id}: ${formatScores(run.eval)}`);
  console.log(
    `experiment ${experiment.name}: ${s.results.runs.length} run(s) (${s.reused.length} reused) in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s; report ${s.reportPath}`,
  );
} catch (e) {
  console.error(`experiment: ${message(e)}`);
  Deno.exit(1);
}
