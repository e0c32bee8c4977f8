import { SubscriptionStatus, PaymentResult, RecoveryResult } from "../gen/proofgate/v1/billing.js";
import { DisputePolicy, FeatureType, type Feature, type FeatureValue } from "../gen/proofgate/v1/catalog.js";
import { AccessStatus } from "../gen/proofgate/v1/check.js";
import { OverrideEffect, type AccessDocument, type InvoiceState, type SubscriptionAccess } from "../gen/proofgate/v1/document.js";
import type { CatalogIndex } from "../catalog/index.js";
import { DENIAL_PRECEDENCE, type Decision } from "./decision.js";

/**
 * A feature's value as one source grants it. `rank` orders generosity: the limit for numerics,
 * the position in the feature's declared values for strings, 1 for an enabled boolean.
 */
interface Value {
  readonly text: string;
  readonly limit: number | undefined;
  readonly rank: number;
}

/** What one source (an override or a subscription) says about the feature. */
interface Outcome {
  readonly status: AccessStatus;
  readonly reason: string;
  readonly value?: Value | undefined;
  readonly validUntilMs?: number | undefined;
}

const G = AccessStatus;

/**
 * The check rules (docs/check-rules.md): may the document's customer use `feature` at `nowMs`?
 * `doc` undefined means no document (UNKNOWN_CUSTOMER). Never throws; an unknown feature is
 * NOT_ENTITLED with a reason saying so. `quantity` applies to numeric features only.
 */
export function evaluate(doc: AccessDocument | undefined, catalog: CatalogIndex, feature: string, quantity: number | undefined, nowMs: number): Decision {
  if (!doc) return deny(G.ACCESS_STATUS_UNKNOWN_CUSTOMER, "No billing events have been seen for this customer.");
  const f = catalog.feature(feature);
  if (!f) return deny(G.ACCESS_STATUS_NOT_ENTITLED, `"${feature}" is not a feature in the catalog.`);

  const outcomes: Outcome[] = [];
  // Rules 2 and 3: overrides. An active DENY wins over everything.
  for (const o of doc.overrides) {
    if (o.feature !== feature && !(o.feature === "*" && o.effect === OverrideEffect.OVERRIDE_EFFECT_DENY)) continue;
    const started = o.validFromMs === 0 || nowMs >= o.validFromMs;
    const ended = o.validUntilMs !== 0 && nowMs >= o.validUntilMs;
    const until = o.validUntilMs || undefined;
    if (o.effect === OverrideEffect.OVERRIDE_EFFECT_DENY) {
      if (started && !ended) return deny(G.ACCESS_STATUS_BLOCKED, `Blocked by ${o.actor || "an operator"}: ${o.reason || "no reason given"}.`, until);
    } else if (o.effect === OverrideEffect.OVERRIDE_EFFECT_GRANT) {
      if (started && !ended) {
        outcomes.push({
          status: G.ACCESS_STATUS_GRANTED,
          reason: `Granted by ${o.actor || "an operator"}${until ? ` until ${when(until)}` : ""}: ${o.reason || "no reason given"}.`,
          value: valueOf(f, o.value ?? ENABLED, 1, catalog),
          validUntilMs: until,
        });
      } else if (ended) {
        outcomes.push({ status: G.ACCESS_STATUS_EXPIRED, reason: `An override granting it ended on ${when(o.validUntilMs)}.` });
      }
    }
  }
  for (const s of doc.subscriptions) {
    const outcome = subscriptionOutcome(s, f, catalog, nowMs);
    if (outcome) outcomes.push(outcome);
  }
  return decide(outcomes, f, quantity);
}

/** Every catalog feature, sorted by key. */
export function evaluateAll(doc: AccessDocument | undefined, catalog: CatalogIndex, nowMs: number): { feature: string; decision: Decision }[] {
  return catalog.featureKeys.map((feature) => ({ feature, decision: evaluate(doc, catalog, feature, undefined, nowMs) }));
}

