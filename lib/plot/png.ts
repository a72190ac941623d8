/**
 * SVG to PNG, for plots that people can open anywhere: resvg (github.com/linebender/resvg, a Rust SVG
 * renderer) compiled to wasm, `npm:@resvg/resvg-wasm@2.6.2`, with the DejaVu Sans subset of font.ts as
 * its only font (wasm sees no system fonts; and one font everywhere means the same SVG gives the same PNG
 * bytes on every machine).
 *
 * Chosen by measurement on the 2-core dev machine (2026-11-26): loading and compiling the 2.5 MB wasm
 * takes 35-80 ms once per process; rendering a 760 x 440 chart at 2x takes ~0.1-0.5 s (the first call
 * includes parsing the font). The alternatives from npm either need a native binary (`@resvg/resvg-js`,
 * `sharp`, `@napi-rs/canvas`, `canvas`) or are a whole canvas in JS that still needs a font file and an
 * SVG parser of our own (`pureimage`). `@resvg/resvg-wasm` needs neither.
 *
 * @module
 */
import { resvg as resvgPackage } from "../deps.ts";
import { FONT_FAMILY, fontBytes } from "./font.ts";

type ResvgModule = Awaited<ReturnType<typeof resvgPackage.load>>;

// A computed specifier, so that bundlers do not follow it into `import.source` (wasm_source.ts).
const WASM_SOURCE = "./wasm_source.ts";

// resvg's `initWasm` may run once per process: every caller shares this one initialisation.
let ready: Promise<ResvgModule> | undefined;
const resvg = (): Promise<ResvgModule> =>
  ready ??= (async () => {
    const m = await resvgPackage.load();
    const { importWasmSource } = await import(
      new URL(WASM_SOURCE, import.meta.url).href
    ) as typeof import("./wasm_source.ts");
    await m.initWasm(await importWasmSource(resvgPackage.wasm));
    return m;
  })();

/** Options of {@link svgToPng}. */
export interface PngOptions {
  /** Pixels per SVG unit (default 2: sharp on high-density screens). */
  readonly scale?: number;
}

/**
 * Rasterises an SVG document into PNG bytes (white background where the SVG has none).
 *
 * @example
 * ```ts
 * import { svgToPng } from "./png.ts";
 * const png = await svgToPng('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10"><text y="9">hi</text></svg>');
 * // The PNG signature, then the IHDR chunk: width 40, height 20 at the default scale 2.
 * const view = new DataView(png.buffer, png.byteOffset);
 * if (png[1] !== 0x50 || view.getUint32(16) !== 40 || view.getUint32(20) !== 20) throw new Error("not a 40x20 PNG");
 * ```
 */
export const svgToPng = async (svg: string, o: PngOptions = {}): Promise<Uint8Array> => {
  const m = await resvg();
  const r = new m.Resvg(svg, {
    font: { fontBuffers: [fontBytes()], defaultFontFamily: FONT_FAMILY, sansSerifFamily: FONT_FAMILY },
    fitTo: { mode: "zoom", value: o.scale ?? 2 },
    background: "#ffffff",
  });
  try {
    const image = r.render();
    try {
      return image.asPng();
    } finally {
      image.free();
    }
  } finally {
    r.free();
  }
};
