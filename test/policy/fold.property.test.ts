import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  PaymentResult,
  RecoveryResult,
  SubscriptionStatus,
  type BillingEvent,
} from "../../src/gen/proofgate/v1/billing.js";
import { AccessDocument, OverrideEffect, type Override } from "../../src/gen/proofgate/v1/document.js";
import { DisputePolicy, StalePolicy } from "../../src/gen/proofgate/v1/catalog.js";
import { CatalogIndex } from "../../src/catalog/index.js";
import { ALLOWED_STATUSES, evaluate, foldDocument } from "../../src/policy/index.js";
import { DAY, T0, demoCatalog } from "./story.js";

const RUNS = 2_000;
const time = fc.integer({ min: T0 - 10 * DAY, max: T0 + 120 * DAY });
const optionalTime = fc.option(time.map((t) => new Date(t)), { nil: undefined });
const plan = fc.constantFrom("basic", "premium", "enterprise", "no-such-plan", "");
const addons = fc.subarray(["ai-assistant", "ai-assistant", "ghost"]);
const sub = fc.constantFrom("sub_1", "sub_2");
const invoice = fc.constantFrom("in_1", "in_2", "in_3", "in_4");
const enumValue = <T extends number>(e: Record<string, string | T>): fc.Arbitrary<T> =>
  fc.constantFrom(...Object.values(e).filter((v): v is T => typeof v === "number"));

const kind: fc.Arbitrary<BillingEvent["kind"]> = fc.oneof(
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

/** Events with distinct ids; duplicates in the tests are exact copies, as redelivery produces. */
const events = fc
  .array(fc.record({ occurredAt: time, subscriptionId: sub, kind }), { minLength: 0, maxLength: 25 })
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
