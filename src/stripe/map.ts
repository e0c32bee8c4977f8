import {
  PaymentResult,
  PaymentSession,
  RecoveryResult,
  SubscriptionStatus,
  type BillingEvent,
  type PaymentOutcome,
} from "../gen/proofgate/v1/billing.js";
import type { InvoiceLink, LinkReader, LinkUpdate } from "./links.js";
import {
  refId,
  refObject,
  type ChargeShape,
  type DisputeShape,
  type InvoiceLineShape,
  type InvoicePaymentShape,
  type InvoiceShape,
  type Metadata,
  type PaymentIntentShape,
  type PriceShape,
  type Ref,
  type RefundShape,
  type StripeEventShape,
  type SubscriptionShape,
} from "./objects.js";
import { describeRole, type PriceMap, type PriceRef, type PriceRole } from "./price-map.js";

/**
 * Stripe events → BillingEvents. Pure: no I/O, no clock. What the adapter had to remember from
 * earlier events comes in through `links` (read only); what this event teaches is returned by
 * `learnFromEvent`, separately, so mapping stays a function of (event, configuration, links).
 * The table of what maps to what is docs/stripe.md.
 */

export const SOURCE = "stripe";

/** Metadata keys on a Charge, PaymentIntent or Dispute that tie it to an invoice when nothing else does. */
export const METADATA_INVOICE = "proofgate_invoice_id";
export const METADATA_SUBSCRIPTION = "proofgate_subscription_id";

/** Why a verified Stripe event produced no billing event. Each is counted (label `outcome`). */
export type IgnoreReason =
  /** A type the adapter does not handle. */
  | "unhandled_type"
  /** `charge.refunded` for part of the charge: only full refunds revoke. */
  | "partial_refund"
  /** An invoice of no subscription (a one-off invoice). */
  | "no_subscription"
  /** A charge, payment or dispute that cannot be tied to an invoice and subscription. */
  | "unlinked"
  /** A dispute inquiry (`warning_*`) or a prevented dispute: no money moved back. */
  | "inquiry"
  /** An invoice whose lines are all `ignore` prices. */
  | "nothing_granted"
  /** A subscription status the adapter does not know. */
  | "unknown_status"
  /** The object lacks an id the mapping needs. */
  | "malformed";

export type MapResult =
  | { readonly outcome: "mapped"; readonly events: BillingEvent[] }
  | {
      readonly outcome: "ignored";
      readonly reason: IgnoreReason;
      readonly detail: string;
      /**
       * For `unlinked`: the payment and invoice ids whose link would tie the event to a
       * subscription. The webhook parks the event and maps it again when one is learned, so a
       * refund delivered before the payment it reverses is not lost.
       */
      readonly waitFor?: readonly string[];
    }
  /** A configuration gap (a price that maps to nothing): the webhook answers 500 so Stripe retries after it is fixed. */
  | { readonly outcome: "unmapped"; readonly detail: string };

export interface MapContext {
  readonly prices: PriceMap;
  readonly links: LinkReader;
}

/** The event types that can produce billing events (docs/stripe.md has the table). */
export const HANDLED_TYPES: readonly string[] = [
  "customer.subscription.created",
  "customer.subscription.updated",
  "customer.subscription.deleted",
  "customer.subscription.paused",
  "customer.subscription.resumed",
  "customer.subscription.pending_update_applied",
  "customer.subscription.pending_update_expired",
  "invoice.finalized",
  "invoice.paid",
  "invoice.payment_succeeded",
  "invoice.payment_failed",
  "invoice.payment_action_required",
  "invoice.payment_attempt_required",
  "invoice.marked_uncollectible",
  "invoice.voided",
  "payment_intent.processing",
  "charge.refunded",
  "refund.failed",
  "charge.dispute.created",
  "charge.dispute.updated",
  "charge.dispute.closed",
  "charge.dispute.funds_withdrawn",
  "charge.dispute.funds_reinstated",
];
const HANDLED = new Set(HANDLED_TYPES);

const ACTIVE = SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE;
const CANCELED = SubscriptionStatus.SUBSCRIPTION_STATUS_CANCELED;

/** Subscription status → intent. Dunning (past_due, unpaid) does not change what the customer wants. */
const INTENT: Readonly<Record<string, SubscriptionStatus | undefined>> = {
  active: ACTIVE,
  trialing: ACTIVE,
  past_due: ACTIVE,
  unpaid: ACTIVE,
  incomplete: ACTIVE,
  // Paused when a trial ended without a payment method: still wanted, not paid (pay to resume).
  paused: ACTIVE,
  canceled: CANCELED,
  incomplete_expired: CANCELED,
};

