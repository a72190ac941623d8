/**
 * An image folder in ImageNet layout, as torchvision's `ImageFolder` reads it (which the official code
 * uses, furnace/datasets.py): classes are the sorted subfolder names, labels their indices, images every
 * file below a class folder (recursively, sorted) whose extension is an image one. Two layouts:
 * `root/<class>/...` and `root/train/<class>/...` with an optional `root/val/<class>/...`. When there is no
 * `val/`, the held-out split is every 10th image of the sorted list (indices 9, 19, ...), and training
 * uses the other nine in ten. A folder of images without class subfolders is read unlabelled (label -1).
 *
 * Symlinks are followed (os.walk(followlinks=True), as torchvision), but each real directory is walked once
 * and no file is listed twice, so a link back to an ancestor cannot loop: a repeated directory or a link to
 * a file listed already is left out. Names with an image extension that are not regular files (FIFOs,
 * devices) are listed, and refused without being opened when read (data/work.ts).
 *
 * @module
 */

/** torchvision's IMG_EXTENSIONS: files listed as images. Only JPEG and PNG decode; the rest are skipped
 * with a warning when read (converting them is the fix). */
export const IMAGE_EXTENSIONS: readonly string[] = [
  ".jpg",
  ".jpeg",
  ".png",
  ".ppm",
  ".bmp",
  ".pgm",
  ".tif",
  ".tiff",
  ".webp",
];

/** One image of a folder dataset. */
export interface FolderItem {
  /** Path to open. */
  readonly path: string;
  /** Path relative to the dataset root, for messages. */
  readonly name: string;
  readonly label: number;
}

/** A split of a folder dataset. */
export interface FolderSplit {
  readonly items: readonly FolderItem[];
  readonly classes: readonly string[];
}

const isImage = (name: string) => IMAGE_EXTENSIONS.some((e) => name.toLowerCase().endsWith(e));
const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

const isDir = async (p: string) => {
  try {
    return (await Deno.stat(p)).isDirectory;
  } catch {
    return false;
  }
};

/**
 * What one listing has seen, so that symlinks cannot make it list a file twice or loop: a link back to an
 * ancestor (`a/up -> ..`) made the old walk list 6 images 222 times (until the path got too long), and two
 * such links overflowed the stack. Each real directory is walked once (`dirs`, by real path); a regular
 * file's real path is its real directory's plus its name, so regular files cannot repeat, and only
 * symlinked files need their target's real path (`links`), checked against every walked directory at the end.
 */
interface Seen {
  readonly dirs: Set<string>;
  readonly links: { readonly path: string; readonly real: string }[];
}

const dirname = (p: string) => p.slice(0, Math.max(p.lastIndexOf("/"), 0)) || "/";
const join = (dir: string, name: string) => (dir === "/" ? `/${name}` : `${dir}/${name}`);

/**
 * Image files below `dir` (whose real path is `real`), recursively, sorted at each level (os.walk with
 * sorted names, following links), appended to `out`. A directory already walked (by real path) is skipped;
 * a symlinked file is recorded in `seen.links` for {@link dropRepeats}.
 */
const walk = async (dir: string, real: string, seen: Seen, out: string[]): Promise<void> => {
  if (seen.dirs.has(real)) return;
  seen.dirs.add(real);
  const entries: Deno.DirEntry[] = [];
  for await (const e of Deno.readDir(dir)) entries.push(e);
  entries.sort((a, b) => byName(a.name, b.name));
  for (const e of entries) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) {
      await walk(p, join(real, e.name), seen, out);
    } else if (e.isSymlink) {
      let target: string;
      try {
        target = await Deno.realPath(p);
      } catch {
        // A dangling link: listed when it has an image name, and skipped with its reason when read.
        if (isImage(e.name)) out.push(p);
        continue;
      }
      if (await isDir(target)) await walk(p, target, seen, out);
      else if (isImage(e.name)) {
        seen.links.push({ path: p, real: target });
        out.push(p);
      }
    } else if (isImage(e.name)) {
      // Regular files, and also FIFOs, sockets and devices with an image name: those are refused when
      // read (data/work.ts checks before opening), so that they are named and counted like corrupt files.
      out.push(p);
    }
  }
};