/** Rules 6 and 7: any allowing source allows (the most generous wins); else the most informative denial. */
function decide(outcomes: readonly Outcome[], f: Feature, quantity: number | undefined): Decision {
  let best: Outcome | undefined;
  for (const o of outcomes) {
    if (o.status !== G.ACCESS_STATUS_GRANTED && o.status !== G.ACCESS_STATUS_GRACE_PERIOD) continue;
    if (!best || better(o, best)) best = o;
  }
  if (best?.value) {
    const v = best.value;
    if (f.type === FeatureType.FEATURE_TYPE_NUMERIC && quantity !== undefined && v.limit !== undefined && quantity > v.limit) {
      return {
        allowed: false,
        status: G.ACCESS_STATUS_LIMIT_EXCEEDED,
        reason: `Requested ${quantity} is above the limit of ${v.limit}.`,
        value: v.text,
        limit: v.limit,
        validUntilMs: best.validUntilMs,
      };
    }
    return { allowed: true, status: best.status, reason: best.reason, value: v.text, limit: v.limit, validUntilMs: best.validUntilMs };
  }
  for (const status of DENIAL_PRECEDENCE) {
    const o = outcomes.find((x) => x.status === status);
    if (o) return deny(o.status, o.reason, o.validUntilMs);
  }
  return deny(G.ACCESS_STATUS_NOT_ENTITLED, "No subscription or override includes this feature.");
}

function better(a: Outcome, b: Outcome): boolean {
  const ra = a.value?.rank ?? -1;
  const rb = b.value?.rank ?? -1;
  if (ra !== rb) return ra > rb;
  if (a.status !== b.status) return a.status === G.ACCESS_STATUS_GRANTED;
  return (a.validUntilMs ?? Infinity) > (b.validUntilMs ?? Infinity);
}