const ignored = (reason: IgnoreReason, detail: string): MapResult => ({ outcome: "ignored", reason, detail });
const unlinked = (detail: string, waitFor: readonly string[]): MapResult => ({ outcome: "ignored", reason: "unlinked", detail, waitFor });
const unmapped = (detail: string): MapResult => ({ outcome: "unmapped", detail });
const mapped = (events: BillingEvent[]): MapResult => ({ outcome: "mapped", events });
const date = (seconds: number | null | undefined): Date | undefined => (typeof seconds === "number" && seconds > 0 ? new Date(seconds * 1000) : undefined);

/** Maps one verified Stripe event. Never throws on a well-formed Stripe event. */
export function mapStripeEvent(event: StripeEventShape, ctx: MapContext): MapResult {
  if (!HANDLED.has(event.type)) return ignored("unhandled_type", `${event.type} is not used by proofgate`);
  const object = event.data.object as { id?: unknown } | null;
  if (!object || typeof object.id !== "string" || !object.id) return ignored("malformed", `${event.type} without an object id`);
  if (event.type.startsWith("customer.subscription.")) return mapSubscription(event, object as SubscriptionShape, ctx);
  if (event.type.startsWith("invoice.")) return mapInvoice(event, object as InvoiceShape, ctx);
  if (event.type === "payment_intent.processing") return mapProcessing(event, object as PaymentIntentShape, ctx);
  if (event.type === "charge.refunded") return mapRefund(event, object as ChargeShape, ctx);
  if (event.type === "refund.failed") return mapRefundFailed(event, object as RefundShape, ctx);
  return mapDispute(event, object as DisputeShape, ctx);
}

/**
 * Billing event ids. Payment and recovery facts are named after the Stripe object and the fact
 * (`stripe:in_123:paid`, `stripe:in_123:failed:2`), so a Stripe retry, the twin event
 * (`invoice.paid` and `invoice.payment_succeeded`) and reconciliation all give the same id: a
 * DUPLICATE, never a second fact. A subscription change keeps the Stripe event id (each event is
 * a state of its own, ordered by `version`).
 */
export const factId = (key: string): string => `stripe:${key}`;

function base(event: StripeEventShape, customerId: string, subscriptionId: string, key?: string): Omit<BillingEvent, "kind"> {
  return {
    eventId: key ? factId(key) : event.id,
    occurredAt: new Date(event.created * 1000),
    customerId,
    subscriptionId,
    source: SOURCE,
    correlationId: event.request?.id ?? "",
  };
}

// ---------------------------------------------------------------------------------------------
// Prices

function priceRef(price: PriceShape | null | undefined): PriceRef | undefined {
  if (!price?.id) return undefined;
  const product = refObject(price.product);
  return { priceId: price.id, lookupKey: price.lookup_key, metadata: price.metadata, productId: refId(price.product), productMetadata: product?.metadata };
}

/** A line's price: the object itself before basil, `pricing.price_details` since. */
function linePriceRef(line: InvoiceLineShape): PriceRef | undefined {
  if (line.price) return priceRef(line.price);
  const details = line.pricing?.price_details;
  if (!details) return undefined;
  const price = refObject(details.price);
  if (price) return priceRef(price);
  const id = refId(details.price);
  return id ? { priceId: id, productId: details.product ?? undefined } : undefined;
}

function resolvePrice(ref: PriceRef, ctx: MapContext): PriceRole | undefined {
  return ctx.prices.resolve(ref) ?? (ref.priceId ? ctx.links.priceRole(ref.priceId) : undefined);
}

function describePrice(ref: PriceRef): string {
  const parts = [ref.priceId ?? "(no id)"];
  if (ref.lookupKey) parts.push(`lookup key "${ref.lookupKey}"`);
  if (ref.productId) parts.push(`product ${ref.productId}`);
  return parts.join(", ");
}

const UNMAPPED_HINT = "add it to the price map (plans, addons or ignore) or set metadata proofgate_plan / proofgate_addon on the price";

// ---------------------------------------------------------------------------------------------
// Subscriptions → intent

