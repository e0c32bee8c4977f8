/** fast-check arbitraries for one customer's billing facts and overrides (shared by the fold tests). */
import fc from "fast-check";
import { billingEvent } from "../../src/billing/index.js";
import { PaymentResult, RecoveryResult, SubscriptionStatus, type BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { OverrideEffect, type Override } from "../../src/gen/proofgate/v1/document.js";
import { DAY, T0 } from "./story.js";

export const time = fc.integer({ min: T0 - 10 * DAY, max: T0 + 120 * DAY });
const defaultPlan = fc.constantFrom("basic", "premium", "enterprise", "no-such-plan", "");
const defaultAddons = fc.subarray(["ai-assistant", "ai-assistant", "ghost"]);
const sub = fc.constantFrom("sub_1", "sub_2");
const invoice = fc.constantFrom("in_1", "in_2", "in_3", "in_4");
/** Enough invoices that a subscription keeps only its latest MAX_INVOICES_PER_SUBSCRIPTION. */
const manyInvoices = fc.integer({ min: 1, max: 40 }).map((n) => `in_${n}`);
export const enumValue = <T extends number>(e: Record<string, string | T>): fc.Arbitrary<T> =>
  fc.constantFrom(...Object.values(e).filter((v): v is T => typeof v === "number"));

/** What the event bodies draw from; the defaults are this file's (the fold tests'). */
export interface KindDomain {
  readonly invoice: fc.Arbitrary<string>;
  readonly plan?: fc.Arbitrary<string>;
  readonly addons?: fc.Arbitrary<string[]>;
  readonly time?: fc.Arbitrary<number>;
}

/** A BillingEvent body of any kind (subscription, payment, recovery) over a domain. */
export const kindOf = (d: KindDomain): fc.Arbitrary<BillingEvent["kind"]> => {
  const invoice = d.invoice;
  const plan = d.plan ?? defaultPlan;
  const addons = d.addons ?? defaultAddons;
  const optionalTime = fc.option((d.time ?? time).map((t) => new Date(t)), { nil: undefined });
  return fc.oneof(
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
};
const kind = kindOf({ invoice });

/** Events with distinct ids; duplicates in the tests are exact copies, as redelivery produces. */
const eventsOf = (k: fc.Arbitrary<BillingEvent["kind"]>, maxLength: number): fc.Arbitrary<BillingEvent[]> => fc
  .array(fc.record({ occurredAt: time, subscriptionId: sub, kind: k }), { minLength: 0, maxLength })
  .map((xs) =>
    xs.map((x, i) => billingEvent({ eventId: `evt_${i}`, customerId: "cus_p", subscriptionId: x.subscriptionId, source: "prop" }, x.occurredAt, x.kind)),
  );
export const events = eventsOf(kind, 25);
export const longEvents = eventsOf(kindOf({ invoice: manyInvoices }), 120);

export const overrides: fc.Arbitrary<Override[]> = fc.array(
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

