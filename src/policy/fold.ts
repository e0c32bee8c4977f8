import {
  BillingEvent,
  PaymentResult,
  RecoveryResult,
  type PaymentOutcome,
  type SubscriptionChanged,
} from "../gen/proofgate/v1/billing.js";
import type { AccessDocument, Intent, InvoiceState, Override, SubscriptionAccess } from "../gen/proofgate/v1/document.js";

/** Keeps documents small for long-lived customers; old invoices no longer decide anything. */
export const MAX_INVOICES_PER_SUBSCRIPTION = 24;

const TERMINAL_PAYMENTS = new Set([PaymentResult.PAYMENT_RESULT_SUCCEEDED, PaymentResult.PAYMENT_RESULT_FAILED, PaymentResult.PAYMENT_RESULT_CANCELED]);
const IN_FLIGHT_PAYMENTS = new Set([PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION, PaymentResult.PAYMENT_RESULT_PROCESSING]);
const DISPUTES = new Set([PaymentResult.PAYMENT_RESULT_DISPUTE_OPENED, PaymentResult.PAYMENT_RESULT_DISPUTE_WON, PaymentResult.PAYMENT_RESULT_DISPUTE_LOST]);
const TERMINAL_RECOVERIES = new Set([RecoveryResult.RECOVERY_RESULT_EXHAUSTED, RecoveryResult.RECOVERY_RESULT_RECOVERED]);

/**
 * A candidate for "the winning event" of some kind, with the key that decides it. Keys compare
 * element by element; the event id breaks the last tie, so no arrival order can matter.
 */
interface Pick<T> {
  readonly key: readonly (number | string)[];
  readonly event: BillingEvent;
  readonly value: T;
}

function later<T>(current: Pick<T> | undefined, candidate: Pick<T>): Pick<T> {
  if (!current) return candidate;
  for (let i = 0; i < candidate.key.length; i++) {
    const a = candidate.key[i] as number | string;
    const b = current.key[i] as number | string;
    if (a !== b) return a > b ? candidate : current;
  }
  return current;
}

interface InvoiceAcc {
  payment?: Pick<PaymentOutcome>;
  period?: Pick<PaymentOutcome>;
  refund?: Pick<PaymentOutcome>;
  lastRefund?: Pick<PaymentOutcome>;
  dispute?: Pick<PaymentOutcome>;
  recovery?: Pick<{ result: RecoveryResult; nextAttemptAt: Date | undefined }>;
  failure?: Pick<PaymentOutcome>;
}

interface SubscriptionAcc {
  intent?: Pick<SubscriptionChanged>;
  invoices: Map<string, InvoiceAcc>;
}

const ms = (d: Date | undefined): number => (d ? d.getTime() : 0);
const items = (ids: readonly string[]): string[] => [...new Set(ids)].sort();
const qty = (q: number): number => Math.max(1, q);
/** Dispute results of the same instant settle in lifecycle order: opened, then won or lost. */
const disputeRank = (r: PaymentResult): number => (r === PaymentResult.PAYMENT_RESULT_DISPUTE_OPENED ? 0 : 1);

/**
 * Folds every accepted event of one customer, and the customer's overrides, into the customer's
 * access document. Deterministic: any order and any duplication of the same events gives a
 * byte-identical document (`AccessDocument.encode`). Rules (DESIGN.md section 2):
 * - intent: the latest SubscriptionChanged by (version, occurred_at);
 * - per invoice: terminal payment results beat in-flight ones, then the latest occurred_at wins;
 *   a full refund and the latest dispute result layer on top;
 * - recovery per invoice: EXHAUSTED and RECOVERED beat RETRY_SCHEDULED, then the latest wins.
 */
export function foldDocument(customerId: string, facts: readonly BillingEvent[], overrides: readonly Override[]): AccessDocument {
  const unique = dedupe(facts);
  const subs = new Map<string, SubscriptionAcc>();
  let lastEventAtMs = 0;
  for (const e of unique) {
    lastEventAtMs = Math.max(lastEventAtMs, ms(e.occurredAt));
    accumulate(subs, e);
  }
  const subscriptions = [...subs.entries()].map(([subscriptionId, acc]) => ({
    subscriptionId,
    intent: acc.intent ? toIntent(acc.intent) : undefined,
    invoices: [...acc.invoices.entries()].map(([invoiceId, inv]) => toInvoice(invoiceId, inv)),
  }));
  return assembleDocument(customerId, subscriptions, overrides, unique.length, lastEventAtMs);
}