function mapSubscription(event: StripeEventShape, sub: SubscriptionShape, ctx: MapContext): MapResult {
  const customerId = refId(sub.customer);
  if (!customerId) return ignored("malformed", `subscription ${sub.id} without a customer`);
  const status = event.type === "customer.subscription.deleted" ? CANCELED : INTENT[sub.status];
  if (status === undefined) return ignored("unknown_status", `subscription ${sub.id} has status "${sub.status}"`);

  // An update held on its payment (pending_if_incomplete) is what the customer wants: what is
  // new is PAYMENT_PENDING until its invoice is paid, what was paid stays (check-rules.md).
  const pending = sub.pending_update?.subscription_items;
  const items = pending?.length ? pending : (sub.items?.data ?? []);
  let plan: { id: string; quantity: number; start: number | null | undefined; end: number | null | undefined } | undefined;
  const addons = new Set<string>();
  for (const item of items) {
    const ref = priceRef(item.price);
    const role = ref ? resolvePrice(ref, ctx) : undefined;
    if (!role) {
      // What a canceled subscription wanted only shapes its CANCELED reason: a gap is no reason to fail.
      if (status === CANCELED) continue;
      return unmapped(`subscription ${sub.id}: price ${ref ? describePrice(ref) : "(none)"} of item ${item.id} is not mapped to a plan or add-on; ${UNMAPPED_HINT}`);
    }
    if (role.kind === "addon") addons.add(role.id);
    if (role.kind !== "plan") continue;
    if (plan && plan.id !== role.id && status === ACTIVE)
      return unmapped(`subscription ${sub.id}: items map to two plans ("${plan.id}" and "${role.id}"); map one of the prices as an add-on or ignore it`);
    plan ??= { id: role.id, quantity: lineQuantity(item), start: item.current_period_start, end: item.current_period_end };
  }
  if (status === ACTIVE && !plan) return unmapped(`subscription ${sub.id}: no item maps to a plan; ${UNMAPPED_HINT}`);

  // Before basil the period is on the subscription; since, on each item (the plan item's counts).
  const starts = items.map((i) => i.current_period_start).filter((t): t is number => typeof t === "number");
  const ends = items.map((i) => i.current_period_end).filter((t): t is number => typeof t === "number");
  const periodStart = sub.current_period_start ?? plan?.start ?? (starts.length ? Math.min(...starts) : undefined);
  const periodEnd = sub.current_period_end ?? plan?.end ?? (ends.length ? Math.max(...ends) : undefined);
  const cancelAt = sub.cancel_at ?? (sub.cancel_at_period_end ? periodEnd : undefined);

  const events: BillingEvent[] = [
    {
      ...base(event, customerId, sub.id),
      kind: {
        $case: "subscription",
        value: {
          status,
          planId: plan?.id ?? "",
          addonIds: [...addons].sort(),
          quantity: Math.max(1, plan?.quantity ?? 1),
          currentPeriodStart: date(periodStart),
          currentPeriodEnd: periodStart && periodEnd && periodEnd > periodStart ? date(periodEnd) : undefined,
          cancelAt: date(cancelAt),
          trialEnd: date(sub.trial_end),
          // Stripe objects carry no version: the event time orders them. Within one second a
          // state read back from Stripe's API (`observed`, its state now) wins over payloads, and
          // a terminal status (canceled) wins, since a canceled Stripe subscription never comes back.
          version: event.created * 10 + (event.observed ? 2 : 0) + (status === CANCELED ? 1 : 0),
        },
      },
    },
  ];
  // Stripe marks a subscription `unpaid` when dunning gave up on its latest invoice.
  const latest = refId(sub.latest_invoice);
  if (sub.status === "unpaid" && status === ACTIVE && latest) {
    events.push({
      ...base(event, customerId, sub.id, `${latest}:exhausted`),
      kind: { $case: "recovery", value: { invoiceId: latest, result: RecoveryResult.RECOVERY_RESULT_EXHAUSTED, nextAttemptAt: undefined } },
    });
  }
  return mapped(events);
}

// ---------------------------------------------------------------------------------------------
// Invoices → payment and recovery outcomes

/** The subscription of an invoice: `subscription` before basil, `parent.subscription_details` since, else its lines'. */
function invoiceSubscription(inv: InvoiceShape): string | undefined {
  const direct = refId(inv.subscription) ?? refId(inv.parent?.subscription_details?.subscription);
  if (direct) return direct;
  for (const line of inv.lines?.data ?? []) {
    const s = refId(line.subscription) ?? line.parent?.subscription_item_details?.subscription ?? line.parent?.invoice_item_details?.subscription;
    if (s) return s;
  }
  return undefined;
}

interface Items {
  readonly planId: string;
  readonly addonIds: string[];
  readonly quantity: number;
  readonly periodStart: number | undefined;
  readonly periodEnd: number | undefined;
}

/**
 * What an invoice bills for: the lines that charge (credits for unused time are skipped), their
 * plans and add-ons, and the span of their periods. `unresolved` lists prices that map to nothing.
 */
function invoiceItems(inv: InvoiceShape, ctx: MapContext): { items: Items | undefined; unresolved: string[] } {
  const unresolved: string[] = [];
  let plan: { id: string; quantity: number; proration: boolean; end: number } | undefined;
  const addons = new Set<string>();
  let start: number | undefined;
  let end: number | undefined;
  for (const line of inv.lines?.data ?? []) {
    const proration = Boolean(line.proration ?? line.parent?.subscription_item_details?.proration ?? line.parent?.invoice_item_details?.proration);
    const amount = line.amount ?? 0;
    if (amount < 0 || (proration && amount === 0)) continue;
    // A line of a priced item that charges nothing is a trial (of the subscription or of the
    // item): no payment proof. A line a coupon brought to 0 and a free price (0) still count.
    if (amount === 0 && lineUnitAmount(line) !== 0 && !discounted(line)) continue;
    const ref = linePriceRef(line);
    if (!ref) continue; // a line with no price (a custom one-off amount) grants nothing
    const role = resolvePrice(ref, ctx);
    if (!role) {
      unresolved.push(describePrice(ref));
      continue;
    }
    if (role.kind === "ignore") continue;
    const lineEnd = line.period?.end ?? 0;
    if (role.kind === "addon") addons.add(role.id);
    else if (!plan || (plan.proration && !proration) || (plan.proration === proration && lineEnd > plan.end))
      plan = { id: role.id, quantity: lineQuantity(line), proration, end: lineEnd };
    if (line.period) {
      start = start === undefined ? line.period.start : Math.min(start, line.period.start);
      end = end === undefined ? line.period.end : Math.max(end, line.period.end);
    }
  }
  if (!plan && addons.size === 0) return { items: undefined, unresolved };
  return { items: { planId: plan?.id ?? "", addonIds: [...addons].sort(), quantity: Math.max(1, plan?.quantity ?? 1), periodStart: start, periodEnd: end }, unresolved };
}

