/**
 * The floors of the house (docs/design.md, "The floors"): every relative import in lib/, data/ and tasks/
 * goes to the same folder or to a folder on a lower floor of the diagram in docs/design.md, so there is no
 * loop between folders and `lib/core` imports nothing above it. The diagram is read from the document itself:
 * moving a folder there is what changes the rule.
 */
import { assertEquals } from "../lib/core/std.ts";

const root = new URL("../", import.meta.url).pathname;

/** Floor of each folder, 0 at the top, from the diagram's code block. */
const floors = (): Map<string, number> => {
  const doc = Deno.readTextFileSync(`${root}docs/design.md`);
  const block = doc.slice(doc.indexOf("## The floors")).split("```")[1];
  const floor = new Map<string, number>();
  block.trim().split("\n").forEach((line, i) => {
    for (const word of line.trim().split(/\s+/)) {
      const m = /^(tasks|data|lib\/[a-z_]+)\/?$/.exec(word);
      if (m) floor.set(m[1], i);
    }
  });
  return floor;
};

/** The folder a repository path belongs to: `lib/<name>`, `data` or `tasks`; null for `lib/deps.ts`. */
const folderOf = (path: string): string | null => {
  const parts = path.split("/");
  if (parts[0] === "lib") return parts.length > 2 ? `lib/${parts[1]}` : null;
  return parts[0];
};

const walk = function* (dir: string): Generator<string> {
  for (const e of Deno.readDirSync(`${root}${dir}`)) {
    if (e.isDirectory) yield* walk(`${dir}/${e.name}`);
    else if (e.isFile && e.name.endsWith(".ts")) yield `${dir}/${e.name}`;
  }
};

/** Every relative `import ... from` / `export ... from` of a file, as repository paths. */
const importsOf = (file: string): string[] => {
  const src = Deno.readTextFileSync(`${root}${file}`);
  const dir = file.split("/").slice(0, -1).join("/");
  const out: string[] = [];
  for (const m of src.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"(\.{1,2}\/[^"]+)"/gm)) {
    const parts = [...dir.split("/"), ...m[1].split("/")];
    const resolved: string[] = [];
    for (const p of parts) {
      if (p === "..") resolved.pop();
      else if (p !== ".") resolved.push(p);
    }
    out.push(resolved.join("/"));
  }
  return out;
};

Deno.test("docs/design.md's diagram places every folder of lib/, data/ and tasks/", () => {
  const floor = floors();
  const folders = [...Deno.readDirSync(`${root}lib`)].filter((e) => e.isDirectory).map((e) =>
    `lib/${e.name}`
  );
  const missing = [...folders, "data", "tasks"].filter((f) => !floor.has(f));
  assertEquals(missing, [], "folders missing from the diagram");
});

/** The imports among `edges` (file, target) that go up or sideways. */
const violations = (edges: readonly (readonly [string, string])[], floor: Map<string, number>): string[] =>
  edges.filter(([file, target]) => {
    const from = folderOf(file), to = folderOf(target);
    return from !== null && to !== null && to !== from && !(floor.get(to)! > floor.get(from)!);
  }).map(([file, target]) => `${file} -> ${target}`);

Deno.test("every import goes to the same folder or a lower floor (so lib/core imports nothing above it)", () => {
  const edges: [string, string][] = [];
  for (const top of ["lib", "data", "tasks"]) {
    for (const file of walk(top)) for (const target of importsOf(file)) edges.push([file, target]);
  }
  // The check saw the code: the project has hundreds of imports.
  if (edges.length < 500) throw new Error(`only ${edges.length} imports were found`);
  assertEquals(violations(edges, floors()), [], "imports that go up or sideways");
});

Deno.test("the check catches an import that goes up or sideways, and lets lib/deps.ts through", () => {
  const floor = floors();
  assertEquals(
    violations([
      ["lib/core/tree.ts", "lib/optim/apply.ts"],
      ["lib/eval/probe.ts", "lib/bench/step.ts"],
      ["lib/core/tree.ts", "lib/deps.ts"],
      ["lib/eval/probe.ts", "lib/train/step.ts"],
    ], floor),
    ["lib/core/tree.ts -> lib/optim/apply.ts", "lib/eval/probe.ts -> lib/bench/step.ts"],
  );
  assertEquals(importsOf("lib/optim/apply.ts").includes("lib/core/tree.ts"), true);
});
