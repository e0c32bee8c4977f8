import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { when } from "../../src/policy/evaluate.js";

const iso = (ms: number): string => `${new Date(ms).toISOString().slice(0, 16).replace("T", " ")} UTC`;

describe("when (the instants in reasons)", () => {
  it("writes what toISOString writes, to the minute, for any instant", () => {
    // Every instant a Date can hold, in whole milliseconds.
    fc.assert(
      fc.property(fc.integer({ min: -8.64e15, max: 8.64e15 }), (ms) => {
        expect(when(ms)).toBe(iso(ms));
      }),
      { numRuns: 20_000 },
    );
  });

  it("is exact at the edges of days, months, leap days and centuries", () => {
    const edges = ["1970-01-01T00:00:00Z", "1999-12-31T23:59:59.999Z", "2000-02-29T12:00:00Z", "2024-02-29T23:59:00Z", "2100-03-01T00:00:00Z", "1969-12-31T23:59:59.999Z", "0999-12-31T23:59:00Z", "9999-12-31T23:59:00Z"];
    for (const e of edges) {
      const ms = Date.parse(e);
      for (const d of [-60_001, -1, 0, 1, 59_999, 60_000]) expect(when(ms + d)).toBe(iso(ms + d));
    }
  });
});
