/**
 * `deno task compare RUN_DIR... [--out FILE.svg|FILE.png] [--metric loss|loss_visible|loss_masked|lr|grad_norm]
 * [--force]`: prints a table of the runs (steps, first and last losses, model, batch, peak lr) and overlays
 * their curves of one metric in one chart (lib/experiment/compare.ts). `--help` lists the flags.
 *
 * @module
 */
import { E } from "../lib/deps.ts";
import { message } from "../lib/core/fs.ts";
import { compareRuns, parseCompareArgs } from "../lib/experiment/compare.ts";

const cmd = parseCompareArgs(Deno.args);
if (E.isLeft(cmd)) {
  console.error(`compare: ${cmd.left}`);
  Deno.exit(2);
}
if (cmd.right.kind === "help") {
  console.log(cmd.right.text);
  Deno.exit(0);
}
try {
  const r = await compareRuns(cmd.right.options);
  if (E.isLeft(r)) {
    console.error(`compare: ${r.left}`);
    Deno.exit(1);
  }
  r.right.notes.forEach((n) => console.log(n));
  console.log(r.right.table);
  if (r.right.out !== undefined) console.log(`compare: wrote ${r.right.out}`);
} catch (e) {
  console.error(`compare: ${message(e)}`);
  Deno.exit(1);
}