/** The unit price of a line: the price object before basil, `pricing.unit_amount_decimal` since. */
function lineUnitAmount(line: InvoiceLineShape): number | undefined {
  if (typeof line.price?.unit_amount === "number") return line.price.unit_amount;
  const decimal = line.pricing?.unit_amount_decimal;
  const n = decimal ? Number(decimal) : NaN;
  return Number.isFinite(n) ? n : undefined;
}

/** A line a discount brought down (a coupon is a price the merchant chose, not a trial). */
function discounted(line: InvoiceLineShape): boolean {
  return (line.discount_amounts ?? []).some((d) => typeof d === "object" && d !== null && Number((d as { amount?: unknown }).amount) > 0);
}

/** Seats: `quantity`, or `quantity_decimal` in newer API versions (whole units paid for). */
function lineQuantity(line: { quantity?: number | null; quantity_decimal?: string | null }): number {
  if (typeof line.quantity === "number") return line.quantity;
  const n = Number(line.quantity_decimal ?? NaN);
  return Number.isFinite(n) ? Math.max(1, Math.floor(n)) : 1;
}

function itemsFromLink(link: InvoiceLink | undefined): Items | undefined {
  if (!link || (!link.planId && !link.addonIds?.length)) return undefined;
  return {
    planId: link.planId ?? "",
    addonIds: [...(link.addonIds ?? [])],
    quantity: link.quantity ?? 1,
    periodStart: link.periodStart,
    periodEnd: link.periodEnd,
  };
}

const SESSION: Readonly<Record<string, PaymentSession | undefined>> = {
  subscription_create: PaymentSession.PAYMENT_SESSION_ON_SESSION,
  subscription_update: PaymentSession.PAYMENT_SESSION_ON_SESSION,
  subscription_cycle: PaymentSession.PAYMENT_SESSION_OFF_SESSION,
  subscription_threshold: PaymentSession.PAYMENT_SESSION_OFF_SESSION,
};

function payment(invoiceId: string, result: PaymentResult, rest: Partial<PaymentOutcome> = {}): PaymentOutcome {
  return {
    invoiceId,
    result,
    periodStart: undefined,
    periodEnd: undefined,
    planId: "",
    addonIds: [],
    quantity: 0,
    session: PaymentSession.PAYMENT_SESSION_UNSPECIFIED,
    amountMinor: 0,
    currency: "",
    failureReason: "",
    ...rest,
  };
}

function withItems(items: Items | undefined): Partial<PaymentOutcome> {
  if (!items) return {};
  const ok = items.periodStart !== undefined && items.periodEnd !== undefined && items.periodEnd > items.periodStart;
  return {
    planId: items.planId,
    addonIds: items.addonIds,
    quantity: items.quantity,
    periodStart: ok ? date(items.periodStart) : undefined,
    periodEnd: ok ? date(items.periodEnd) : undefined,
  };
}

/** The invoice's payment intent when it arrived expanded (complete.ts reads it for a failure). */
function invoicePaymentIntent(inv: InvoiceShape): PaymentIntentShape | undefined {
  return refObject(inv.payment_intent) ?? (inv.payments?.data ?? []).map((p) => refObject(p.payment?.payment_intent)).find((pi) => pi !== undefined);
}

/** A failure that is in fact a 3-D Secure challenge: Stripe sends `invoice.payment_failed` for those too. */
function awaitingAuthentication(inv: InvoiceShape): boolean {
  const pi = invoicePaymentIntent(inv);
  return pi?.status === "requires_action" || pi?.last_payment_error?.code === "authentication_required";
}

