/**
 * `mod.ts` imported by URL, as a user's script does: this test serves the repository over HTTP on
 * 127.0.0.1 (its own server, port chosen by the OS), writes the README's import example (the ```ts block
 * of "Use it from your own script", URL filled in) into a temporary directory outside the repository and
 * runs it with `deno run -A --no-config --node-modules-dir=none`, so nothing of the repository's
 * deno.json, lock file or node_modules can help: the npm packages resolve from Deno's global cache (or
 * the npm registry). The script builds a tiny model and trains two steps.
 */
import { assert, assertEquals, assertMatch } from "../lib/core/std.ts";

const root = new URL("../", import.meta.url);

/** The first ```ts block under the README heading that starts with `heading`. */
const readmeBlock = async (heading: string): Promise<string> => {
  const readme = await Deno.readTextFile(new URL("README.md", root));
  const at = readme.indexOf(`\n${heading}`);
  assert(at >= 0, `README.md has no section "${heading}"`);
  const m = /```ts\n([\s\S]*?)```/.exec(readme.slice(at));
  assert(m !== null, `README.md section "${heading}" has no \`\`\`ts block`);
  return m[1];
};

const contentType = (path: string): string =>
  path.endsWith(".ts")
    ? "application/typescript; charset=utf-8"
    : path.endsWith(".js") || path.endsWith(".mjs")
    ? "application/javascript; charset=utf-8"
    : path.endsWith(".json")
    ? "application/json"
    : "application/octet-stream";

Deno.test("the README's script imports mod.ts by URL from outside the repo (--no-config) and trains two steps", async () => {
  const requested: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    requested.push(path);
    if (path.split("/").includes("..")) return new Response("bad path", { status: 400 });
    try {
      const body = await Deno.readFile(new URL(`.${path}`, root));
      return new Response(body, { headers: { "content-type": contentType(path) } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  const dir = await Deno.makeTempDir({ prefix: "caev2-url-import-" });
  try {
    assert(!dir.startsWith(decodeURIComponent(root.pathname)), "the script must live outside the repository");
    const placeholder = "https://<where-this-repo-is-served>/mod.ts";
    const example = await readmeBlock("## Use it from your own script");
    assert(example.includes(placeholder), `the README example imports ${placeholder}`);
    const url = `http://127.0.0.1:${server.addr.port}/mod.ts`;
    await Deno.writeTextFile(`${dir}/script.ts`, example.replace(placeholder, url));
    const env: Record<string, string> = { ...Deno.env.toObject(), NO_COLOR: "1" };
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", "--node-modules-dir=none", "script.ts"],
      cwd: dir,
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(r.stdout), err = new TextDecoder().decode(r.stderr);
    assertEquals(r.code, 0, `the script failed:\n${out}\n${err}`);
    const lines = out.trim().split("\n");
    assertMatch(lines[0], /^backend: (webgpu|wasm|cpu)/);
    const steps = lines.filter((l) => l.startsWith("step "));
    assertEquals(steps.length, 2, out);
    steps.forEach((l, i) => assertMatch(l, new RegExp(`^step ${i + 1} loss \\d\\.\\d{4} \\(visible `)));
    // It really came over HTTP, and no node_modules appeared next to the script.
    assert(requested.includes("/mod.ts") && requested.includes("/lib/deps.ts"), requested.join(" "));
    const entries = [...Deno.readDirSync(dir)].map((e) => e.name);
    assertEquals(entries, ["script.ts"]);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