/**
 * Drops the symlinked files of `paths` that name a file listed already: one whose target lies in a walked
 * directory (the target itself is listed, as a regular file of that directory), or a second link to the
 * same target. Order is kept.
 */
const dropRepeats = (paths: string[], seen: Seen): string[] => {
  if (seen.links.length === 0) return paths;
  const drop = new Set<string>();
  const targets = new Set<string>();
  for (const l of seen.links) {
    const listedThere = seen.dirs.has(dirname(l.real)) && isImage(l.real.slice(l.real.lastIndexOf("/") + 1));
    if (listedThere || targets.has(l.real)) drop.add(l.path);
    targets.add(l.real);
  }
  return drop.size === 0 ? paths : paths.filter((p) => !drop.has(p));
};

const classDirs = async (root: string): Promise<string[]> => {
  const names: string[] = [];
  for await (const e of Deno.readDir(root)) {
    if (e.isDirectory || (e.isSymlink && (await isDir(`${root}/${e.name}`)))) names.push(e.name);
  }
  return names.sort(byName);
};

/**
 * Labelled items of one ImageFolder root, with labels from `classes`. One {@link Seen} for the whole root,
 * so a class folder linked into another class is listed once, under the first.
 */
const listRoot = async (root: string, classes: readonly string[], prefix: string): Promise<FolderItem[]> => {
  const seen: Seen = { dirs: new Set(), links: [] };
  const realRoot = await Deno.realPath(root);
  const item = (label: number) => (path: string): FolderItem => ({
    path,
    name: prefix + path.slice(root.length + 1),
    label,
  });
  if (classes.length === 0) {
    // No class folders: an unlabelled folder of images.
    const paths: string[] = [];
    await walk(root, realRoot, seen, paths);
    return dropRepeats(paths, seen).map(item(-1));
  }
  // The root itself counts as walked: a link from a class folder back to the root is a loop.
  seen.dirs.add(realRoot);
  const labelled: { path: string; label: number }[] = [];
  for (const [label, c] of classes.entries()) {
    const dir = `${root}/${c}`;
    if (!(await isDir(dir))) continue;
    const paths: string[] = [];
    await walk(dir, await Deno.realPath(dir), seen, paths);
    for (const path of paths) labelled.push({ path, label });
  }
  const kept = new Set(dropRepeats(labelled.map((l) => l.path), seen));
  return labelled.filter((l) => kept.has(l.path)).map((l) => item(l.label)(l.path));
};

/**
 * Lists a split of a folder dataset. Rejects (with what was expected) when the path is missing or holds
 * no images.
 */
export const listFolder = async (path: string, split: "train" | "val"): Promise<FolderSplit> => {
  const root = path.replace(/\/+$/, "") || "/";
  if (!(await isDir(root))) {
    throw new Error(
      `data: folder ${
        JSON.stringify(path)
      } is not a directory; pass --data folder:PATH with PATH/<class>/<image>.jpg`,
    );
  }
  const hasTrain = await isDir(`${root}/train`);
  const hasVal = await isDir(`${root}/val`);
  const trainRoot = hasTrain ? `${root}/train` : root;
  const trainClasses = (await classDirs(trainRoot)).filter((c) => hasTrain || c !== "val");
  const classes = hasVal
    ? [...new Set([...trainClasses, ...(await classDirs(`${root}/val`))])].sort(byName)
    : trainClasses;
  let items: FolderItem[];
  if (hasVal) {
    items = split === "val"
      ? await listRoot(`${root}/val`, classes, "val/")
      : await listRoot(trainRoot, classes, hasTrain ? "train/" : "");
  } else {
    const all = await listRoot(trainRoot, classes, hasTrain ? "train/" : "");
    items = all.filter((_, i) => (i % 10 === 9) === (split === "val"));
  }
  if (items.length === 0) {
    throw new Error(
      `data: no images for the ${split} split under ${
        JSON.stringify(path)
      }; expected PATH/<class>/<image>.jpg|png (or PATH/train/... and PATH/val/...)`,
    );
  }
  return { items, classes };
};
