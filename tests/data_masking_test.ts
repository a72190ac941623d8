/**
 * Masking: exact counts, determinism per key, block structure, and agreement with the official
 * generator. The reference masks below come from the official `MaskingGenerator` (Atten4Vis/CAE
 * furnace/masking_generator.py, copied verbatim) run under Python 3.11 with `random.uniform(a, b)` and
 * `random.randint(a, b)` replaced by a scripted stream: u = the top 53 bits of a 64-bit LCG
 * (s = s * 6364136223846793005 + 1442695040888963407 mod 2^64, starting from the seed),
 * uniform(a, b) = a + (b - a) u, randint(a, b) = a + floor(u (b - a + 1)). Keys: "<numMasked>_<seed>_<grid
 * side>_<min block>"; values: the grid row-major, 1 = masked.
 */
import { blockMasking, blockMaskingFrom, randomMasking } from "../data/masking.ts";
import { key } from "../lib/core/random.ts";
import { assert, assertEquals, assertGreater, assertLess, assertThrows } from "../lib/core/std.ts";

const OFFICIAL: Record<string, string> = {
  "30_1_14_16":
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000001111110000000011111100000000111111000000001111110000000011111100000000000000000000000000000000000000000000000",
  "49_2_14_16":
    "0000000000000000000000000000000011110000000011111100000000001111000000000011110000000001111100000000011111000000000111110000000000111100000000001111000000000011110000000000111100000000000000000000",
  "98_3_14_16":
    "0000000000000000000000000000000000000000000001111001111000011111111100000111111111000001111111110000011111111110000111111111100001111111111000011111111110000111111111100000011111111000000000111110",
  "98_4_14_16":
    "1111110000000011111100000000111111100000001111111100000011111111000000111111110000000011111100000000111111000000001111110000000011111100000000111111110000011111111100000111111111000001111100000000",
  "75_5_14_16":
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000111110000000001111100000000011111111111111111001111111111110011111111111100111111111111001111111111110000000000000000",
  "24_6_8_16": "0000000000000000000000000000000001111000011111100111111101111111",
  "10_7_4_4": "0110011001110111",
  "120_8_14_16":
    "0000000000000000000000000000000000000110000000000111100000000001111100111111111111001111111111110011111111111100111111111111101111111111110011111111111100111111111111001111111111110011111111111100",
};

/** The scripted stream of the reference run, as a sampler. */
const scripted = (seed: number) => {
  let s = BigInt(seed);
  const u = () => {
    s = (s * 6364136223846793005n + 1442695040888963407n) % 2n ** 64n;
    return Number(s >> 11n) / 2 ** 53;
  };
  return {
    next: u,
    uniform: (a: number, b: number) => a + (b - a) * u(),
    int: (a: number, b: number) => a + Math.floor(u() * (b - a + 1)),
  };
};

const sum = (m: Uint8Array) => m.reduce((a, b) => a + b, 0);

/** Number of 4-connected components of the masked patches. */
const components = (m: Uint8Array, side: number): number => {
  const seen = new Uint8Array(m.length);
  let n = 0;
  for (let s = 0; s < m.length; s++) {
    if (!m[s] || seen[s]) continue;
    n++;
    const stack = [s];
    seen[s] = 1;
    while (stack.length) {
      const p = stack.pop()!;
      const r = Math.floor(p / side), c = p % side;
      for (const [dr, dc] of [[1, 0], [-1, 0], [0, 1], [0, -1]]) {
        const rr = r + dr, cc = c + dc, q = rr * side + cc;
        if (rr >= 0 && rr < side && cc >= 0 && cc < side && m[q] && !seen[q]) {
          seen[q] = 1;
          stack.push(q);
        }
      }
    }
  }
  return n;
};

Deno.test("blockMasking matches the official generator draw for draw", () => {
  for (const [name, expected] of Object.entries(OFFICIAL)) {
    const [numMasked, seed, side, minPatches] = name.split("_").map(Number);
    const m = blockMaskingFrom(scripted(seed), { height: side, width: side, numMasked, minPatches });
    assertEquals(Array.from(m).join(""), expected, `mask ${name}`);
  }
});

Deno.test("blockMasking masks exactly N patches for ViT-T/S/B (30/49/98 of 14x14) and small grids", () => {
  for (const [side, n] of [[14, 30], [14, 49], [14, 98], [8, 24], [8, 32], [4, 8]]) {
    for (let s = 0; s < 40; s++) {
      const m = blockMasking(key(s), {
        height: side,
        width: side,
        numMasked: n,
        minPatches: side <= 4 ? 4 : 16,
      });
      assertEquals(m.length, side * side);
      assertEquals(sum(m), n, `grid ${side}, N ${n}, key ${s}`);
      assert(m.every((v) => v === 0 || v === 1));
    }
  }
  assertEquals(sum(blockMasking(key(0), { height: 14, width: 14, numMasked: 0 })), 0);
});

Deno.test("blockMasking is a function of the key", () => {
  const opts = { height: 14, width: 14, numMasked: 98 };
  assertEquals(blockMasking(key(5), opts), blockMasking(key(5), opts));
  const distinct = new Set(
    Array.from({ length: 20 }, (_, s) => Array.from(blockMasking(key(s), opts)).join("")),
  );
  assertGreater(distinct.size, 18);
});

Deno.test("blockMasking makes blocks, randomMasking scatters", () => {
  let blockParts = 0, randomParts = 0;
  for (let s = 0; s < 30; s++) {
    blockParts += components(blockMasking(key(s), { height: 14, width: 14, numMasked: 98 }), 14);
    randomParts += components(randomMasking(key(s), { height: 14, width: 14, numMasked: 98 }), 14);
  }
  // A BEiT mask of 98 patches is a few overlapping rectangles of >= 16 patches.
  assertLess(blockParts / 30, 4);
  assertGreater(randomParts / 30, 10);
  // 30 patches: one or two blocks of >= 16, sometimes a small last block for the remainder.
  let small = 0;
  for (let s = 0; s < 30; s++) {
    small += components(blockMasking(key(s), { height: 14, width: 14, numMasked: 30 }), 14);
  }
  assertLess(small / 30, 2.5);
});

Deno.test("blockMasking refuses what the official generator would loop on forever", () => {
  assertThrows(() => blockMasking(key(0), { height: 14, width: 14, numMasked: 197 }), Error, "0..196");
  assertThrows(() => blockMasking(key(0), { height: 1, width: 8, numMasked: 3 }), Error, "randomMasking");
  assertThrows(() => blockMasking(key(0), { height: 3, width: 3, numMasked: 9 }), Error, "could not place");
});

Deno.test("randomMasking: exact count, uniform coverage, deterministic", () => {
  const opts = { height: 8, width: 8, numMasked: 48 };
  const counts = new Array(64).fill(0);
  for (let s = 0; s < 400; s++) {
    const m = randomMasking(key(s), opts);
    assertEquals(sum(m), 48);
    m.forEach((v, i) => (counts[i] += v));
  }
  // Each patch is masked with probability 0.75: 300 of 400 expected, sd ~8.7.
  for (const c of counts) assert(c > 250 && c < 350, `patch masked ${c} of 400 times`);
  assertEquals(randomMasking(key(9), opts), randomMasking(key(9), opts));
});