/**
 * The document from its folded parts: subscriptions sorted by id, each with its latest
 * MAX_INVOICES_PER_SUBSCRIPTION invoices by period end (then invoice id), overrides sorted by id.
 * `subscriptions` may carry more invoices than are kept, in any order.
 */
export function assembleDocument(
  customerId: string,
  subscriptions: readonly SubscriptionAccess[],
  overrides: readonly Override[],
  factCount: number,
  lastEventAtMs: number,
): AccessDocument {
  return {
    customerId,
    subscriptions: [...subscriptions]
      .sort((a, b) => compare(a.subscriptionId, b.subscriptionId))
      .map((s) => ({ ...s, invoices: [...s.invoices].sort((a, b) => a.periodEndMs - b.periodEndMs || compare(a.invoiceId, b.invoiceId)).slice(-MAX_INVOICES_PER_SUBSCRIPTION) })),
    overrides: [...overrides].sort((a, b) => compare(a.overrideId, b.overrideId)),
    factCount,
    lastEventAtMs,
  };
}

/** One event into the accumulators; every pick is a maximum, so order and repetition do not matter. */
function accumulate(subs: Map<string, SubscriptionAcc>, e: BillingEvent): void {
  const at = ms(e.occurredAt);
  let sub = subs.get(e.subscriptionId);
  if (!sub) {
    sub = { invoices: new Map() };
    subs.set(e.subscriptionId, sub);
  }
  const k = e.kind;
  if (!k) return;
  if (k.$case === "subscription") {
    sub.intent = later(sub.intent, { key: [k.value.version, at, e.eventId], event: e, value: k.value });
    return;
  }
  const invoiceId = k.value.invoiceId;
  let inv = sub.invoices.get(invoiceId);
  if (!inv) {
    inv = {};
    sub.invoices.set(invoiceId, inv);
  }
  if (k.$case === "recovery") {
    const r = k.value;
    inv.recovery = later(inv.recovery, {
      key: [TERMINAL_RECOVERIES.has(r.result) ? 1 : 0, at, e.eventId],
      event: e,
      value: { result: r.result, nextAttemptAt: r.nextAttemptAt },
    });
    return;
  }
  const p = k.value;
  if (p.periodEnd) inv.period = later(inv.period, { key: [at, e.eventId], event: e, value: p });
  if (TERMINAL_PAYMENTS.has(p.result) || IN_FLIGHT_PAYMENTS.has(p.result)) {
    inv.payment = later(inv.payment, { key: [TERMINAL_PAYMENTS.has(p.result) ? 1 : 0, at, e.eventId], event: e, value: p });
    if (p.result === PaymentResult.PAYMENT_RESULT_FAILED) inv.failure = later(inv.failure, { key: [at, e.eventId], event: e, value: p });
  } else if (p.result === PaymentResult.PAYMENT_RESULT_REFUNDED) {
    // The first refund is when access was revoked; later ones change nothing.
    inv.refund = later(inv.refund, { key: [-at, e.eventId], event: e, value: p });
    // The latest refund: a success after it (a refund that failed, re-reported) restores the invoice.
    inv.lastRefund = later(inv.lastRefund, { key: [at, e.eventId], event: e, value: p });
  } else if (DISPUTES.has(p.result)) {
    inv.dispute = later(inv.dispute, { key: [at, disputeRank(p.result), e.eventId], event: e, value: p });
  }
}

/**
 * Incremental folding. A customer's document is made of parts that events touch independently:
 * each subscription's intent and each invoice. Every field of a part is the maximum of some key
 * over the part's facts, so a part is fully described by its *deciding* facts (the winners, at
 * most seven), and folding new facts into the deciding ones gives what folding them into all of
 * the part's facts gives. That lets the writer store parts and pay per event for one part, not
 * for the customer's whole history. Assumes distinct events have distinct ids (the ledger's
 * guarantee); exact redeliveries change nothing.
 */
export interface PartKey {
  readonly subscriptionId: string;
  /** undefined for the subscription's intent (and for an event without a kind, which only names the subscription). */
  readonly invoiceId: string | undefined;
}

/** The part an event belongs to. */
export function partOf(e: BillingEvent): PartKey {
  const k = e.kind;
  return { subscriptionId: e.subscriptionId, invoiceId: k && k.$case !== "subscription" ? k.value.invoiceId : undefined };
}

