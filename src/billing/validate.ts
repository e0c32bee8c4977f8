import { InvalidArgumentError, quote } from "../errors/index.js";
import {
  PaymentResult,
  RecoveryResult,
  SubscriptionStatus,
  type BillingEvent,
} from "../gen/proofgate/v1/billing.js";
import type { CatalogIndex } from "../catalog/index.js";
import { enumLabel, isKnownEnum } from "./describe.js";
import { checkId as id, checkText as text } from "./ids.js";

/**
 * Limits on what an event may carry (docs/billing-events.md, "Limits"). They keep every
 * customer's access document far below NATS's max_payload, and every echo of input bounded.
 */
/** `source` and `correlation_id`. */
export const MAX_LABEL_BYTES = 256;
export const MAX_CURRENCY_BYTES = 16;
export const MAX_FAILURE_REASON_BYTES = 1024;
export const MAX_ADDONS = 64;
/** google.protobuf.Timestamp's range: 0001-01-01 to 9999-12-31. */
const MIN_TIME_MS = -62_135_596_800_000;
const MAX_TIME_MS = 253_402_300_799_999;

/** Where the writer's clock bounds `occurred_at`: events dated further ahead than `maxSkewMs` are rejected. */
export interface ClockBound {
  readonly now: number;
  readonly maxSkewMs: number;
}

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
export function validateEvent(e: BillingEvent, catalog?: CatalogIndex, clock?: ClockBound): void {
  id(e.eventId, "event_id");
  time(e.occurredAt, "occurred_at", true);
  if (clock && e.occurredAt && e.occurredAt.getTime() > clock.now + clock.maxSkewMs)
    throw new InvalidArgumentError(
      "occurred_at",
      `${e.occurredAt.toISOString()} is more than ${Math.round(clock.maxSkewMs / 1000)} s ahead of the writer's clock (${new Date(clock.now).toISOString()}); a future-dated event would outrank real ones`,
    );
  id(e.customerId, "customer_id");
  id(e.subscriptionId, "subscription_id");
  text(e.source, "source", MAX_LABEL_BYTES);
  text(e.correlationId, "correlation_id", MAX_LABEL_BYTES);
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
      text(p.currency, "payment.currency", MAX_CURRENCY_BYTES);
      text(p.failureReason, "payment.failure_reason", MAX_FAILURE_REASON_BYTES);
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

function time(v: Date | undefined, field: string, required: boolean): void {
  if (v === undefined) {
    if (required) throw new InvalidArgumentError(field, "required");
    return;
  }
  const ms = v instanceof Date ? v.getTime() : NaN;
  if (Number.isNaN(ms)) throw new InvalidArgumentError(field, "not a valid timestamp");
  if (ms < MIN_TIME_MS || ms > MAX_TIME_MS) throw new InvalidArgumentError(field, "outside 0001-01-01..9999-12-31");
}

function period(start: Date | undefined, end: Date | undefined, startField: string, endField: string, required: boolean): void {
  time(start, startField, required);
  time(end, endField, required);
  if (start && end && end.getTime() <= start.getTime()) throw new InvalidArgumentError(endField, `must be after ${startField.split(".").pop() ?? startField}`);
}

function items(planId: string, addonIds: string[], at: string, catalog: CatalogIndex | undefined): void {
  if (planId) id(planId, `${at}.plan_id`);
  if (addonIds.length > MAX_ADDONS) throw new InvalidArgumentError(`${at}.addon_ids`, `${addonIds.length} entries, above the limit of ${MAX_ADDONS}`);
  addonIds.forEach((a, i) => id(a, `${at}.addon_ids[${i}]`, "must not be empty"));
  if (!catalog) return;
  if (planId && !catalog.hasPlan(planId)) throw new InvalidArgumentError(`${at}.plan_id`, `unknown plan ${quote(planId)}`);
  addonIds.forEach((a, i) => {
    if (!catalog.hasAddon(a)) throw new InvalidArgumentError(`${at}.addon_ids[${i}]`, `unknown add-on ${quote(a)}`);
  });
}
