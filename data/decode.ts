/**
 * Image decoding: bytes -> {@link RgbImage}, or a message naming the file and what is wrong with it.
 * A file that cannot be decoded (corrupt, truncated, not an image, an unsupported format) is never an
 * exception here: the loader skips it, warns and counts it.
 *
 * Decoders, chosen by measurement (2-core dev machine, Deno 2.9.6, one thread, median of 30 decodes;
 * reference pixels from Pillow 9.4 / libjpeg-turbo, which the official PyTorch code decodes with):
 *
 * | file (synthetic photo-like, q90)  | @jsquash/jpeg 1.6 (wasm) | jpeg-js 0.4.4 (JS)  | sharp 0.34 (native) |
 * | --------------------------------- | ------------------------ | ------------------- | ------------------- |
 * | JPEG 224x224 baseline             | 5.5 ms, exact            | 11.4 ms, max err 43 | 4.1 ms, exact       |
 * | JPEG 500x375 baseline             | 11.4 ms, exact           | 34 ms, max err 43   | 5.1 ms, exact       |
 * | JPEG 500x375 progressive          | 12.2 ms, exact           | 43 ms, max err 44   | 5.3 ms, exact       |
 * | JPEG CMYK 300x200                 | rejected                 | 20 ms, max err 1    | max err 130         |
 *
 * | PNG                 | @jsquash/png 3.1 (wasm) | fast-png 8.0  | pngjs 7.0 |
 * | ------------------- | ----------------------- | ------------- | --------- |
 * | 224x224 RGB         | 2.6 ms                  | 6.6 ms        | 13.6 ms   |
 * | 500x375 RGB         | 8.0 ms                  | 18.4 ms       | 25 ms     |
 * | palette, grey, RGBA | exact                   | palette: raw indices | exact |
 *
 * jpeg-js skips libjpeg's "fancy" chroma upsampling, hence its errors of up to 43 levels on
 * colourful 4:2:0 images; @jsquash/jpeg is libjpeg-turbo itself and matches Pillow byte for byte.
 * sharp is faster but a native add-on (libvips binaries, FFI permission, no Workers guarantee), so it is
 * left out. So: @jsquash/jpeg for JPEG, jpeg-js only for the CMYK/YCCK JPEGs this MozJPEG build
 * refuses ("Unsupported color conversion request"; ImageNet has 22 of them), @jsquash/png for PNG.
 * The format is sniffed from the bytes, never from the name. EXIF orientation is ignored, as Pillow's
 * `Image.open` ignores it. A JPEG whose entropy-coded data ends before the end-of-image marker is
 * truncated (libjpeg would pad it with grey, Pillow refuses it: "image file is truncated"): it is skipped.
 * An image whose header claims more than {@link MAX_PIXELS} pixels is refused before it is decoded (a
 * decompression bomb is a few hundred KB that decode to gigabytes).
 *
 * @module
 */
import { E, jpegJs, mozjpegDecoder, pngDecodeWasm, pngInitWasm } from "../lib/deps.ts";
import { type RgbImage, toRgb } from "./image.ts";

export type { RgbImage } from "./image.ts";

// libjpeg's messages for the file being decoded (it reports warnings and errors through stderr).
const jpegMessages: string[] = [];
const mozjpeg = await mozjpegDecoder({
  noInitialRun: true,
  print: (m: string) => jpegMessages.push(m),
  printErr: (m: string) => jpegMessages.push(m),
});
await pngInitWasm();

/**
 * Largest image accepted, in pixels: 8192 x 8192 (64 Mi pixels). The size is read from the header (JPEG
 * SOF, PNG IHDR) and checked before the decoder allocates anything, because a small file can claim a huge
 * image: a 249 KB PNG of 16000 x 16000 took 3.1 GB to decode, and a JPEG claiming 30000 x 30000 exhausted the
 * decoder's wasm heap. At the limit a decode holds about 7 bytes per pixel (RGBA out of the decoder, RGB
 * kept), 450 MB, in each Worker at once. ImageNet's largest images are far below it (under 20 megapixels).
 */
export const MAX_PIXELS = 8192 * 8192;

/** The formats {@link decodeImage} recognises from the first bytes. */
export type ImageFormat = "jpeg" | "png" | "gif" | "webp" | "bmp" | "tiff" | "unknown";