/** Rules 4 and 5 for one subscription; undefined when it never had the feature. */
function subscriptionOutcome(s: SubscriptionAccess, f: Feature, catalog: CatalogIndex, now: number): Outcome | undefined {
  const intent = s.intent;
  if (!intent) return undefined;
  const wantedValue = itemsValue(f, intent.planId, intent.addonIds, intent.quantity, catalog);
  if (!wantedValue) return undefined;
  const cancelAt = intent.cancelAtMs || undefined;
  const active = intent.status === SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE && (cancelAt === undefined || now < cancelAt);
  if (!active) {
    const paidEver = s.invoices.some((i) => i.payment === PaymentResult.PAYMENT_RESULT_SUCCEEDED);
    if (intent.trialEndMs && intent.trialEndMs <= now && !paidEver)
      return { status: G.ACCESS_STATUS_EXPIRED, reason: `The trial ended on ${when(intent.trialEndMs)} without a payment.` };
    const at = intent.status === SubscriptionStatus.SUBSCRIPTION_STATUS_CANCELED ? "" : ` on ${when(cancelAt ?? 0)}`;
    return { status: G.ACCESS_STATUS_CANCELED, reason: `The subscription was canceled${at}.` };
  }
  const cap = (t: number): number => (cancelAt !== undefined && cancelAt < t ? cancelAt : t);

  // Trial.
  if (intent.trialEndMs > now)
    return { status: G.ACCESS_STATUS_GRANTED, reason: `In trial until ${when(intent.trialEndMs)}.`, value: wantedValue, validUntilMs: cap(intent.trialEndMs) };

  // Paid coverage containing now; what is paid for and still wanted (the lesser of the two).
  const revokedBy = (i: InvoiceState): string | undefined => revocation(i, catalog.disputePolicy);
  const covering = s.invoices.filter((i) => i.payment === PaymentResult.PAYMENT_RESULT_SUCCEEDED && i.periodStartMs <= now && now < i.periodEndMs);
  let paid: Outcome | undefined;
  let revoked: Outcome | undefined;
  for (const i of covering) {
    const v = meet(wantedValue, itemsValue(f, i.planId, i.addonIds, i.quantity, catalog));
    if (!v) continue;
    const why = revokedBy(i);
    if (why) {
      revoked ??= { status: G.ACCESS_STATUS_REVOKED, reason: `The payment for invoice ${i.invoiceId} ${why}.` };
      continue;
    }
    const o: Outcome = { status: G.ACCESS_STATUS_GRANTED, reason: `Paid through ${when(i.periodEndMs)} (invoice ${i.invoiceId}).`, value: v, validUntilMs: cap(i.periodEndMs) };
    if (!paid || better(o, paid)) paid = o;
  }
  if (paid) return paid;
  if (revoked) return revoked;

  // Grace: the latest paid window with the feature has ended and its renewal is being recovered.
  let lastPaid: { end: number; value: Value; invoice: InvoiceState } | undefined;
  for (const i of s.invoices) {
    if (i.payment !== PaymentResult.PAYMENT_RESULT_SUCCEEDED || i.periodEndMs > now || revokedBy(i)) continue;
    const v = meet(wantedValue, itemsValue(f, i.planId, i.addonIds, i.quantity, catalog));
    if (v && (!lastPaid || i.periodEndMs > lastPaid.end)) lastPaid = { end: i.periodEndMs, value: v, invoice: i };
  }
  const after = (i: InvoiceState): boolean => lastPaid === undefined || i.periodEndMs === 0 || i.periodEndMs > lastPaid.end;
  const unpaid = s.invoices.filter((i) => i.payment !== PaymentResult.PAYMENT_RESULT_SUCCEEDED && after(i));
  const exhausted = unpaid.find((i) => i.recovery === RecoveryResult.RECOVERY_RESULT_EXHAUSTED);
  const failed = unpaid.filter((i) => i.payment === PaymentResult.PAYMENT_RESULT_FAILED).at(-1);
  // Voided, or uncollectible without an attempt (e.g. paused collection): no payment is coming.
  const notCollected = unpaid.filter((i) => i.payment === PaymentResult.PAYMENT_RESULT_CANCELED && i.periodEndMs > 0).at(-1);
  // Due later without a failed attempt: an invoice sent with payment terms, awaited until its due date.
  const due = unpaid.filter((i) => i.payment === PaymentResult.PAYMENT_RESULT_UNSPECIFIED && i.recovery === RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED && i.nextAttemptAtMs > 0).at(-1);
  const inFlight = (r: PaymentResult): InvoiceState | undefined =>
    unpaid.filter((i) => i.payment === r && itemsValue(f, i.planId, i.addonIds, i.quantity, catalog)).at(-1);
  const authenticating = inFlight(PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION);
  const processing = inFlight(PaymentResult.PAYMENT_RESULT_PROCESSING);
  if (lastPaid && !exhausted && !notCollected) {
    const graceEnd = Math.max(lastPaid.end, due && !failed ? due.nextAttemptAtMs : 0) + catalog.gracePeriodMs;
    if (now < graceEnd) {
      const until = `paid access continues until ${when(graceEnd)}`;
      const reason = due && !failed && !authenticating
        ? `Renewal invoice ${due.invoiceId} is due on ${when(due.nextAttemptAtMs)}; ${until}.`
        : authenticating
        ? `Renewal requires customer authentication; ${until}.`
        : failed
          ? `Renewal failed${failed.failureReason ? ` (${failed.failureReason})` : ""}; ${until} while the payment is retried${retry(failed)}.`
          : `Renewal not yet confirmed; ${until}.`;
      return { status: G.ACCESS_STATUS_GRACE_PERIOD, reason, value: lastPaid.value, validUntilMs: cap(graceEnd) };
    }
  }

  if (authenticating) return { status: G.ACCESS_STATUS_PAYMENT_PENDING, reason: `Awaiting customer authentication (3-D Secure) for invoice ${authenticating.invoiceId}.` };
  if (processing) return { status: G.ACCESS_STATUS_PAYMENT_PENDING, reason: `Payment processing for invoice ${processing.invoiceId}.` };
  if (exhausted) return { status: G.ACCESS_STATUS_SUSPENDED, reason: `Payment recovery gave up on invoice ${exhausted.invoiceId}${exhausted.failureReason ? ` (${exhausted.failureReason})` : ""}.` };
  if (lastPaid && notCollected)
    return { status: G.ACCESS_STATUS_PAYMENT_REQUIRED, reason: `The paid period ended on ${when(lastPaid.end)} and renewal invoice ${notCollected.invoiceId} is not being collected (voided, or collection paused): pay to continue.` };
  if (lastPaid && failed)
    return { status: G.ACCESS_STATUS_SUSPENDED, reason: `The grace period ended on ${when(lastPaid.end + catalog.gracePeriodMs)} after a failed renewal${failed.failureReason ? ` (${failed.failureReason})` : ""}.` };
  if (lastPaid) return { status: G.ACCESS_STATUS_PAYMENT_REQUIRED, reason: `The paid period ended on ${when(lastPaid.end)} and no renewal payment arrived: pay to continue.` };
  if (intent.trialEndMs) return { status: G.ACCESS_STATUS_PAYMENT_REQUIRED, reason: `The trial ended on ${when(intent.trialEndMs)}: pay to activate.` };
  return { status: G.ACCESS_STATUS_PAYMENT_REQUIRED, reason: "Not paid for yet: pay to activate." };
}

/** Why a successful payment no longer grants, or undefined if it still does. */
function revocation(i: InvoiceState, policy: DisputePolicy): string | undefined {
  if (i.refunded) return `was refunded on ${when(i.refundedAtMs)}`;
  if (i.dispute === PaymentResult.PAYMENT_RESULT_DISPUTE_LOST) return `lost a dispute on ${when(i.disputeAtMs)}`;
  if (i.dispute === PaymentResult.PAYMENT_RESULT_DISPUTE_OPENED && policy !== DisputePolicy.DISPUTE_POLICY_KEEP_UNTIL_LOST)
    return `is disputed (since ${when(i.disputeAtMs)})`;
  return undefined;
}

