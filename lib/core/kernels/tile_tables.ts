/**
 * Tile tables shipped with the toolkit, one per adapter they were measured on (`deno task bench --tune
 * --out FILE` writes one; paste its JSON as an element here). lib/core/kernels/tile_table.ts validates
 * them like a file and uses the one whose `adapter` is the running adapter's description, after the
 * user's own (`CAEV2_TILE_TABLE`, the user cache).
 *
 * A module rather than JSON files beside it, so that importing mod.ts by URL needs no file read.
 *
 * Empty for now: the H200's table is measured at review (this session had no GPU; the software adapter's
 * table, docs/tuning.md, is not worth shipping: nobody trains there).
 *
 * @module
 */

/** Tile tables as parsed JSON (lib/core/kernels/tile_table.ts `TileTable`, validated on use). */
export const shippedTileTables: readonly unknown[] = [];
