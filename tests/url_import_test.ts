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
      // --reload for this origin: Deno caches remote modules by URL, and an earlier run on the same port would
      // be served from that cache (old code, and no request reaching this server).
      args: [
        "run",
        "-A",
        "--no-config",
        "--node-modules-dir=none",
        `--reload=http://127.0.0.1:${server.addr.port}`,
        "script.ts",
      ],
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

/** The one-line servers of the README's "Serving the repository for import by URL" (its ```sh block). */
const readmeServers = async (): Promise<string[]> => {
  const readme = await Deno.readTextFile(new URL("README.md", root));
  const at = readme.indexOf("\n### Serving the repository for import by URL");
  assert(at >= 0, 'README.md has no section "### Serving the repository for import by URL"');
  const m = /```sh\n([\s\S]*?)```/.exec(readme.slice(at));
  assert(m !== null, "the serving section has no ```sh block");
  return m[1].trim().split("\n");
};

const freePort = (): number => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
};

/** Runs, outside the repository and without its config, a script that imports mod.ts from `base`. */
const importMod = async (base: string): Promise<{ code: number; out: string; err: string }> => {
  const dir = await Deno.makeTempDir({ prefix: "caev2-url-serve-" });
  try {
    await Deno.writeTextFile(
      `${dir}/script.ts`,
      `import { key, split } from "${base}/mod.ts";\nconsole.log("keys", split(key(0), 3).length);\n`,
    );
    const r = await new Deno.Command(Deno.execPath(), {
      // --reload for this origin: a cached earlier run on the same port would hide what this server sends.
      args: [
        "run",
        "-A",
        "--no-config",
        "--node-modules-dir=none",
        `--reload=${new URL(base).origin}`,
        "script.ts",
      ],
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
};

Deno.test("served as text/vnd.trolltech.linguist (python3 -m http.server on Debian), mod.ts is refused, saying why", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    try {
      const body = await Deno.readFile(new URL(`.${path}`, root));
      const type = path.endsWith(".ts") ? "text/vnd.trolltech.linguist" : contentType(path);
      return new Response(body, { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  try {
    const base = `http://127.0.0.1:${server.addr.port}`;
    const r = await importMod(base);
    assert(r.code !== 0, r.out);
    assertMatch(r.err, /Expected a JavaScript or TypeScript module, but identified a Unknown module/);
    assert(r.err.includes(`Specifier: ${base}/mod.ts`), r.err);
  } finally {
    await server.shutdown();
  }
});

Deno.test("the README's one-line servers send .ts as application/typescript, and mod.ts imports from them", async () => {
  const lines = await readmeServers();
  assertEquals(lines.map((l) => l.split(" ")[0]), ["python3", "deno"]);
  for (const line of lines) {
    const m = /^(\S+) (-c|eval) '(.*)'$/.exec(line);
    assert(m !== null, `not a one-line server: ${line}`);
    const port = freePort();
    // The README's port 8000 becomes a free one, on the loopback interface only.
    const code = m[3]
      .replace("port=8000", `port=${port}, bind="127.0.0.1"`)
      .replace("port: 8000", `port: ${port}, hostname: "127.0.0.1"`);
    assert(code !== m[3], `no port 8000 in ${line}`);
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(m[1] === "deno" ? Deno.execPath() : m[1], {
        args: [m[2], code],
        cwd: decodeURIComponent(root.pathname),
        stdout: "null",
        stderr: "null",
      }).spawn();
    } catch (e) {
      if (m[1] === "python3" && e instanceof Deno.errors.NotFound) continue; // no Python on this machine
      throw e;
    }
    try {
      const base = `http://127.0.0.1:${port}`;
      let res: Response | undefined;
      for (let i = 0; i < 100 && res === undefined; i++) {
        res = await fetch(`${base}/lib/deps.ts`).catch(() => undefined);
        if (res === undefined) await new Promise((ok) => setTimeout(ok, 100));
      }
      assert(res !== undefined, `${m[1]}: the server did not answer on ${base}`);
      await res.body?.cancel();
      assertEquals(res.headers.get("content-type")?.split(";")[0], "application/typescript", m[1]);
      const r = await importMod(base);
      assertEquals([r.code, r.out.trim()], [0, "keys 3"], `${m[1]}: ${r.err}`);
    } finally {
      child.kill("SIGTERM");
      await child.status;
    }
  }
});
