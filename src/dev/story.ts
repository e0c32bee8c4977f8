import { PaymentResult, PaymentSession, RecoveryResult, SubscriptionStatus, type BillingEvent } from "../gen/proofgate/v1/billing.js";

export const DEMO_CUSTOMER = "cus_demo";
const SUB = "sub_demo";
const DAY = 86_400_000;

/** One beat of the demo: what happens, the events a billing system would send, or a wait. */
export interface Beat {
  readonly title: string;
  /** Events at the beat's instant; empty for a beat where only time passes. */
  readonly events: (now: number) => BillingEvent[];
  /** Time passes first (ms from the previous beat), so a window can end with no event. */
  readonly waitMs?: number;
}

let n = 0;
const event = (now: number, kind: BillingEvent["kind"], correlationId = ""): BillingEvent => ({
  eventId: `demo_${process.pid}_${++n}`,
  occurredAt: new Date(now),
  customerId: DEMO_CUSTOMER,
  subscriptionId: SUB,
  source: "demo",
  correlationId,
  kind,
});

const payment = (now: number, invoiceId: string, result: PaymentResult, start: number, end: number, failureReason = ""): BillingEvent =>
  event(now, {
    $case: "payment",
    value: { invoiceId, result, periodStart: new Date(start), periodEnd: new Date(end), planId: "premium", addonIds: [], quantity: 3, session: PaymentSession.PAYMENT_SESSION_OFF_SESSION, amountMinor: 14_700, currency: "EUR", failureReason },
  });

/**
 * The payment-driven lifecycle in seven beats. The first paid period lasts `periodMs` (seconds,
 * not a month) so the demo can show a paid period ending on time with no event at all.
 */
export function demoStory(periodMs: number): Beat[] {
  let periodStart = 0;
  let periodEnd = 0;
  return [
    {
      title: "Customer subscribes to premium (3 seats); no payment yet",
      events: (now) => [
        event(now, {
          $case: "subscription",
          value: { status: SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE, planId: "premium", addonIds: [], quantity: 3, currentPeriodStart: new Date(now), currentPeriodEnd: new Date(now + periodMs), cancelAt: undefined, trialEnd: undefined, version: 1 },
        }),
      ],
    },
    {
      title: "Checkout payment needs 3-D Secure",
      events: (now) => {
        periodStart = now;
        periodEnd = now + periodMs;
        return [payment(now, "in_demo_1", PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION, periodStart, periodEnd)];
      },
    },
    { title: "Customer authenticates; the payment succeeds", events: (now) => [payment(now, "in_demo_1", PaymentResult.PAYMENT_RESULT_SUCCEEDED, periodStart, periodEnd)] },
    { title: "The paid period ends (no event: the sidecar sees the time)", waitMs: periodMs, events: () => [] },
    {
      title: "Renewal charge fails (card_declined); a retry is scheduled",
      events: (now) => [
        payment(now, "in_demo_2", PaymentResult.PAYMENT_RESULT_FAILED, periodEnd, periodEnd + 30 * DAY, "card_declined"),
        event(now, { $case: "recovery", value: { invoiceId: "in_demo_2", result: RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED, nextAttemptAt: new Date(now + 3 * DAY) } }),
      ],
    },
    {
      title: "The retry succeeds: the renewal is recovered",
      events: (now) => [
        payment(now, "in_demo_2", PaymentResult.PAYMENT_RESULT_SUCCEEDED, periodEnd, periodEnd + 30 * DAY),
        event(now, { $case: "recovery", value: { invoiceId: "in_demo_2", result: RecoveryResult.RECOVERY_RESULT_RECOVERED, nextAttemptAt: undefined } }),
      ],
    },
    { title: "The renewal is fully refunded", events: (now) => [payment(now, "in_demo_2", PaymentResult.PAYMENT_RESULT_REFUNDED, periodEnd, periodEnd + 30 * DAY)] },
  ];
}
