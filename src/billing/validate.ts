import { InvalidArgumentError } from "../errors/index.js";
import {
  PaymentResult,
  RecoveryResult,
  SubscriptionStatus,
  type BillingEvent,
} from "../gen/proofgate/v1/billing.js";
import type { CatalogIndex } from "../catalog/index.js";
import { enumLabel, isKnownEnum } from "./describe.js";

export const MAX_ID_BYTES = 256;

/** Results that describe what an invoice pays for, so they must carry a period and items. */
const NEEDS_ITEMS = new Set([
  PaymentResult.PAYMENT_RESULT_SUCCEEDED,
  PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION,
  PaymentResult.PAYMENT_RESULT_PROCESSING,
]);

/**
 * Checks an event before it becomes a fact. Throws InvalidArgumentError naming the field in the
 * event's own (proto) field names. With a catalog, plans and add-ons must exist in it.
 */
export function validateEvent(e: BillingEvent, catalog?: CatalogIndex): void {
  id(e.eventId, "event_id");
  time(e.occurredAt, "occurred_at", true);
  id(e.customerId, "customer_id");
  id(e.subscriptionId, "subscription_id");
  const kind = e.kind;
  if (!kind) throw new InvalidArgumentError("kind", "one of subscription, payment or recovery is required");
  switch (kind.$case) {
    case "subscription": {
      const s = kind.value;
      if (s.status !== SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE && s.status !== SubscriptionStatus.SUBSCRIPTION_STATUS_CANCELED)
        throw new InvalidArgumentError("subscription.status", "must be ACTIVE or CANCELED");
      if (s.status === SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE && !s.planId)
        throw new InvalidArgumentError("subscription.plan_id", "required when status is ACTIVE");
      items(s.planId, s.addonIds, "subscription", catalog);
      uint(s.quantity, "subscription.quantity", 0xffff_ffff);
      uint(s.version, "subscription.version", Number.MAX_SAFE_INTEGER);
      period(s.currentPeriodStart, s.currentPeriodEnd, "subscription.current_period_start", "subscription.current_period_end", false);
      time(s.cancelAt, "subscription.cancel_at", false);
      time(s.trialEnd, "subscription.trial_end", false);
      return;
    }
    case "payment": {
      const p = kind.value;
      id(p.invoiceId, "payment.invoice_id");
      if (!isKnownEnum(PaymentResult, p.result))
        throw new InvalidArgumentError("payment.result", "required: SUCCEEDED, FAILED, REQUIRES_ACTION, PROCESSING, CANCELED, REFUNDED or DISPUTE_*");
      const required = NEEDS_ITEMS.has(p.result);
      period(p.periodStart, p.periodEnd, "payment.period_start", "payment.period_end", required);
      if (required && !p.planId && p.addonIds.length === 0)
        throw new InvalidArgumentError("payment.plan_id", `a ${enumLabel(PaymentResult, p.result, "PAYMENT_RESULT_")} payment must say what it pays for: plan_id or addon_ids`);
      items(p.planId, p.addonIds, "payment", catalog);
      uint(p.quantity, "payment.quantity", 0xffff_ffff);
      if (!Number.isSafeInteger(p.amountMinor)) throw new InvalidArgumentError("payment.amount_minor", "must be an integer");
      return;
    }
    case "recovery": {
      const r = kind.value;
      id(r.invoiceId, "recovery.invoice_id");
      if (!isKnownEnum(RecoveryResult, r.result))
        throw new InvalidArgumentError("recovery.result", "required: RETRY_SCHEDULED, EXHAUSTED or RECOVERED");
      time(r.nextAttemptAt, "recovery.next_attempt_at", false);
      return;
    }
  }
}

/** JSON decoding copies numbers as given; the encoder would throw on them later, far from the cause. */
function uint(v: number, field: string, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new InvalidArgumentError(field, `must be a whole number from 0 to ${max}, got ${v}`);
}

function id(v: string, field: string): void {
  if (!v) throw new InvalidArgumentError(field, "required");
  if (Buffer.byteLength(v, "utf8") > MAX_ID_BYTES) throw new InvalidArgumentError(field, `longer than ${MAX_ID_BYTES} bytes`);
}

function time(v: Date | undefined, field: string, required: boolean): void {
  if (v === undefined) {
    if (required) throw new InvalidArgumentError(field, "required");
    return;
  }
  if (Number.isNaN(v.getTime())) throw new InvalidArgumentError(field, "not a valid timestamp");
}

function period(start: Date | undefined, end: Date | undefined, startField: string, endField: string, required: boolean): void {
  time(start, startField, required);
  time(end, endField, required);
  if (start && end && end.getTime() <= start.getTime()) throw new InvalidArgumentError(endField, `must be after ${startField.split(".").pop() ?? startField}`);
}

function items(planId: string, addonIds: string[], at: string, catalog: CatalogIndex | undefined): void {
  addonIds.forEach((a, i) => {
    if (!a) throw new InvalidArgumentError(`${at}.addon_ids[${i}]`, "must not be empty");
  });
  if (!catalog) return;
  if (planId && !catalog.hasPlan(planId)) throw new InvalidArgumentError(`${at}.plan_id`, `unknown plan "${planId}"`);
  addonIds.forEach((a, i) => {
    if (!catalog.hasAddon(a)) throw new InvalidArgumentError(`${at}.addon_ids[${i}]`, `unknown add-on "${a}"`);
  });
}
