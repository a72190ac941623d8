/**
 * A source-phase import (`import.source`, TC39 "Source Phase Imports") of a wasm module by specifier:
 * Deno compiles the `.wasm` wherever it resolves, `npm:` specifiers included, so a package's wasm loads
 * without knowing its path on disk. Loaded with a computed dynamic import by png.ts only: TypeScript and
 * bundlers (esbuild, `deno bundle`) cannot parse `import.source` yet, so this file stays out of every
 * static module graph.
 *
 * @module
 */

/** The compiled module at `specifier` (e.g. `npm:pkg@1.0.0/file.wasm`). */
export const importWasmSource = (specifier: string): Promise<WebAssembly.Module> =>
  // @ts-ignore: TypeScript does not parse source-phase imports; Deno runs them.
  import.source(specifier);
