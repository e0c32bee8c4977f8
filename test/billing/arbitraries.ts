import fc from "fast-check";
import { encodeEventJson } from "../../src/billing/index.js";
import { BillingEvent, PaymentResult, PaymentSession, RecoveryResult, SubscriptionStatus } from "../../src/gen/proofgate/v1/billing.js";

/** Arbitraries for billing events (fast-check): valid ones, and valid ones damaged in bytes or JSON. */

/** `payload`, `kind`, `occurred_at`, `payment.addon_ids[3]`… followed by the problem. */
export const FIELD_REASON = /^(payload|kind|[a-z_]+(\.[a-z_]+)?(\[\d+\])?): \S/;

const day = 86_400_000;
/** The arbitraries' clock: events are dated within 400 days before it. */
export const NOW = Date.parse("2026-11-30T00:00:00Z");
const date = fc.integer({ min: NOW - 400 * day, max: NOW }).map((ms) => new Date(ms));
const id = fc.stringMatching(/^[a-z0-9_]{1,24}$/);

/** Valid events, of every kind. */
export const validEvent: fc.Arbitrary<BillingEvent> = fc
  .record({
    eventId: id,
    occurredAt: date,
    customerId: id,
    subscriptionId: id,
    source: fc.constantFrom("stripe", "test", ""),
    correlationId: fc.string({ maxLength: 20 }),
    plan: id,
    start: date,
    kind: fc.constantFrom("subscription", "payment", "recovery"),
    result: fc.constantFrom(PaymentResult.PAYMENT_RESULT_SUCCEEDED, PaymentResult.PAYMENT_RESULT_FAILED, PaymentResult.PAYMENT_RESULT_REFUNDED),
    amount: fc.maxSafeInteger(),
    version: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  })
  .map((r) => {
    const periodEnd = new Date(r.start.getTime() + 30 * day);
    const kind: BillingEvent["kind"] =
      r.kind === "subscription"
        ? {
            $case: "subscription",
            value: { status: SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE, planId: r.plan, addonIds: [], quantity: 1, currentPeriodStart: r.start, currentPeriodEnd: periodEnd, cancelAt: undefined, trialEnd: undefined, version: r.version },
          }
        : r.kind === "payment"
          ? {
              $case: "payment",
              value: { invoiceId: r.plan, result: r.result, periodStart: r.start, periodEnd, planId: r.plan, addonIds: [], quantity: 1, session: PaymentSession.PAYMENT_SESSION_UNSPECIFIED, amountMinor: r.amount, currency: "EUR", failureReason: "" },
            }
          : { $case: "recovery", value: { invoiceId: r.plan, result: RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED, nextAttemptAt: periodEnd } };
    return { eventId: r.eventId, occurredAt: r.occurredAt, customerId: r.customerId, subscriptionId: r.subscriptionId, source: r.source, correlationId: r.correlationId, kind };
  });

/** A valid event's bytes with a few bytes overwritten, inserted or cut: reaches deep into the decoder. */
export const mutatedBytes: fc.Arbitrary<Uint8Array> = fc
  .tuple(validEvent, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom("set", "insert", "cut")), { minLength: 1, maxLength: 4 }))
  .map(([e, edits]) => {
    const b = [...BillingEvent.encode(e).finish()];
    for (const [at, byte, op] of edits) {
      const i = at % (b.length + 1);
      if (op === "set" && i < b.length) b[i] = byte;
      else if (op === "insert") b.splice(i, 0, byte);
      else b.splice(i, 1);
    }
    return Uint8Array.from(b);
  });

/** A valid event's JSON with one field (at any depth) replaced by arbitrary JSON, or an arbitrary key added. */
export const mutatedJson: fc.Arbitrary<string> = fc
  .tuple(validEvent, fc.nat(), fc.jsonValue({ maxDepth: 2 }), fc.boolean(), fc.string({ maxLength: 12 }))
  .map(([e, pick, value, add, key]) => {
    const o = JSON.parse(encodeEventJson(e)) as Record<string, unknown>;
    const kindKey = Object.keys(o).find((k) => ["subscription", "payment", "recovery"].includes(k)) ?? "";
    const inner = o[kindKey] as Record<string, unknown>;
    const targets: [Record<string, unknown>, string][] = [...Object.keys(o).map((k): [Record<string, unknown>, string] => [o, k]), ...Object.keys(inner).map((k): [Record<string, unknown>, string] => [inner, k])];
    const [target, k] = targets[pick % targets.length] ?? [o, "eventId"];
    target[add ? key : k] = value;
    return JSON.stringify(o);
  });

