/**
 * The command line of `deno task experiment NAME [flags]`: the experiment's own flags (size, seeds, output
 * folder) and, for every run, any pretraining flag (`--steps 50`, `--data folder:PATH`, `--teacher FILE`,
 * `--backend wasm`, ...) decoded against the pretraining config's codec, so a typo is named with the
 * closest known flag.
 *
 * @module
 */
import { E } from "../deps.ts";
import { decodeWith } from "../config/codec.ts";
import { parseFlags } from "../config/flags.ts";
import { timestampedRunDir } from "../config/pretrain.ts";
import { PretrainConfigPatch } from "../config/pretrain.ts";
import {
  type Experiment,
  experiments,
  type ExperimentSize,
  experimentSizes,
  findExperiment,
} from "./registry.ts";
import type { ExperimentOptions } from "./plan.ts";

/** What the command line asks for. */
export type ExperimentCommand =
  | { readonly kind: "help"; readonly text: string }
  | { readonly kind: "list"; readonly text: string }
  | { readonly kind: "run"; readonly experiment: Experiment; readonly options: ExperimentOptions };

// Pretraining fields that the experiment sets itself: the run folders and their seeds.
const RESERVED = ["out", "resume", "seed"];

const runFields = Object.fromEntries(
  Object.entries(PretrainConfigPatch.optional).filter(([k]) => !RESERVED.includes(k)),
);

/** The `--help` text. */
export const experimentUsage = (): string =>
  [
    "Run a named experiment: several pretraining runs (settings x seeds), each evaluated, then report.md",
    "with a results table and plots (SVG and PNG).",
    "",
    "Usage: deno task experiment NAME [--size test|small|medium|large] [--seeds N] [--seed N] [--out DIR]",
    "                            [pretraining flags for every run] [--no-png] [--no-baseline]",
    "       deno task experiment --list",
    "",
    "  --size S         test (seconds), small (default: minutes on 2 CPU cores), medium, large (the paper's",
    "                   image size and models: a GPU, --teacher and --data)",
    "  --seeds N        seeds per setting (default 1): N runs of each setting, seeds --seed .. --seed+N-1",
    "  --seed N         first seed (default 0)",
    "  --seed-list A,B  explicit seeds instead of --seed/--seeds",
    "  --out DIR        experiment folder (default runs/<NAME>-<UTC timestamp>); rerunning into the same",
    "                   folder reuses finished runs and resumes an interrupted one",
    "  --no-png         write the plots as SVG only",
    "  --no-baseline    skip evaluating a random-init encoder per model",
    "  --list           the experiments and what they compare",
    "",
    "Any `deno task pretrain` flag except --out, --resume and --seed applies to every run, over the",
    "experiment's own settings (e.g. --steps 300, --backend wasm, --data folder:imagenet, --teacher FILE).",
    "",
    `Experiments: ${Object.keys(experiments).join(", ")}.`,
  ].join("\n");

/** `--list`: each experiment, its question and its grid at the default size. */
export const experimentList = (): string =>
  Object.values(experiments).map((e) =>
    [
      `${e.name}: ${e.title}`,
      `  settings (small): ${e.settings("small").map((s) => s.label).join("; ")}`,
      `  paper: ${e.paper}`,
    ].join("\n")
  ).join("\n\n");

const parseSeeds = (flags: Record<string, string | boolean>): E.Either<string, number[]> => {
  const int = (name: string, v: string, min: number): E.Either<string, number> =>
    /^\d+$/.test(v) && Number(v) >= min
      ? E.right(Number(v))
      : E.left(`--${name} ${v}: expected an integer >= ${min}`);
  if (typeof flags["seed-list"] === "string") {
    if (flags.seeds !== undefined || flags.seed !== undefined) {
      return E.left("--seed-list replaces --seed and --seeds: give one or the other");
    }
    const out: number[] = [];
    for (const s of flags["seed-list"].split(",")) {
      const v = int("seed-list", s.trim(), 0);
      if (E.isLeft(v)) return v;
      if (out.includes(v.right)) return E.left(`--seed-list: seed ${v.right} is given twice`);
      out.push(v.right);
    }
    return E.right(out);
  }
  const first = typeof flags.seed === "string" ? int("seed", flags.seed, 0) : E.right(0);
  const count = typeof flags.seeds === "string" ? int("seeds", flags.seeds, 1) : E.right(1);
  if (E.isLeft(first)) return first;
  if (E.isLeft(count)) return count;
  return E.right(Array.from({ length: count.right }, (_, i) => first.right + i));
};

/**
 * Decodes the arguments of `deno task experiment`. Left: what is wrong, for people.
 *
 * @example
 * ```ts
 * import { resolveExperimentArgs } from "./cli.ts";
 * const r = resolveExperimentArgs(["mask-ratio", "--size", "test", "--seeds", "2", "--steps", "5", "--out", "x"]);
 * if (r._tag === "Left" || r.right.kind !== "run") throw new Error("expected a run");
 * const o = r.right.options;
 * if (o.size !== "test" || o.seeds.join() !== "0,1" || o.overrides?.steps !== 5 || o.out !== "x") throw new Error();
 * if (resolveExperimentArgs(["mask-ratio", "--stpes", "5"])._tag !== "Left") throw new Error("typos are refused");
 * ```
 */
export const resolveExperimentArgs = (
  argv: readonly string[],
  now: Date = new Date(),
): E.Either<string, ExperimentCommand> => {
  if (argv.includes("--help") || argv.includes("-h")) {
    return E.right({ kind: "help", text: experimentUsage() });
  }
  if (argv.includes("--list")) return E.right({ kind: "list", text: experimentList() });
  const [name, ...rest] = argv;
  if (name === undefined || name.startsWith("-")) {
    return E.left(
      `name the experiment first: deno task experiment NAME [flags]; known: ${
        Object.keys(experiments).join(", ")
      }`,
    );
  }
  const exp = findExperiment(name);
  if (typeof exp === "string") return E.left(exp);
  const png = !rest.includes("--no-png");
  const baseline = !rest.includes("--no-baseline");
  const parsed = parseFlags(
    rest.filter((a) => a !== "--no-png" && a !== "--no-baseline"),
    runFields,
    { strings: ["size", "seeds", "seed", "seed-list", "out"] },
  );
  if (E.isLeft(parsed)) return E.left(`${parsed.left}\n(deno task experiment --help lists the flags)`);
  const { values, extras } = parsed.right;
  const size = (extras.size ?? "small") as string;
  if (!(experimentSizes as readonly string[]).includes(size)) {
    return E.left(`--size ${size}: expected one of ${experimentSizes.join(", ")}`);
  }
  const seeds = parseSeeds(extras);
  if (E.isLeft(seeds)) return seeds;
  const overrides = decodeWith(PretrainConfigPatch, values, "flags");
  if (E.isLeft(overrides)) return overrides;
  const out = typeof extras.out === "string"
    ? extras.out
    : timestampedRunDir(now).replace(/^runs\//, `runs/${name}-`);
  return E.right({
    kind: "run",
    experiment: exp,
    options: {
      size: size as ExperimentSize,
      seeds: seeds.right,
      out,
      overrides: overrides.right,
      png,
      baseline,
    },
  });
};