function mapInvoice(event: StripeEventShape, inv: InvoiceShape, ctx: MapContext): MapResult {
  const subscriptionId = invoiceSubscription(inv);
  if (!subscriptionId) return ignored("no_subscription", `invoice ${inv.id} belongs to no subscription`);
  const customerId = refId(inv.customer) ?? ctx.links.invoice(inv.id)?.customerId;
  if (!customerId) return ignored("malformed", `invoice ${inv.id} without a customer`);
  if (inv.lines?.has_more)
    return unmapped(`invoice ${inv.id} has more lines than the event carries; give the writer a Stripe API key (--stripe-api-key) so the adapter can read them all`);
  const currency = (inv.currency ?? "").toUpperCase();
  const session = SESSION[inv.billing_reason ?? ""] ?? PaymentSession.PAYMENT_SESSION_UNSPECIFIED;
  const at = (key?: string): Omit<BillingEvent, "kind"> => base(event, customerId, subscriptionId, key);
  const attempt = inv.attempt_count ?? 1;
  const { items, unresolved } = invoiceItems(inv, ctx);
  const what = items ?? itemsFromLink(ctx.links.invoice(inv.id));
  const recovery = (key: string, result: RecoveryResult, nextAttemptAt?: Date): BillingEvent => ({ ...at(`${inv.id}:${key}`), kind: { $case: "recovery", value: { invoiceId: inv.id, result, nextAttemptAt } } });
  // Not being collected: voided, or marked uncollectible without ever being attempted (collection
  // paused with `void` or `mark_uncollectible`). No payment is coming, so no grace (check-rules.md).
  const notCollected = (key: string): MapResult =>
    mapped([{ ...at(`${inv.id}:${key}`), kind: { $case: "payment", value: payment(inv.id, PaymentResult.PAYMENT_RESULT_CANCELED, { ...withItems(what), currency, session }) } }]);

  switch (event.type) {
    case "invoice.finalized":
      // An invoice sent with payment terms is paid by its due date, not charged: until then the
      // renewal is awaited like a scheduled retry (check-rules.md).
      if (inv.collection_method !== "send_invoice" || !date(inv.due_date)) return ignored("unhandled_type", `invoice ${inv.id} is charged automatically: finalizing it changes nothing`);
      return mapped([recovery("due", RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED, date(inv.due_date))]);
    case "invoice.marked_uncollectible":
      if ((inv.attempt_count ?? 0) === 0) return notCollected("uncollectible");
      return mapped([recovery("exhausted", RecoveryResult.RECOVERY_RESULT_EXHAUSTED)]);
    case "invoice.voided":
      return notCollected("void");
    case "invoice.payment_failed": {
      if (awaitingAuthentication(inv)) return mapAwaiting(event, inv, ctx, at, session, currency, attempt);
      const reason = inv.last_finalization_error?.message ?? `payment attempt ${attempt} failed`;
      const events: BillingEvent[] = [
        {
          ...at(`${inv.id}:failed:${attempt}`),
          kind: {
            $case: "payment",
            value: payment(inv.id, PaymentResult.PAYMENT_RESULT_FAILED, { ...withItems(what), session, amountMinor: inv.amount_due ?? 0, currency, failureReason: reason }),
          },
        },
      ];
      const next = date(inv.next_payment_attempt);
      if (next) events.push(recovery(`retry:${attempt}`, RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED, next));
      return mapped(withIntent(events, event, inv, customerId, subscriptionId, what, ctx));
    }
    case "invoice.payment_action_required":
    case "invoice.payment_attempt_required":
      return mapAwaiting(event, inv, ctx, at, session, currency, attempt);
    default: {
      // invoice.paid, invoice.payment_succeeded: what is being paid for is required.
      if (unresolved.length) return unmapped(`invoice ${inv.id}: price ${unresolved.join("; ")} is not mapped to a plan or add-on; ${UNMAPPED_HINT}`);
      if (!what) return ignored("nothing_granted", `invoice ${inv.id} pays for nothing in the catalog (a $0 trial invoice proves no payment)`);
      if (what.periodStart === undefined || what.periodEnd === undefined || what.periodEnd <= what.periodStart)
        return ignored("malformed", `invoice ${inv.id}: its lines carry no service period`);
      const events: BillingEvent[] = [
        {
          ...at(`${inv.id}:paid`),
          kind: { $case: "payment", value: payment(inv.id, PaymentResult.PAYMENT_RESULT_SUCCEEDED, { ...withItems(what), session, amountMinor: inv.amount_paid ?? 0, currency }) },
        },
      ];
      // Paid after a failed attempt: dunning is over.
      if ((inv.attempt_count ?? 0) > 1) events.push(recovery("recovered", RecoveryResult.RECOVERY_RESULT_RECOVERED));
      return mapped(withIntent(events, event, inv, customerId, subscriptionId, what, ctx));
    }
  }
}

