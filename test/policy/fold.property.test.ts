import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  PaymentResult,
  RecoveryResult,
  SubscriptionStatus,
  type BillingEvent,
} from "../../src/gen/proofgate/v1/billing.js";
import { AccessDocument, OverrideEffect, type Override, type SubscriptionAccess } from "../../src/gen/proofgate/v1/document.js";
import { DisputePolicy, StalePolicy } from "../../src/gen/proofgate/v1/catalog.js";
import { CatalogIndex } from "../../src/catalog/index.js";
import { ALLOWED_STATUSES, evaluate, foldDocument } from "../../src/policy/index.js";
import { assembleDocument, foldPart, intentOf, invoiceOf, partOf } from "../../src/policy/fold.js";
import { BillingEvent as BillingEventCodec } from "../../src/gen/proofgate/v1/billing.js";
import { DAY, T0, demoCatalog } from "./story.js";

const RUNS = 2_000;
const time = fc.integer({ min: T0 - 10 * DAY, max: T0 + 120 * DAY });
const optionalTime = fc.option(time.map((t) => new Date(t)), { nil: undefined });
const plan = fc.constantFrom("basic", "premium", "enterprise", "no-such-plan", "");
const addons = fc.subarray(["ai-assistant", "ai-assistant", "ghost"]);
const sub = fc.constantFrom("sub_1", "sub_2");
const invoice = fc.constantFrom("in_1", "in_2", "in_3", "in_4");
/** Enough invoices that a subscription keeps only its latest MAX_INVOICES_PER_SUBSCRIPTION. */
const manyInvoices = fc.integer({ min: 1, max: 40 }).map((n) => `in_${n}`);
const enumValue = <T extends number>(e: Record<string, string | T>): fc.Arbitrary<T> =>
  fc.constantFrom(...Object.values(e).filter((v): v is T => typeof v === "number"));

const kindOf = (invoice: fc.Arbitrary<string>): fc.Arbitrary<BillingEvent["kind"]> => fc.oneof(
  fc.record({
    $case: fc.constant("subscription" as const),
    value: fc.record({
      status: enumValue(SubscriptionStatus),
      planId: plan,
      addonIds: addons,
      quantity: fc.integer({ min: 0, max: 20 }),
      currentPeriodStart: optionalTime,
      currentPeriodEnd: optionalTime,
      cancelAt: optionalTime,
      trialEnd: optionalTime,
      version: fc.integer({ min: 0, max: 4 }),
    }),
  }),
  fc.record({
    $case: fc.constant("payment" as const),
    value: fc.record({
      invoiceId: invoice,
      result: enumValue(PaymentResult),
      periodStart: optionalTime,
      periodEnd: optionalTime,
      planId: plan,
      addonIds: addons,
      quantity: fc.integer({ min: 0, max: 20 }),
      session: fc.constantFrom(0, 1, 2),
      amountMinor: fc.integer({ min: 0, max: 100_000 }),
      currency: fc.constant("EUR"),
      failureReason: fc.constantFrom("", "card_declined", "insufficient_funds"),
    }),
  }),
  fc.record({
    $case: fc.constant("recovery" as const),
    value: fc.record({ invoiceId: invoice, result: enumValue(RecoveryResult), nextAttemptAt: optionalTime }),
  }),
);
const kind = kindOf(invoice);

/** Events with distinct ids; duplicates in the tests are exact copies, as redelivery produces. */
const eventsOf = (k: fc.Arbitrary<BillingEvent["kind"]>, maxLength: number): fc.Arbitrary<BillingEvent[]> => fc
  .array(fc.record({ occurredAt: time, subscriptionId: sub, kind: k }), { minLength: 0, maxLength })
  .map((xs) =>
    xs.map(
      (x, i): BillingEvent => ({
        eventId: `evt_${i}`,
        occurredAt: new Date(x.occurredAt),
        customerId: "cus_p",
        subscriptionId: x.subscriptionId,
        source: "prop",
        correlationId: "",
        kind: x.kind,
      }),
    ),
  );
const events = eventsOf(kind, 25);
const longEvents = eventsOf(kindOf(manyInvoices), 120);

const overrides: fc.Arbitrary<Override[]> = fc.array(
  fc.record({
    overrideId: fc.constantFrom("o1", "o2", "o3"),
    feature: fc.constantFrom("*", "api-access", "seats", "support-tier", "ai-assistant"),
    effect: enumValue(OverrideEffect),
    value: fc.option(
      fc.oneof(
        fc.record({ kind: fc.record({ $case: fc.constant("limit" as const), value: fc.integer({ min: 0, max: 100 }) }) }),
        fc.record({ kind: fc.record({ $case: fc.constant("text" as const), value: fc.constantFrom("business", "weird") }) }),
        fc.record({ kind: fc.record({ $case: fc.constant("enabled" as const), value: fc.boolean() }) }),
      ),
      { nil: undefined },
    ),
    validFromMs: fc.oneof(fc.constant(0), time),
    validUntilMs: fc.oneof(fc.constant(0), time),
    reason: fc.constant("r"),
    actor: fc.constant("a"),
    createdAtMs: time,
  }),
  { maxLength: 3 },
).map((os) => [...new Map(os.map((o) => [o.overrideId, o])).values()]);

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

  it("keeps at most six deciding facts per part, however long the history", () => {
    fc.assert(
      fc.property(longEvents, (es) => {
        const byPart = new Map<string, BillingEvent[]>();
        for (const e of es) {
          const { subscriptionId, invoiceId } = partOf(e);
          const key = `${subscriptionId}/${invoiceId ?? ""}`;
          byPart.set(key, foldPart(byPart.get(key) ?? [], [e]));
        }
        for (const deciding of byPart.values()) expect(deciding.length).toBeLessThanOrEqual(6);
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
