/**
 * The one place that names external packages. Every specifier is a full `npm:pkg@version`, so `mod.ts`
 * imported by URL resolves without an import map.
 *
 * @module
 */
// This file is where inline `npm:` specifiers belong (URL imports of mod.ts need no import map).
// deno-lint-ignore-file no-import-prefix
// The umbrella package: tfjs-core alone registers no gradients (WebGPU backend needs them from here).
export * as tf from "npm:@tensorflow/tfjs@4.22.0";
// Side effect: registers the "webgpu" backend with tfjs-core.
import "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
export * as E from "npm:fp-ts@2.16.11/lib/Either.js";
export * as TE from "npm:fp-ts@2.16.11/lib/TaskEither.js";
export { pipe } from "npm:fp-ts@2.16.11/lib/function.js";
export * as t from "npm:io-ts@2.2.22";

// Deno std, from the npm package `deno-std` (JSR is out of reach here). Plain JS without declarations:
// typed wrappers live in lib/core/std.ts.
export * as stdAssert from "npm:deno-std@1.4.0/assert/mod.js";
export * as stdArgs from "npm:deno-std@1.4.0/cli/parse_args.js";
export * as stdBytes from "npm:deno-std@1.4.0/fmt/bytes.js";

// Image codecs for data/decode.ts, chosen by measurement (figures in data/decode.ts): MozJPEG
// (libjpeg-turbo) and the Rust png crate, compiled to wasm by @jsquash; jpeg-js for the CMYK/YCCK JPEGs
// that the MozJPEG build rejects. The encoders make test fixtures and the loader benchmark's images.
export { default as mozjpegDecoder } from "npm:@jsquash/jpeg@1.6.0/codec/dec/mozjpeg_dec.js";
export {
  decode as pngDecodeWasm,
  default as pngInitWasm,
} from "npm:@jsquash/png@3.1.1/codec/pkg/squoosh_png.js";
export { default as jpegJs } from "npm:jpeg-js@0.4.4";
export { default as encodeJpeg } from "npm:@jsquash/jpeg@1.6.0/encode.js";
export { default as encodePng } from "npm:@jsquash/png@3.1.1/encode.js";

// The wasm backend (registers "wasm"; its .wasm binaries load from the package folder on first use) and the
// WebGPU backend's class type (for its GPUDevice): lib/core/webgpu_errors.ts.
export * as tfWasm from "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
export type { WebGPUBackend } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";

// SVG -> PNG for experiment reports (lib/plot/png.ts): resvg compiled to wasm, no native binary, loaded
// on first use. The .wasm is loaded by a source-phase import of `wasm` (lib/plot/wasm_source.ts, which
// Deno resolves inside the npm package, local node_modules or global cache alike), kept out of the static
// module graph because bundlers (`deno bundle`, esbuild) cannot parse `import.source`.
export const resvg = {
  load: (): Promise<typeof import("npm:@resvg/resvg-wasm@2.6.2")> => import("npm:@resvg/resvg-wasm@2.6.2"),
  wasm: "npm:@resvg/resvg-wasm@2.6.2/index_bg.wasm",
} as const;