/** Sniffs the format from magic bytes. */
export const sniffFormat = (b: Uint8Array): ImageFormat => {
  const at = (i: number, ...xs: number[]) => xs.every((x, k) => b[i + k] === x);
  if (at(0, 0xff, 0xd8, 0xff)) return "jpeg";
  if (at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return "png";
  if (at(0, 0x47, 0x49, 0x46, 0x38)) return "gif";
  if (at(0, 0x52, 0x49, 0x46, 0x46) && at(8, 0x57, 0x45, 0x42, 0x50)) return "webp";
  if (at(0, 0x42, 0x4d)) return "bmp";
  if (at(0, 0x49, 0x49, 0x2a, 0x00) || at(0, 0x4d, 0x4d, 0x00, 0x2a)) return "tiff";
  return "unknown";
};

/**
 * Whether a JPEG's image data stops before its end-of-image marker. The marker segments are walked to the
 * first start-of-scan (FFDA); after it, an FFD9 must follow: inside entropy-coded data a 0xFF byte is
 * always followed by 0x00 or a restart marker, so FFD9 there is the real end (an EXIF thumbnail's FFD9
 * lies before the first scan). When the walk itself breaks or runs off the end, libjpeg judges instead.
 */
const jpegTruncated = (b: Uint8Array): boolean => {
  let i = 2;
  for (;;) {
    if (i + 4 > b.length || b[i] !== 0xff) return false;
    const m = b[i + 1];
    if (m === 0xff) {
      i++;
      continue;
    }
    if (m === 0xda) break;
    if (m === 0xd9) return false;
    if ((m >= 0xd0 && m <= 0xd7) || m === 0x01) {
      i += 2;
      continue;
    }
    i += 2 + ((b[i + 2] << 8) | b[i + 3]);
  }
  for (let j = b.length - 2; j > i; j--) if (b[j] === 0xff && b[j + 1] === 0xd9) return false;
  return true;
};

const hex = (b: Uint8Array) => Array.from(b.subarray(0, 8), (x) => x.toString(16).padStart(2, "0")).join(" ");

const checkSize = (name: string, w: number, h: number): E.Either<string, true> =>
  w * h > MAX_PIXELS
    ? E.left(
      `${name}: the header claims ${w}x${h} pixels (${(w * h / 1e6).toFixed(1)} megapixels), more than the ${
        (MAX_PIXELS / 1e6).toFixed(1)
      } megapixel limit (8192x8192, MAX_PIXELS in data/decode.ts); not decoded: resize it offline or remove it`,
    )
    : E.right(true);

/** Start-of-frame markers (SOF0..SOF15 without DHT C4, JPG C8 and DAC CC): they carry the image size. */
const isSof = (m: number) => m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;

/**
 * Width and height from a JPEG's frame header, walking the marker segments up to the first start-of-scan
 * (segment by segment, so an EXIF thumbnail's own frame header inside APP1 is skipped). Undefined when
 * the walk breaks or finds no frame header: then libjpeg judges the file.
 */
const jpegSize = (b: Uint8Array): { width: number; height: number } | undefined => {
  let i = 2;
  while (i + 4 <= b.length && b[i] === 0xff) {
    const m = b[i + 1];
    if (m === 0xff) {
      i++;
      continue;
    }
    if (m === 0xda || m === 0xd9) return undefined;
    if ((m >= 0xd0 && m <= 0xd7) || m === 0x01) {
      i += 2;
      continue;
    }
    if (isSof(m)) {
      if (i + 9 > b.length) return undefined;
      return { height: (b[i + 5] << 8) | b[i + 6], width: (b[i + 7] << 8) | b[i + 8] };
    }
    i += 2 + ((b[i + 2] << 8) | b[i + 3]);
  }
  return undefined;
};

const decodeJpeg = (bytes: Uint8Array, name: string): E.Either<string, RgbImage> => {
  if (jpegTruncated(bytes)) {
    return E.left(
      `${name}: truncated JPEG (no end-of-image marker after the image data); re-download or remove it`,
    );
  }
  // The pixel budget, from the frame header, before libjpeg allocates the image.
  const size = jpegSize(bytes);
  if (size) {
    const ok = checkSize(name, size.width, size.height);
    if (E.isLeft(ok)) return ok;
  }
  jpegMessages.length = 0;
  let img: ImageData | null = null;
  try {
    img = mozjpeg.decode(bytes, false);
  } catch {
    img = null;
  }
  const messages = jpegMessages.join("; ");
  if (/premature end/i.test(messages)) {
    return E.left(`${name}: truncated JPEG (${messages}); re-download or remove it`);
  }
  if (img) {
    const ok = checkSize(name, img.width, img.height);
    return E.isLeft(ok) ? ok : E.right(toRgb(img.width, img.height, img.data, 4));
  }
  if (/unsupported color conversion/i.test(messages)) {
    // CMYK / YCCK: jpeg-js converts these as Pillow does (Adobe inverted CMYK -> RGB).
    try {
      const r = jpegJs.decode(bytes, {
        useTArray: true,
        formatAsRGBA: false,
        maxResolutionInMP: MAX_PIXELS / 1e6,
        maxMemoryUsageInMB: 2048,
      });
      return E.right(toRgb(r.width, r.height, r.data, 3));
    } catch (e) {
      return E.left(`${name}: CMYK JPEG that jpeg-js could not decode either (${String(e)})`);
    }
  }
  return E.left(
    `${name}: corrupt JPEG (${messages || "the decoder gave no reason"}); re-encode or remove it`,
  );
};

/** Why a PNG failed, from its chunk structure (the wasm decoder only says that it failed). */
const pngProblem = (b: Uint8Array): string => {
  let i = 8;
  while (i + 8 <= b.length) {
    const len = ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
    const type = String.fromCharCode(b[i + 4], b[i + 5], b[i + 6], b[i + 7]);
    if (i + 12 + len > b.length) return `truncated PNG (chunk ${JSON.stringify(type)} runs past the end)`;
    if (type === "IEND") return "corrupt PNG (bad image data or checksum)";
    i += 12 + len;
  }
  return "truncated PNG (no IEND chunk)";
};

const decodePng = (bytes: Uint8Array, name: string): E.Either<string, RgbImage> => {
  // The pixel budget, from IHDR (always the first chunk), before letting the decoder allocate.
  if (bytes.length >= 24) {
    const w = ((bytes[16] << 24) | (bytes[17] << 16) | (bytes[18] << 8) | bytes[19]) >>> 0;
    const h = ((bytes[20] << 24) | (bytes[21] << 16) | (bytes[22] << 8) | bytes[23]) >>> 0;
    const ok = checkSize(name, w, h);
    if (E.isLeft(ok)) return ok;
  }
  try {
    const img = pngDecodeWasm(bytes);
    return E.right(toRgb(img.width, img.height, img.data, 4));
  } catch {
    return E.left(`${name}: ${pngProblem(bytes)}; re-encode or remove it`);
  }
};

/**
 * Decodes a JPEG or PNG file to 8-bit RGB (alpha dropped, grey replicated, as Pillow's `convert("RGB")`).
 * `name` only labels messages; it is never opened.
 *
 * @example
 * ```ts
 * import { decodeImage } from "./decode.ts";
 * import { E } from "../lib/deps.ts";
 * const r = decodeImage(new Uint8Array([1, 2, 3]), "junk.jpg");
 * if (!E.isLeft(r) || !r.left.startsWith("junk.jpg: ")) throw new Error("expected a named error");
 * ```
 */
export const decodeImage = (bytes: Uint8Array, name: string): E.Either<string, RgbImage> => {
  const format = sniffFormat(bytes);
  switch (format) {
    case "jpeg":
      return decodeJpeg(bytes, name);
    case "png":
      return decodePng(bytes, name);
    case "unknown":
      return E.left(
        bytes.length === 0
          ? `${name}: empty file`
          : `${name}: not a JPEG or PNG file (starts with ${hex(bytes)}); convert it or remove it`,
      );
    default:
      return E.left(
        `${name}: ${format.toUpperCase()} images are not supported (JPEG and PNG are); convert it`,
      );
  }
};

/**
 * Reads an image file and decodes it ({@link decodeImage}): JPEG or PNG to 8-bit RGB. Rejects with a
 * message naming the file: what is wrong with it (corrupt, truncated, another format, too large) or why
 * it could not be read.
 *
 * @example
 * ```ts
 * import { readImage } from "./decode.ts";
 * import { encodePng } from "../lib/deps.ts";
 * const file = await Deno.makeTempFile({ suffix: ".png" });
 * const rgba = new Uint8ClampedArray(3 * 2 * 4).fill(255);
 * await Deno.writeFile(file, new Uint8Array(await encodePng(new ImageData(rgba, 3, 2))));
 * const img = await readImage(file);
 * await Deno.remove(file);
 * if (img.width !== 3 || img.height !== 2 || img.data.length !== 18) throw new Error("unexpected");
 * ```
 */
export const readImage = async (path: string): Promise<RgbImage> => {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read it (${e instanceof Error ? e.message : String(e)})`);
  }
  const r = decodeImage(bytes, path);
  if (E.isLeft(r)) throw new Error(r.left);
  return r.right;
};
