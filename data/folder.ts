/**
 * An image folder in ImageNet layout, as torchvision's `ImageFolder` reads it (which the official code
 * uses, furnace/datasets.py): classes are the sorted subfolder names, labels their indices, images every
 * file below a class folder (recursively, sorted) whose extension is an image one. Two layouts:
 * `root/<class>/...` and `root/train/<class>/...` with an optional `root/val/<class>/...`. When there is no
 * `val/`, the held-out split is every 10th image of the sorted list (indices 9, 19, ...), and training
 * uses the other nine in ten. A folder of images without class subfolders is read unlabelled (label -1).
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

/** Image files below `dir`, recursively, sorted at each level (os.walk with sorted names). */
const walk = async (dir: string): Promise<string[]> => {
  const entries: Deno.DirEntry[] = [];
  for await (const e of Deno.readDir(dir)) entries.push(e);
  entries.sort((a, b) => byName(a.name, b.name));
  const out: string[] = [];
  for (const e of entries) {
    const p = `${dir}/${e.name}`;
    const d = e.isDirectory || (e.isSymlink && (await isDir(p)));
    if (d) out.push(...(await walk(p)));
    else if (isImage(e.name)) out.push(p);
  }
  return out;
};

const classDirs = async (root: string): Promise<string[]> => {
  const names: string[] = [];
  for await (const e of Deno.readDir(root)) {
    if (e.isDirectory || (e.isSymlink && (await isDir(`${root}/${e.name}`)))) names.push(e.name);
  }
  return names.sort(byName);
};

/** Labelled items of one ImageFolder root, with labels from `classes`. */
const listRoot = async (root: string, classes: readonly string[], prefix: string): Promise<FolderItem[]> => {
  if (classes.length === 0) {
    // No class folders: an unlabelled folder of images.
    return (await walk(root)).map((path) => ({
      path,
      name: prefix + path.slice(root.length + 1),
      label: -1,
    }));
  }
  const items: FolderItem[] = [];
  for (const [label, c] of classes.entries()) {
    const dir = `${root}/${c}`;
    if (!(await isDir(dir))) continue;
    for (const path of await walk(dir)) {
      items.push({ path, name: prefix + path.slice(root.length + 1), label });
    }
  }
  return items;
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