const ENABLED: FeatureValue = { kind: { $case: "enabled", value: true } };

/** The most generous value the plan and add-ons give the feature, or undefined if none does. */
function itemsValue(f: Feature, planId: string, addonIds: readonly string[], quantity: number, catalog: CatalogIndex): Value | undefined {
  let best: Value | undefined;
  const consider = (fv: FeatureValue | undefined): void => {
    if (!fv) return;
    const v = valueOf(f, fv, quantity, catalog);
    if (v && (!best || v.rank > best.rank)) best = v;
  };
  if (planId) consider(catalog.planValue(planId, f.key));
  for (const a of addonIds) consider(catalog.addonValue(a, f.key));
  return best;
}

function valueOf(f: Feature, fv: FeatureValue, quantity: number, catalog: CatalogIndex): Value | undefined {
  const k = fv.kind;
  if (!k) return undefined;
  switch (k.$case) {
    case "enabled":
      return k.value ? { text: "true", limit: undefined, rank: 1 } : undefined;
    case "limit": {
      const limit = f.perUnit ? k.value * Math.max(1, quantity) : k.value;
      return { text: String(limit), limit, rank: limit };
    }
    case "text":
      return { text: k.value, limit: undefined, rank: catalog.stringRank(f.key, k.value) ?? 0 };
  }
}

/**
 * What is both wanted and paid for: the less generous of the two. String values without a
 * declared order only match when equal (an unknown order cannot say which is less).
 */
function meet(wanted: Value, paid: Value | undefined): Value | undefined {
  if (!paid) return undefined;
  if (wanted.limit === undefined && paid.limit === undefined && wanted.text !== paid.text && wanted.rank === paid.rank) return undefined;
  return paid.rank < wanted.rank ? paid : wanted;
}

function retry(i: InvoiceState): string {
  return i.recovery === RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED && i.nextAttemptAtMs ? ` (next attempt ${when(i.nextAttemptAtMs)})` : "";
}

function deny(status: AccessStatus, reason: string, validUntilMs?: number): Decision {
  return { allowed: false, status, reason, value: "", limit: undefined, validUntilMs };
}

const DAY_MS = 86_400_000;
const two = (n: number): string => (n < 10 ? `0${n}` : String(n));

/**
 * Reasons carry instants a human can read: `2026-12-08 00:00 UTC` (what `toISOString` gives, to
 * the minute). Most decisions format one, so this is on the hot path of every check: the civil
 * date comes from day arithmetic (H. Hinnant's days-to-civil) rather than a Date and an ISO string.
 */
export function when(ms: number): string {
  const days = Math.floor(ms / DAY_MS);
  const minutes = Math.floor((ms - days * DAY_MS) / 60_000);
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  // Four-digit years only; anything else (or an invalid instant) as toISOString writes it.
  if (!(year >= 1000 && year <= 9999)) return `${new Date(ms).toISOString().slice(0, 16).replace("T", " ")} UTC`;
  return `${year}-${two(month)}-${two(day)} ${two(Math.floor(minutes / 60))}:${two(minutes % 60)} UTC`;
}

/**
 * The first instant after `nowMs` at which any check of this document may answer differently:
 * the earliest override start or end, cancellation, trial end, invoice period start or end, or
 * grace end still ahead (Infinity if none). Every rule compares the clock with one of these
 * instants, so `evaluate(doc, catalog, f, q, t)` is the same for every t in [nowMs, result), for
 * every feature and quantity: answers can be reused until then, exactly. May be earlier than the
 * next change of a particular answer, never later.
 */
export function answersHoldUntil(doc: AccessDocument | undefined, catalog: CatalogIndex, nowMs: number): number {
  let next = Infinity;
  const consider = (t: number): void => {
    if (t > nowMs && t < next) next = t;
  };
  if (!doc) return next;
  for (const o of doc.overrides) {
    consider(o.validFromMs);
    consider(o.validUntilMs);
  }
  for (const s of doc.subscriptions) {
    const intent = s.intent;
    if (intent) {
      consider(intent.cancelAtMs);
      consider(intent.trialEndMs);
    }
    for (const i of s.invoices) {
      consider(i.periodStartMs);
      consider(i.periodEndMs);
      consider(i.periodEndMs + catalog.gracePeriodMs);
    }
  }
  return next;
}