/** REQUIRES_ACTION: 3-D Secure (`payment_action_required`, or a failure that is one), or a payment the customer must make (`payment_attempt_required`). */
function mapAwaiting(
  event: StripeEventShape,
  inv: InvoiceShape,
  ctx: MapContext,
  at: (key?: string) => Omit<BillingEvent, "kind">,
  session: PaymentSession,
  currency: string,
  attempt: number,
): MapResult {
  const { items, unresolved } = invoiceItems(inv, ctx);
  if (unresolved.length) return unmapped(`invoice ${inv.id}: price ${unresolved.join("; ")} is not mapped to a plan or add-on; ${UNMAPPED_HINT}`);
  const what = items ?? itemsFromLink(ctx.links.invoice(inv.id));
  if (!what) return ignored("nothing_granted", `invoice ${inv.id} bills for nothing in the catalog`);
  if (what.periodStart === undefined || what.periodEnd === undefined || what.periodEnd <= what.periodStart)
    return ignored("malformed", `invoice ${inv.id}: its lines carry no service period`);
  const customerId = at().customerId;
  const events: BillingEvent[] = [
    {
      ...at(`${inv.id}:action:${attempt}`),
      kind: { $case: "payment", value: payment(inv.id, PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION, { ...withItems(what), session, amountMinor: inv.amount_due ?? 0, currency }) },
    },
  ];
  return mapped(withIntent(events, event, inv, customerId, at().subscriptionId, what, ctx));
}

/**
 * An invoice can arrive before its subscription's event. What it bills for is then the best
 * known intent: a SubscriptionChanged of version 1, which every real subscription event (version
 * = its time) outranks, so the invoice is not denied while the subscription event is in flight.
 */
function withIntent(events: BillingEvent[], event: StripeEventShape, inv: InvoiceShape, customerId: string, subscriptionId: string, what: Items | undefined, ctx: MapContext): BillingEvent[] {
  if (ctx.links.note(seenKey(subscriptionId)) !== undefined) return events;
  if (!what?.planId || what.periodStart === undefined || what.periodEnd === undefined || what.periodEnd <= what.periodStart) return events;
  events.push({
    ...base(event, customerId, subscriptionId, `${subscriptionId}:from:${inv.id}`),
    kind: {
      $case: "subscription",
      value: {
        status: ACTIVE,
        planId: what.planId,
        addonIds: what.addonIds,
        quantity: what.quantity,
        currentPeriodStart: date(what.periodStart),
        currentPeriodEnd: date(what.periodEnd),
        cancelAt: undefined,
        trialEnd: undefined,
        version: 1,
      },
    },
  });
  return events;
}

// ---------------------------------------------------------------------------------------------
// Charges, payment intents and disputes: tied to an invoice through what Stripe or the links say

interface Target {
  readonly invoiceId: string;
  readonly subscriptionId: string;
  readonly customerId: string;
  readonly invoiceLink: InvoiceLink | undefined;
  readonly invoice: InvoiceShape | undefined;
}

/**
 * The invoice a payment belongs to, first match wins: the object's own `invoice` field (API
 * versions before basil), `proofgate_invoice_id` metadata, the links learned from
 * `invoice_payment.paid` (or an invoice naming its payment). Then its subscription and customer:
 * an expanded invoice, the invoice's link, `proofgate_subscription_id` metadata.
 */
function target(
  sources: { invoice: readonly Ref<InvoiceShape>[]; paymentIds: readonly (string | undefined)[]; metadata: readonly Metadata[]; customer: string | undefined },
  ctx: MapContext,
): Target | { readonly missing: string; readonly waitFor: string[] } {
  const meta = (key: string): string | undefined => sources.metadata.map((m) => m?.[key]).find((v): v is string => Boolean(v));
  const invoice = sources.invoice.map((r) => refObject(r)).find((i): i is InvoiceShape => i !== undefined);
  const invoiceId =
    sources.invoice.map((r) => refId(r)).find((id): id is string => Boolean(id)) ??
    meta(METADATA_INVOICE) ??
    sources.paymentIds.map((p) => (p ? ctx.links.invoiceOfPayment(p) : undefined)).find((id): id is string => Boolean(id));
  const paymentIds = sources.paymentIds.filter((p): p is string => Boolean(p));
  const ids = paymentIds.join(", ");
  if (!invoiceId) return { missing: `no invoice known for ${ids || "the payment"} yet`, waitFor: paymentIds };
  const link = ctx.links.invoice(invoiceId);
  const subscriptionId = (invoice ? invoiceSubscription(invoice) : undefined) ?? link?.subscriptionId ?? meta(METADATA_SUBSCRIPTION);
  const customerId = sources.customer ?? refId(invoice?.customer) ?? link?.customerId;
  if (!subscriptionId) return { missing: `invoice ${invoiceId} (paid by ${ids}) belongs to no known subscription yet`, waitFor: [invoiceId] };
  if (!customerId) return { missing: `no customer known for invoice ${invoiceId} yet`, waitFor: [invoiceId] };
  return { invoiceId, subscriptionId, customerId, invoiceLink: link, invoice };
}

