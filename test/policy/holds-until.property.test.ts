import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { CatalogIndex } from "../../src/catalog/index.js";
import { answersHoldUntil, evaluate, foldDocument } from "../../src/policy/index.js";
import type { AccessDocument } from "../../src/gen/proofgate/v1/document.js";
import { events, overrides, time } from "./arbitraries.js";
import { demoCatalog } from "./story.js";

const catalog = CatalogIndex.from(demoCatalog());
const features = [...catalog.featureKeys, "unknown-feature"];
const quantities = [undefined, 0, 1, 5, 50];

/** Every instant the document names, and its neighbours: where answers can change. */
function aroundBoundaries(doc: AccessDocument): number[] {
  const out: number[] = [];
  const add = (t: number): void => {
    if (t) out.push(t - 1, t, t + 1);
  };
  for (const o of doc.overrides) [o.validFromMs, o.validUntilMs].forEach(add);
  for (const s of doc.subscriptions) {
    if (s.intent) [s.intent.cancelAtMs, s.intent.trialEndMs, s.intent.currentPeriodEndMs].forEach(add);
    for (const i of s.invoices) [i.periodStartMs, i.periodEndMs, i.periodEndMs + catalog.gracePeriodMs, i.refundedAtMs, i.disputeAtMs, i.nextAttemptAtMs].forEach(add);
  }
  return out;
}

describe("answersHoldUntil", () => {
  it("bounds an interval in which every check answers as it does at its start, around every boundary", () => {
    fc.assert(
      fc.property(events, overrides, time, (es, os, now) => {
        const doc = foldDocument("cus_p", es, os);
        const until = answersHoldUntil(doc, catalog, now);
        expect(until).toBeGreaterThan(now);
        const later = aroundBoundaries(doc).filter((t) => t > now && t < until);
        if (Number.isFinite(until)) later.push(until - 1);
        for (const f of features)
          for (const q of quantities) {
            const answer = evaluate(doc, catalog, f, q, now);
            for (const t of later) expect(evaluate(doc, catalog, f, q, t)).toEqual(answer);
          }
      }),
      { numRuns: 500 },
    );
  });

  it("is one of the document's instants, or Infinity without a document", () => {
    fc.assert(
      fc.property(events, overrides, time, (es, os, now) => {
        const doc = foldDocument("cus_p", es, os);
        const until = answersHoldUntil(doc, catalog, now);
        if (Number.isFinite(until)) expect(aroundBoundaries(doc)).toContain(until);
      }),
      { numRuns: 200 },
    );
    expect(answersHoldUntil(undefined, catalog, 0)).toBe(Infinity);
  });
});
