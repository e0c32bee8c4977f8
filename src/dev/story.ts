import { PaymentResult, PaymentSession, RecoveryResult, type BillingEvent } from "../gen/proofgate/v1/billing.js";
import { BillingEvents } from "../billing/index.js";

export const DEMO_CUSTOMER = "cus_demo";
const DAY = 86_400_000;
let told = 0;

/** One beat of the demo: what happens, the events a billing system would send, or a wait. */
export interface Beat {
  readonly title: string;
  /** Events at the beat's instant; empty for a beat where only time passes. */
  readonly events: (now: number) => BillingEvent[];
  /** Time passes first (ms from the previous beat), so a window can end with no event. */
  readonly waitMs?: number;
}

/**
 * The payment-driven lifecycle in seven beats. The first paid period lasts `periodMs` (seconds,
 * not a month) so the demo can show a paid period ending on time with no event at all.
 */
export function demoStory(periodMs: number): Beat[] {
  // Event ids count across every story this process tells, so no two are deduplicated.
  const demo = new BillingEvents({ customerId: DEMO_CUSTOMER, subscriptionId: "sub_demo", source: "demo", eventId: () => `demo_${process.pid}_${++told}` });
  const payment = (now: number, invoiceId: string, result: PaymentResult, start: number, end: number, failureReason?: string): BillingEvent =>
    demo.payment(now, {
      invoiceId,
      result,
      periodStart: start,
      periodEnd: end,
      planId: "premium",
      quantity: 3,
      session: PaymentSession.PAYMENT_SESSION_OFF_SESSION,
      amountMinor: 14_700,
      currency: "EUR",
      ...(failureReason === undefined ? {} : { failureReason }),
    });
  let periodStart = 0;
  let periodEnd = 0;
  return [
    {
      title: "Customer subscribes to premium (3 seats); no payment yet",
      events: (now) => [demo.subscription(now, { planId: "premium", quantity: 3, currentPeriodStart: now, currentPeriodEnd: now + periodMs })],
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
        demo.recovery(now, "in_demo_2", RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED, now + 3 * DAY),
      ],
    },
    {
      title: "The retry succeeds: the renewal is recovered",
      events: (now) => [
        payment(now, "in_demo_2", PaymentResult.PAYMENT_RESULT_SUCCEEDED, periodEnd, periodEnd + 30 * DAY),
        demo.recovery(now, "in_demo_2", RecoveryResult.RECOVERY_RESULT_RECOVERED),
      ],
    },
    { title: "The renewal is fully refunded", events: (now) => [payment(now, "in_demo_2", PaymentResult.PAYMENT_RESULT_REFUNDED, periodEnd, periodEnd + 30 * DAY)] },
  ];
}
