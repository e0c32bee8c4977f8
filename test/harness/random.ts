/**
 * Seeded randomness for tests: a generator whose seed is printed when the test fails, and a
 * deterministic shuffle, so a failing run can be repeated exactly.
 */
import { randomInt } from "node:crypto";
import { onTestFailed } from "vitest";

/** Small, fast, seedable PRNG (mulberry32): [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Rng {
  readonly seed: number;
  /** [0, 1) */
  next(): number;
  /** An integer in [min, max] (inclusive). */
  int(min: number, max: number): number;
  pick<T>(items: readonly T[]): T;
}

/**
 * A seeded generator for the current test: the seed is PROOFGATE_TEST_SEED when set, else
 * random, and is printed if the test fails so the run can be repeated. Call inside a test.
 */
export function testRng(): Rng {
  const fromEnv = process.env["PROOFGATE_TEST_SEED"];
  const seed = fromEnv ? Number(fromEnv) : randomInt(1, 2 ** 31 - 1);
  onTestFailed(() => {
    process.stderr.write(`\n*** random seed ${seed}: rerun with PROOFGATE_TEST_SEED=${seed}\n`);
  });
  const next = mulberry32(seed);
  return {
    seed,
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    pick<T>(items: readonly T[]): T {
      const item = items[Math.floor(next() * items.length)];
      if (item === undefined) throw new Error("pick from an empty list");
      return item;
    },
  };
}

/** Deterministic shuffle (xorshift), so a failure replays. */
export function shuffle<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let x = seed;
  for (let i = out.length - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const j = Math.abs(x) % (i + 1);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}
