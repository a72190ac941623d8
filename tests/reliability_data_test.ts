/**
 * The data side of the reliability issue (reproductions filed 2026-11-30): each case that used to hang
 * silently now ends within seconds naming its cause; decompression bombs are refused from their header;
 * `wds:DIR` names the path; symlink loops list each file once.
 *
 * Cases that hung on the old code did so without ever returning to the event loop (an inline loader spins
 * through promise callbacks; opening a FIFO blocks the thread), where no timer can fire. They run in a
 * child `deno run` that is killed at a deadline, so a hang fails the test instead of blocking the suite.
 * Fixtures are generated in temporary folders: small PNGs, and bombs made of compressed zeros.
 */
import { listFolder } from "../data/folder.ts";
import { encodePng } from "../lib/deps.ts";
import { assertEquals } from "../lib/core/std.ts";
import { withTmp } from "./helpers.ts";

/** A w x h RGBA image with some texture. */
const image = (w: number, h: number, seed = 0) => {
  const d = new Uint8ClampedArray(w * h * 4);
  for (let i = 0; i < w * h; i++) d.set([(i * 7 + seed * 40) % 256, (i * 13) % 256, seed * 20, 255], i * 4);
  return new ImageData(d, w, h);
};

/** `n` small PNGs in `dir` (created), named 00.png, 01.png, ... */
const writePngs = async (dir: string, n: number) => {
  await Deno.mkdir(dir, { recursive: true });
  for (let i = 0; i < n; i++) {
    await Deno.writeFile(
      `${dir}/${String(i).padStart(2, "0")}.png`,
      new Uint8Array(await encodePng(image(16, 12, i))),
    );
  }
};

// ---------------------------------------------------------------------------------------------------------
// 9. Symlink loops.

/** Resolves within `ms`, or fails naming `what` (for listings, which do return to the event loop). */
const within = async <T>(ms: number, what: string, p: Promise<T>): Promise<T> => {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: not done after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
};

Deno.test("a symlink back to an ancestor lists the 6 images once (it listed them 222 times)", async () => {
  await withTmp("caev2-rel-", async (dir) => {
    await writePngs(`${dir}/loop/a`, 6);
    await Deno.symlink("..", `${dir}/loop/a/up`);
    const { items } = await within(10_000, "listFolder", listFolder(`${dir}/loop`, "train"));
    assertEquals(items.map((i) => i.name), ["00", "01", "02", "03", "04", "05"].map((n) => `a/${n}.png`));
  });
});

Deno.test("symlinks: each real folder walked once, no file listed twice, links outside the root followed", async () => {
  await withTmp("caev2-rel-", async (dir) => {
    const root = `${dir}/root`;
    await writePngs(`${root}/a`, 6);
    await writePngs(`${root}/b`, 1);
    await writePngs(`${dir}/outside`, 2);
    await Deno.symlink("..", `${root}/a/up`); // to the root: a loop through every class
    await Deno.symlink(".", `${root}/a/self`); // to itself
    await Deno.symlink(`${root}/a`, `${root}/b/alias`); // a class folder inside another class
    await Deno.symlink("../a/00.png", `${root}/b/copy.png`); // a file listed already
    await Deno.symlink(`${dir}/outside`, `${root}/b/ext1`); // outside the root, twice
    await Deno.symlink(`${dir}/outside`, `${root}/b/ext2`);
    await Deno.symlink(`${dir}/outside/00.png`, `${root}/b/one.png`); // a file of a folder listed via ext1
    await Deno.symlink(`${dir}/outside/00.png`, `${root}/b/two.png`);
    await Deno.symlink(`${dir}/missing.png`, `${root}/b/dangling.png`); // listed; skipped with its reason when read
    const { items, classes } = await within(10_000, "listFolder", listFolder(root, "train"));
    assertEquals(classes, ["a", "b"]);
    // 10 listed (a: 6; b: 00.png, dangling.png, ext1/00.png, ext1/01.png); every 10th held out for val.
    assertEquals(items.map((i) => `${i.label} ${i.name}`), [
      ...["00", "01", "02", "03", "04", "05"].map((n) => `0 a/${n}.png`),
      "1 b/00.png",
      "1 b/dangling.png",
      "1 b/ext1/00.png",
    ]);
    const reals = await Promise.all(
      items.filter((i) => !i.name.includes("dangling")).map((i) => Deno.realPath(i.path)),
    );
    assertEquals(new Set(reals).size, reals.length, "no file twice");
    // The unlabelled layout (no class folders, so no folder links either: one would be a class).
    await Deno.mkdir(`${dir}/flat`);
    for (let i = 0; i < 3; i++) await Deno.copyFile(`${root}/a/0${i}.png`, `${dir}/flat/${i}.png`);
    await Deno.symlink("0.png", `${dir}/flat/same.png`);
    await Deno.symlink(`${dir}/outside/01.png`, `${dir}/flat/x.png`);
    await Deno.symlink(`${dir}/outside/01.png`, `${dir}/flat/y.png`);
    const flat = await within(10_000, "listFolder", listFolder(`${dir}/flat`, "train"));
    assertEquals(flat.items.map((i) => [i.name, i.label]), [["0.png", -1], ["1.png", -1], ["2.png", -1], [
      "x.png",
      -1,
    ]]);
  });
});