function mapProcessing(event: StripeEventShape, pi: PaymentIntentShape, ctx: MapContext): MapResult {
  const t = target({ invoice: [pi.invoice], paymentIds: [pi.id, refId(pi.latest_charge)], metadata: [pi.metadata], customer: refId(pi.customer) }, ctx);
  if ("missing" in t) return unlinked(`payment_intent ${pi.id}: ${t.missing}`, t.waitFor);
  const items = (t.invoice ? invoiceItems(t.invoice, ctx).items : undefined) ?? itemsFromLink(t.invoiceLink);
  if (!items || items.periodStart === undefined || items.periodEnd === undefined)
    return unlinked(`payment_intent ${pi.id}: what invoice ${t.invoiceId} bills for is not known yet`, [t.invoiceId]);
  return mapped([
    {
      ...base(event, t.customerId, t.subscriptionId, `${t.invoiceId}:processing:${pi.id}`),
      kind: {
        $case: "payment",
        value: payment(t.invoiceId, PaymentResult.PAYMENT_RESULT_PROCESSING, { ...withItems(items), amountMinor: pi.amount ?? 0, currency: (pi.currency ?? "").toUpperCase() }),
      },
    },
  ]);
}

function mapRefund(event: StripeEventShape, charge: ChargeShape, ctx: MapContext): MapResult {
  const refunded = charge.amount_refunded ?? 0;
  const full = charge.refunded === true || (charge.amount > 0 && refunded >= charge.amount);
  if (!full) return ignored("partial_refund", `charge ${charge.id}: ${refunded} of ${charge.amount} refunded; only a full refund revokes`);
  const pi = charge.payment_intent;
  const t = target(
    {
      invoice: [charge.invoice, refObject(pi)?.invoice],
      paymentIds: [refId(pi), charge.id],
      metadata: [charge.metadata, refObject(pi)?.metadata],
      customer: refId(charge.customer),
    },
    ctx,
  );
  if ("missing" in t) return unlinked(`charge ${charge.id}: ${t.missing}`, t.waitFor);
  return mapped([
    {
      ...base(event, t.customerId, t.subscriptionId, `${charge.id}:refunded`),
      kind: {
        $case: "payment",
        value: payment(t.invoiceId, PaymentResult.PAYMENT_RESULT_REFUNDED, { amountMinor: refunded || charge.amount, currency: (charge.currency ?? "").toUpperCase() }),
      },
    },
  ]);
}

/** Dispute status → result. Inquiries (`warning_*`) and prevented disputes move no money and are ignored. */
const DISPUTE: Readonly<Record<string, PaymentResult | undefined>> = {
  needs_response: PaymentResult.PAYMENT_RESULT_DISPUTE_OPENED,
  under_review: PaymentResult.PAYMENT_RESULT_DISPUTE_OPENED,
  won: PaymentResult.PAYMENT_RESULT_DISPUTE_WON,
  lost: PaymentResult.PAYMENT_RESULT_DISPUTE_LOST,
  // An appeal follows a lost dispute; the funds stay withdrawn until it is won.
  appeal_needs_response: PaymentResult.PAYMENT_RESULT_DISPUTE_LOST,
  appeal_under_review: PaymentResult.PAYMENT_RESULT_DISPUTE_LOST,
};

const DISPUTE_FACT: Readonly<Record<number, string>> = {
  [PaymentResult.PAYMENT_RESULT_DISPUTE_OPENED]: "opened",
  [PaymentResult.PAYMENT_RESULT_DISPUTE_WON]: "won",
  [PaymentResult.PAYMENT_RESULT_DISPUTE_LOST]: "lost",
};

/**
 * A refund that failed (`refund.failed`): the money came back, so the payment proves its period
 * again. Published as the invoice's SUCCEEDED at the failure's time, which the fold lets outrank
 * an earlier refund (check-rules.md).
 */
function mapRefundFailed(event: StripeEventShape, refund: RefundShape, ctx: MapContext): MapResult {
  if (refund.status !== "failed") return ignored("unknown_status", `refund ${refund.id} has status "${refund.status ?? ""}"`);
  const charge = refObject(refund.charge);
  const pi = refObject(refund.payment_intent) ?? refObject(charge?.payment_intent);
  const t = target(
    {
      invoice: [charge?.invoice, pi?.invoice],
      paymentIds: [refId(refund.payment_intent) ?? refId(charge?.payment_intent), refId(refund.charge)],
      metadata: [refund.metadata, charge?.metadata, pi?.metadata],
      customer: refId(charge?.customer) ?? refId(pi?.customer),
    },
    ctx,
  );
  if ("missing" in t) return unlinked(`refund ${refund.id}: ${t.missing}`, t.waitFor);
  const items = (t.invoice ? invoiceItems(t.invoice, ctx).items : undefined) ?? itemsFromLink(t.invoiceLink);
  if (!items || items.periodStart === undefined || items.periodEnd === undefined)
    return unlinked(`refund ${refund.id}: what invoice ${t.invoiceId} paid for is not known yet`, [t.invoiceId]);
  return mapped([
    {
      ...base(event, t.customerId, t.subscriptionId, `${refund.id}:failed`),
      kind: {
        $case: "payment",
        value: payment(t.invoiceId, PaymentResult.PAYMENT_RESULT_SUCCEEDED, { ...withItems(items), amountMinor: refund.amount ?? 0, currency: (refund.currency ?? "").toUpperCase() }),
      },
    },
  ]);
}

