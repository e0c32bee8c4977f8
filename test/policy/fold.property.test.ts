import { describe, expect, it } from "vitest";
import fc from "fast-check";
import type { BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { AccessDocument, type Override, type SubscriptionAccess } from "../../src/gen/proofgate/v1/document.js";
import { DisputePolicy, StalePolicy } from "../../src/gen/proofgate/v1/catalog.js";
import { CatalogIndex } from "../../src/catalog/index.js";
import { ALLOWED_STATUSES, evaluate, foldDocument } from "../../src/policy/index.js";
import { assembleDocument, foldPart, intentOf, invoiceOf, partOf } from "../../src/policy/fold.js";
import { BillingEvent as BillingEventCodec } from "../../src/gen/proofgate/v1/billing.js";
import { demoCatalog } from "./story.js";
import { events, longEvents, overrides, time } from "./arbitraries.js";

const RUNS = 2_000;
const bytes = (d: AccessDocument): string => Buffer.from(AccessDocument.encode(d).finish()).toString("hex");

/** As stored and read back by the writer. */
const stored = (es: readonly BillingEvent[]): BillingEvent[] => es.map((e) => BillingEventCodec.decode(BillingEventCodec.encode(e).finish()));

/**
 * The writer's incremental fold, in memory: each arriving fact is folded into the stored deciding
 * facts of its part only (`chunk` facts of one part at a time), and the document is assembled
 * from the parts.
 */
function incremental(customerId: string, arrivals: readonly BillingEvent[], overrides: readonly Override[]): AccessDocument {
  const subs = new Map<string, { intent: BillingEvent[]; invoices: Map<string, BillingEvent[]> }>();
  const ids = new Set<string>();
  let last = 0;
  for (const e of arrivals) {
    ids.add(e.eventId);
    last = Math.max(last, e.occurredAt?.getTime() ?? 0);
    const { subscriptionId, invoiceId } = partOf(e);
    let sub = subs.get(subscriptionId);
    if (!sub) {
      sub = { intent: [], invoices: new Map() };
      subs.set(subscriptionId, sub);
    }
    if (invoiceId === undefined) sub.intent = stored(foldPart(sub.intent, [e]));
    else sub.invoices.set(invoiceId, stored(foldPart(sub.invoices.get(invoiceId) ?? [], [e])));
  }
  const parts: SubscriptionAccess[] = [...subs.entries()].map(([subscriptionId, s]) => ({
    subscriptionId,
    intent: intentOf(s.intent),
    invoices: [...s.invoices.entries()].map(([invoiceId, deciding]) => invoiceOf(invoiceId, deciding)),
  }));
  return assembleDocument(customerId, parts, overrides, ids.size, last);
}

describe("fold", () => {
  it("is independent of arrival order and duplicates", () => {
    fc.assert(
      fc.property(
        events.chain((es) =>
          fc.tuple(
            fc.constant(es),
            fc.shuffledSubarray([...es, ...es], { minLength: es.length * 2, maxLength: es.length * 2 }),
            fc.subarray(es),
          ),
        ),
        overrides,
        ([es, shuffledTwice, extra], os) => {
          const reference = bytes(foldDocument("cus_p", es, os));
          const scrambled = [...shuffledTwice, ...extra];
          expect(bytes(foldDocument("cus_p", scrambled, [...os].reverse()))).toBe(reference);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("folds incrementally, fact by fact into stored parts, to the byte-identical document, for any order and duplication", () => {
    fc.assert(
      fc.property(
        fc.oneof(events, longEvents).chain((es) => fc.tuple(fc.constant(es), fc.shuffledSubarray([...es, ...es], { minLength: es.length, maxLength: es.length * 2 }))),
        overrides,
        ([es, arrivals], os) => {
          // Every fact arrives at least once, in any order, some twice.
          const all = [...arrivals, ...es.filter((e) => !arrivals.some((a) => a.eventId === e.eventId))];
          expect(bytes(incremental("cus_p", all, os))).toBe(bytes(foldDocument("cus_p", es, os)));
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("keeps at most seven deciding facts per part, however long the history", () => {
    fc.assert(
      fc.property(longEvents, (es) => {
        const byPart = new Map<string, BillingEvent[]>();
        for (const e of es) {
          const { subscriptionId, invoiceId } = partOf(e);
          const key = `${subscriptionId}/${invoiceId ?? ""}`;
          byPart.set(key, foldPart(byPart.get(key) ?? [], [e]));
        }
        for (const deciding of byPart.values()) expect(deciding.length).toBeLessThanOrEqual(7);
      }),
      { numRuns: RUNS / 4 },
    );
  });

  it("picks the same winner when two different events claim one id, whatever their order", () => {
    fc.assert(
      fc.property(events, (es) => {
        const clashing = es.map((e) => ({ ...e, eventId: "evt_same" }));
        expect(bytes(foldDocument("c", [...clashing].reverse(), []))).toBe(bytes(foldDocument("c", clashing, [])));
      }),
      { numRuns: RUNS / 4 },
    );
  });

  it("produces documents that evaluate without throwing, consistently, under both dispute policies", () => {
    const revoke = CatalogIndex.from(demoCatalog());
    const keep = CatalogIndex.from({ ...demoCatalog(), policy: { gracePeriod: undefined, coherencyWindow: undefined, stalePolicy: StalePolicy.STALE_POLICY_UNSPECIFIED, disputePolicy: DisputePolicy.DISPUTE_POLICY_KEEP_UNTIL_LOST } });
    const features = [...revoke.featureKeys, "unknown-feature"];
    fc.assert(
      fc.property(events, overrides, time, fc.option(fc.integer({ min: 0, max: 60 }), { nil: undefined }), (es, os, now, quantity) => {
        const doc = AccessDocument.decode(AccessDocument.encode(foldDocument("cus_p", es, os)).finish());
        for (const catalog of [revoke, keep]) {
          for (const f of features) {
            const d = evaluate(doc, catalog, f, quantity, now);
            expect(d.allowed).toBe(ALLOWED_STATUSES.has(d.status));
            expect(d.reason).not.toBe("");
            if (d.validUntilMs !== undefined) expect(Number.isFinite(d.validUntilMs)).toBe(true);
          }
        }
      }),
      { numRuns: RUNS / 2 },
    );
  });
});
