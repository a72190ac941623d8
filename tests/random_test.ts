import { bits, foldIn, key, permutation, sampler, split, threefry2x32 } from "../lib/core/random.ts";
import { assert, assertEquals, assertNotEquals } from "../lib/core/std.ts";

Deno.test("threefry2x32 matches the Random123 known-answer vectors (20 rounds)", () => {
  const hex = (x: [number, number]) => x.map((v) => v.toString(16).padStart(8, "0"));
  assertEquals(hex(threefry2x32([0, 0], 0, 0)), ["6b200159", "99ba4efe"]);
  assertEquals(hex(threefry2x32([0xffffffff, 0xffffffff], 0xffffffff, 0xffffffff)), ["1cb996fc", "bb002be7"]);
  assertEquals(hex(threefry2x32([0x13198a2e, 0x03707344], 0x243f6a88, 0x85a308d3)), ["c4923a9c", "483df7a0"]);
});

Deno.test("keys are deterministic and derived keys differ", () => {
  assertEquals(split(key(7)), split(key(7)));
  const [a, b] = split(key(7));
  assertNotEquals(a, b);
  assertEquals(foldIn(key(1), 5), foldIn(key(1), 5));
  assertNotEquals(foldIn(key(1), 5), foldIn(key(1), 6));
  assertNotEquals(key(-1), key(1));
});

Deno.test("bits are roughly uniform and permutations are permutations", () => {
  const b = bits(key(3), 10000);
  const mean = b.reduce((s, v) => s + v / 2 ** 32, 0) / b.length;
  assert(Math.abs(mean - 0.5) < 0.02, `mean ${mean}`);
  const p = permutation(key(4), 100);
  assertEquals([...p].sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i));
  const s1 = sampler(key(9)), s2 = sampler(key(9));
  for (let i = 0; i < 5; i++) assertEquals(s1.next(), s2.next());
});