function mapDispute(event: StripeEventShape, dispute: DisputeShape, ctx: MapContext): MapResult {
  const result = DISPUTE[dispute.status];
  if (result === undefined) return ignored("inquiry", `dispute ${dispute.id} has status "${dispute.status}": no chargeback`);
  const charge = refObject(dispute.charge);
  const pi = refObject(dispute.payment_intent) ?? refObject(charge?.payment_intent);
  const t = target(
    {
      invoice: [charge?.invoice, pi?.invoice],
      paymentIds: [refId(dispute.payment_intent) ?? refId(charge?.payment_intent), refId(dispute.charge)],
      metadata: [dispute.metadata, charge?.metadata, pi?.metadata],
      customer: refId(charge?.customer) ?? refId(pi?.customer),
    },
    ctx,
  );
  if ("missing" in t) return unlinked(`dispute ${dispute.id}: ${t.missing}`, t.waitFor);
  return mapped([
    {
      ...base(event, t.customerId, t.subscriptionId, `${dispute.id}:${DISPUTE_FACT[result] ?? dispute.status}`),
      kind: {
        $case: "payment",
        value: payment(t.invoiceId, result, { amountMinor: dispute.amount ?? 0, currency: (dispute.currency ?? "").toUpperCase(), failureReason: dispute.reason ?? "" }),
      },
    },
  ]);
}

// ---------------------------------------------------------------------------------------------
// Learning

/**
 * What this event teaches for later events (see links.ts). Pure; learned from every verified
 * event, handled or not (`invoice.finalized` and `invoice_payment.paid` only teach).
 */
export function learnFromEvent(event: StripeEventShape, ctx: MapContext): LinkUpdate[] {
  const out: LinkUpdate[] = [];
  const object = event.data.object as { id?: unknown; object?: unknown } | null;
  if (!object || typeof object.id !== "string") return out;
  const kind = typeof object.object === "string" ? object.object : event.type.split(".")[0];
  const payment = (paymentId: string | undefined, invoiceId: string | undefined): void => {
    if (paymentId && invoiceId) out.push({ kind: "payment", paymentId, invoiceId });
  };

  if (kind === "subscription" || event.type.startsWith("customer.subscription.")) {
    // Which event changed the subscription in this second: a second one is read back from the API.
    out.push({ kind: "note", key: secondKey(object.id, event.created), value: event.id });
    out.push({ kind: "note", key: seenKey(object.id), value: event.id });
    // Prices named by lookup key or metadata here appear on invoice lines by id only (since basil).
    const sub = object as SubscriptionShape;
    for (const item of [...(sub.items?.data ?? []), ...(sub.pending_update?.subscription_items ?? [])]) {
      const ref = priceRef(item.price);
      const role = ref ? ctx.prices.resolve(ref) : undefined;
      if (ref?.priceId && role) out.push({ kind: "price", priceId: ref.priceId, role });
    }
  } else if (kind === "invoice") {
    const inv = object as InvoiceShape;
    const subscriptionId = invoiceSubscription(inv);
    const customerId = refId(inv.customer);
    if (subscriptionId && customerId) {
      const { items } = invoiceItems(inv, ctx);
      const link: InvoiceLink = { subscriptionId, customerId, ...(items ?? {}) };
      out.push({ kind: "invoice", invoiceId: inv.id, link });
    }
    payment(refId(inv.payment_intent), inv.id);
    payment(refId(inv.charge), inv.id);
    for (const p of inv.payments?.data ?? []) {
      payment(refId(p.payment?.payment_intent), inv.id);
      payment(refId(p.payment?.charge), inv.id);
    }
  } else if (kind === "invoice_payment") {
    const p = object as InvoicePaymentShape;
    payment(refId(p.payment?.payment_intent), refId(p.invoice));
    payment(refId(p.payment?.charge), refId(p.invoice));
  } else if (kind === "charge") {
    const c = object as ChargeShape;
    const invoiceId = refId(c.invoice);
    payment(c.id, invoiceId);
    payment(refId(c.payment_intent), invoiceId);
  } else if (kind === "payment_intent") {
    const pi = object as PaymentIntentShape;
    const invoiceId = refId(pi.invoice);
    payment(pi.id, invoiceId);
    payment(refId(pi.latest_charge), invoiceId);
  }
  return out;
}

/** The note naming the event that changed subscription `id` in second `created`. */
export const secondKey = (id: string, created: number): string => `second:${id}@${created}`;
/** The note saying an event of subscription `id` was seen (its intent is then known). */
export const seenKey = (id: string): string => `subscription:${id}`;

/** For logs and responses: "plan "premium"" / "ignore". */
export { describeRole };
