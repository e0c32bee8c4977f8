import { bounded } from "../errors/index.js";
import { PaymentResult, RecoveryResult, SubscriptionStatus, type BillingEvent } from "../gen/proofgate/v1/billing.js";

/** `PaymentResult.PAYMENT_RESULT_SUCCEEDED` → `SUCCEEDED`; unknown numbers stay numbers. */
export function enumLabel(e: object, value: number, prefix: string): string {
  const name = (e as Record<number, string | undefined>)[value];
  return name ? name.replace(prefix, "") : String(value);
}

/** A set, non-zero value of a ts-proto enum (fromJSON maps unknown strings to -1). */
export function isKnownEnum(e: object, value: number): boolean {
  return value > 0 && typeof (e as Record<number, unknown>)[value] === "string";
}

/** Never throws: describing a rejected event must work whatever its dates hold. */
const iso = (d: Date | undefined): string => (d instanceof Date && Number.isFinite(d.getTime()) && Math.abs(d.getTime()) < 8.64e15 ? d.toISOString() : "an invalid date");
const day = (d: Date | undefined): string => (d ? iso(d).slice(0, 10) : "?");
const items = (plan: string, addons: string[], qty: number): string =>
  [plan, ...addons].filter(Boolean).join("+") + (qty > 1 ? ` x${qty}` : "");

/** One line for audit logs and `proofgate explain`, e.g. "payment SUCCEEDED for invoice in_1 (premium, 2026-11-01..2026-12-01)". */
export function describeEvent(e: BillingEvent): string {
  // Rejected events are described too, and their ids may be of any size.
  return bounded(describe(e), 1024);
}

function describe(e: BillingEvent): string {
  const k = e.kind;
  if (!k) return "event with no kind";
  switch (k.$case) {
    case "subscription": {
      const s = k.value;
      const parts = [`subscription ${e.subscriptionId} ${enumLabel(SubscriptionStatus, s.status, "SUBSCRIPTION_STATUS_")}`];
      if (s.planId) parts.push(`wants ${items(s.planId, s.addonIds, s.quantity)}`);
      if (s.trialEnd) parts.push(`trial until ${day(s.trialEnd)}`);
      if (s.cancelAt) parts.push(`cancels at ${iso(s.cancelAt)}`);
      return parts.join(", ");
    }
    case "payment": {
      const p = k.value;
      const what = p.planId || p.addonIds.length ? ` (${items(p.planId, p.addonIds, p.quantity)}, ${day(p.periodStart)}..${day(p.periodEnd)})` : "";
      const why = p.failureReason ? `: ${bounded(p.failureReason, 200)}` : "";
      return `payment ${enumLabel(PaymentResult, p.result, "PAYMENT_RESULT_")} for invoice ${p.invoiceId}${what}${why}`;
    }
    case "recovery": {
      const r = k.value;
      const next = r.nextAttemptAt ? `, next attempt ${iso(r.nextAttemptAt)}` : "";
      return `recovery ${enumLabel(RecoveryResult, r.result, "RECOVERY_RESULT_")} for invoice ${r.invoiceId}${next}`;
    }
  }
}