/** A part's deciding facts after folding `facts` into `deciding` (all of one part), sorted by event id. */
export function foldPart(deciding: readonly BillingEvent[], facts: readonly BillingEvent[]): BillingEvent[] {
  const subs = new Map<string, SubscriptionAcc>();
  for (const e of dedupe([...deciding, ...facts])) accumulate(subs, e);
  const winners = new Map<string, BillingEvent>();
  for (const sub of subs.values()) {
    for (const p of [sub.intent, ...[...sub.invoices.values()].flatMap((i) => [i.payment, i.period, i.refund, i.lastRefund, i.dispute, i.recovery, i.failure])])
      if (p) winners.set(p.event.eventId, p.event);
  }
  return [...winners.values()].sort((a, b) => compare(a.eventId, b.eventId));
}

/** The intent a subscription's deciding facts give, if any SubscriptionChanged is among them. */
export function intentOf(deciding: readonly BillingEvent[]): Intent | undefined {
  const subs = new Map<string, SubscriptionAcc>();
  for (const e of deciding) accumulate(subs, e);
  const pick = [...subs.values()][0]?.intent;
  return pick ? toIntent(pick) : undefined;
}

/** The state an invoice's deciding facts give. */
export function invoiceOf(invoiceId: string, deciding: readonly BillingEvent[]): InvoiceState {
  const subs = new Map<string, SubscriptionAcc>();
  for (const e of deciding) accumulate(subs, e);
  return toInvoice(invoiceId, [...subs.values()][0]?.invoices.get(invoiceId) ?? {});
}

/**
 * One fact per event id. The ledger already guarantees that; this keeps the fold a pure function
 * of the *set* even when two different events claim the same id (the smaller encoding wins).
 */
function dedupe(facts: readonly BillingEvent[]): BillingEvent[] {
  const byId = new Map<string, { event: BillingEvent; bytes?: Buffer }>();
  for (const event of facts) {
    const seen = byId.get(event.eventId);
    if (!seen) {
      byId.set(event.eventId, { event });
      continue;
    }
    if (seen.event === event) continue;
    seen.bytes ??= Buffer.from(BillingEvent.encode(seen.event).finish());
    const bytes = Buffer.from(BillingEvent.encode(event).finish());
    if (Buffer.compare(bytes, seen.bytes) < 0) byId.set(event.eventId, { event, bytes });
  }
  return [...byId.values()].map((v) => v.event);
}

function toIntent(pick: Pick<SubscriptionChanged>): Intent {
  const s = pick.value;
  return {
    status: s.status,
    planId: s.planId,
    addonIds: items(s.addonIds),
    quantity: qty(s.quantity),
    currentPeriodStartMs: ms(s.currentPeriodStart),
    currentPeriodEndMs: ms(s.currentPeriodEnd),
    cancelAtMs: ms(s.cancelAt),
    trialEndMs: ms(s.trialEnd),
    version: s.version,
    eventId: pick.event.eventId,
  };
}

function toInvoice(invoiceId: string, inv: InvoiceAcc): InvoiceState {
  const period = inv.period?.value;
  return {
    invoiceId,
    payment: inv.payment?.value.result ?? PaymentResult.PAYMENT_RESULT_UNSPECIFIED,
    paymentAtMs: ms(inv.payment?.event.occurredAt),
    periodStartMs: ms(period?.periodStart),
    periodEndMs: ms(period?.periodEnd),
    planId: period?.planId ?? "",
    addonIds: items(period?.addonIds ?? []),
    quantity: qty(period?.quantity ?? 0),
    refunded: refunded(inv),
    refundedAtMs: ms(inv.refund?.event.occurredAt),
    dispute: inv.dispute?.value.result ?? PaymentResult.PAYMENT_RESULT_UNSPECIFIED,
    disputeAtMs: ms(inv.dispute?.event.occurredAt),
    recovery: inv.recovery?.value.result ?? RecoveryResult.RECOVERY_RESULT_UNSPECIFIED,
    recoveryAtMs: ms(inv.recovery?.event.occurredAt),
    nextAttemptAtMs: ms(inv.recovery?.value.nextAttemptAt),
    failureReason: inv.failure?.value.failureReason ?? "",
  };
}

/**
 * A full refund revokes, unless a successful payment of the invoice is later than every refund:
 * the refund failed and the money came back (Stripe's `refund.failed`).
 */
function refunded(inv: InvoiceAcc): boolean {
  if (!inv.refund || !inv.lastRefund) return false;
  const p = inv.payment;
  return !(p?.value.result === PaymentResult.PAYMENT_RESULT_SUCCEEDED && ms(p.event.occurredAt) > ms(inv.lastRefund.event.occurredAt));
}

/** Code-unit order, independent of locale. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
