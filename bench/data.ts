/**
 * Synthetic but realistic data: customer ids shaped like Stripe's, access documents folded by the
 * real policy core from generated billing histories (the mix a SaaS sees: paying, trialing, in
 * grace, pending 3-D Secure, refunded or disputed, suspended, canceled; 1-2 subscriptions; a few
 * invoices each; numeric seats), and billing event streams for the writer.
 */
import { demoCatalog as loadDemoCatalog } from "#proofgate/catalog/index.js";
import type { Catalog } from "#proofgate/gen/proofgate/v1/catalog.js";
import { PaymentResult, PaymentSession, RecoveryResult, SubscriptionStatus, type BillingEvent } from "#proofgate/gen/proofgate/v1/billing.js";
import { BillingEvents, billingEvent, paymentOutcome, recoveryOutcome, subscriptionChange, type EventKind } from "#proofgate/billing/index.js";
import { AccessDocument, OverrideEffect, type Override } from "#proofgate/gen/proofgate/v1/document.js";
import { foldDocument } from "#proofgate/policy/index.js";

export const DAY = 86_400_000;

/** The demo catalog (examples/catalog.yaml): the one the documents and events refer to. */
export const demoCatalog = (): Catalog => loadDemoCatalog();

/** Features checks ask about, weighted towards the common ones. */
export const CHECK_FEATURES = [
  "api-access",
  "api-access",
  "advanced-filtering",
  "advanced-filtering",
  "premium-support",
  "seats",
  "seats",
  "ai-assistant",
  "extended-retention",
  "retention-days",
  "support-tier",
] as const;

/** Small, fast, seedable PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

function randomId(prefix: string, r: () => number, n = 24): string {
  let s = prefix;
  for (let i = 0; i < n; i++) s += B62.charAt(Math.floor(r() * 62));
  return s;
}

/**
 * Customer `i`'s id: `cus_` and 14 characters, like Stripe's. Unique for every i below 2^32
 * (the first 7 characters encode a bijection of i), and stable across processes.
 */
export function customerId(i: number): string {
  const a = Math.imul(i, 0x9e3779b1) >>> 0;
  const b = Math.imul(a ^ (a >>> 16), 0x85ebca6b) >>> 0;
  return "cus_" + a.toString(36).padStart(7, "0") + (b % 78_364_164_096).toString(36).padStart(7, "0").slice(0, 7);
}

/** Which template customer `i` gets: a fixed, scattered assignment. */
export function templateOf(i: number, templates: number): number {
  return (Math.imul(i ^ 0x5bd1e995, 0x27d4eb2d) >>> 0) % templates;
}

/** What kind of billing history a template has; the weights are the mix of the whole population. */
export const MIX = [
  ["paid", 0.4],
  ["paid-two-subscriptions", 0.08],
  ["trial", 0.1],
  ["grace", 0.08],
  ["pending", 0.07],
  ["revoked", 0.05],
  ["suspended", 0.05],
  ["canceled", 0.09],
  ["trial-ended", 0.05],
  ["override", 0.03],
] as const;
export type Kind = (typeof MIX)[number][0];

function pickKind(r: () => number): Kind {
  let x = r();
  for (const [k, w] of MIX) {
    if (x < w) return k;
    x -= w;
  }
  return "paid";
}

/** Billing events of one subscription, built step by step; times are Unix ms. */
class Story {
  readonly events: BillingEvent[] = [];
  private readonly b: BillingEvents;
  constructor(
    private readonly r: () => number,
    subscriptionId: string,
  ) {
    this.b = new BillingEvents({ customerId: "", subscriptionId, source: "stripe", eventId: () => randomId("evt_", r) });
  }

  subscribe(at: number, plan: string, o: { quantity?: number; addons?: string[]; trialEnd?: number; canceled?: boolean; cancelAt?: number; periodEnd?: number } = {}): this {
    this.events.push(
      this.b.subscription(at, {
        status: o.canceled ? SubscriptionStatus.SUBSCRIPTION_STATUS_CANCELED : SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE,
        planId: plan,
        addonIds: o.addons ?? [],
        quantity: o.quantity ?? 1,
        currentPeriodStart: at,
        currentPeriodEnd: o.periodEnd ?? at + 30 * DAY,
        cancelAt: o.cancelAt,
        trialEnd: o.trialEnd,
      }),
    );
    return this;
  }

  pay(at: number, invoiceId: string, result: PaymentResult, plan: string, start: number, end: number, o: { quantity?: number; addons?: string[] } = {}): this {
    this.events.push(
      this.b.payment(at, {
        invoiceId,
        result,
        periodStart: start,
        periodEnd: end,
        planId: plan,
        addonIds: o.addons ?? [],
        quantity: o.quantity ?? 1,
        session: this.r() < 0.8 ? PaymentSession.PAYMENT_SESSION_OFF_SESSION : PaymentSession.PAYMENT_SESSION_ON_SESSION,
        amountMinor: 900 + Math.floor(this.r() * 50_000),
        currency: this.r() < 0.6 ? "EUR" : "USD",
        failureReason: result === PaymentResult.PAYMENT_RESULT_FAILED ? (this.r() < 0.7 ? "card_declined" : "insufficient_funds") : "",
      }),
    );
    return this;
  }

  recover(at: number, invoiceId: string, result: RecoveryResult, next?: number): this {
    this.events.push(this.b.recovery(at, invoiceId, result, next));
    return this;
  }
}

/** A paid history: `months` monthly invoices, the last ending at `lastEnd`. Returns the last invoice id. */
function paidMonths(s: Story, r: () => number, plan: string, lastEnd: number, months: number, o: { quantity?: number; addons?: string[] }): string {
  let id = "";
  for (let m = months - 1; m >= 0; m--) {
    const end = lastEnd - m * 30 * DAY;
    id = randomId("in_", r);
    s.pay(end - 30 * DAY + 60_000, id, PaymentResult.PAYMENT_RESULT_SUCCEEDED, plan, end - 30 * DAY, end, o);
  }
  return id;
}

function planAndQuantity(r: () => number): { plan: string; quantity: number; addons: string[] } {
  const x = r();
  const plan = x < 0.3 ? "basic" : x < 0.8 ? "premium" : "enterprise";
  const quantity = plan === "basic" ? 1 : 1 + Math.floor(r() ** 2 * 50);
  const addons = plan !== "enterprise" && r() < 0.15 ? ["ai-assistant"] : [];
  return { plan, quantity, addons };
}

/** One template document (customer_id empty), of the given kind, evaluated around `now`. */
export function templateDocument(kind: Kind, r: () => number, now: number): AccessDocument {
  const s = new Story(r, randomId("sub_", r));
  const { plan, quantity, addons } = planAndQuantity(r);
  const o = { quantity, addons };
  const months = 1 + Math.floor(r() * 6);
  const periodEnd = now + Math.floor((0.05 + r() * 0.9) * 30 * DAY); // the current period ends this far ahead
  const since = periodEnd - months * 30 * DAY;
  const stories = [s];
  const overrides: Override[] = [];
  switch (kind) {
    case "paid":
    case "override":
    case "paid-two-subscriptions":
      s.subscribe(since, plan, { ...o, periodEnd: since + 30 * DAY });
      paidMonths(s, r, plan, periodEnd, months, o);
      if (kind === "paid-two-subscriptions") {
        const t = new Story(r, randomId("sub_", r));
        const p2 = planAndQuantity(r);
        t.subscribe(since, p2.plan, { quantity: p2.quantity, periodEnd: since + 30 * DAY });
        paidMonths(t, r, p2.plan, periodEnd - 3 * DAY, Math.max(1, months - 1), { quantity: p2.quantity });
        stories.push(t);
      }
      if (kind === "override") {
        const deny = r() < 0.3;
        overrides.push({
          overrideId: randomId("ovr_", r, 16),
          feature: deny ? "*" : "ai-assistant",
          effect: deny ? OverrideEffect.OVERRIDE_EFFECT_DENY : OverrideEffect.OVERRIDE_EFFECT_GRANT,
          value: undefined,
          validFromMs: now - 2 * DAY,
          validUntilMs: now + 28 * DAY,
          reason: deny ? "abuse investigation #4821" : "beta programme",
          actor: "support@example.com",
          createdAtMs: now - 2 * DAY,
        });
      }
      break;
    case "trial":
      s.subscribe(now - 3 * DAY, plan, { ...o, trialEnd: now + Math.floor((1 + r() * 13) * DAY) });
      break;
    case "trial-ended":
      s.subscribe(now - 20 * DAY, plan, { ...o, trialEnd: now - Math.floor((1 + r() * 5) * DAY) });
      break;
    case "grace": {
      // The paid period ended 1-6 days ago; the renewal failed (retrying) or awaits 3-D Secure.
      const ended = now - Math.floor((1 + r() * 5) * DAY);
      s.subscribe(ended - months * 30 * DAY, plan, { ...o, periodEnd: ended + 30 * DAY });
      paidMonths(s, r, plan, ended, months, o);
      const inv = randomId("in_", r);
      if (r() < 0.7) {
        s.pay(ended + 60_000, inv, PaymentResult.PAYMENT_RESULT_FAILED, plan, ended, ended + 30 * DAY, o);
        s.recover(ended + 120_000, inv, RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED, now + DAY);
      } else {
        s.pay(ended + 60_000, inv, PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION, plan, ended, ended + 30 * DAY, o);
      }
      break;
    }
    case "pending": {
      // An upgrade paying by 3-D Secure or a SEPA debit still processing.
      const result = r() < 0.6 ? PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION : PaymentResult.PAYMENT_RESULT_PROCESSING;
      s.subscribe(since, "basic", { periodEnd: since + 30 * DAY });
      paidMonths(s, r, "basic", periodEnd, months, {});
      s.subscribe(now - 600_000, plan === "basic" ? "premium" : plan, { ...o, periodEnd });
      s.pay(now - 500_000, randomId("in_", r), result, plan === "basic" ? "premium" : plan, now - 600_000, periodEnd, o);
      break;
    }
    case "revoked": {
      s.subscribe(since, plan, { ...o, periodEnd: since + 30 * DAY });
      const last = paidMonths(s, r, plan, periodEnd, months, o);
      const x = r();
      const result = x < 0.5 ? PaymentResult.PAYMENT_RESULT_REFUNDED : x < 0.8 ? PaymentResult.PAYMENT_RESULT_DISPUTE_OPENED : PaymentResult.PAYMENT_RESULT_DISPUTE_LOST;
      s.pay(now - 2 * DAY, last, result, plan, periodEnd - 30 * DAY, periodEnd, o);
      break;
    }
    case "suspended": {
      const ended = now - Math.floor((8 + r() * 20) * DAY);
      s.subscribe(ended - months * 30 * DAY, plan, { ...o, periodEnd: ended + 30 * DAY });
      paidMonths(s, r, plan, ended, months, o);
      const inv = randomId("in_", r);
      s.pay(ended + 60_000, inv, PaymentResult.PAYMENT_RESULT_FAILED, plan, ended, ended + 30 * DAY, o);
      s.recover(ended + 3 * DAY, inv, RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED, ended + 5 * DAY);
      if (r() < 0.6) s.recover(ended + 7 * DAY, inv, RecoveryResult.RECOVERY_RESULT_EXHAUSTED);
      break;
    }
    case "canceled": {
      const ended = now - Math.floor(r() * 60 * DAY);
      s.subscribe(ended - months * 30 * DAY, plan, { ...o, periodEnd: ended });
      paidMonths(s, r, plan, ended, months, o);
      s.subscribe(ended - DAY, plan, { ...o, canceled: true, periodEnd: ended });
      break;
    }
  }
  return foldDocument("", stories.flatMap((x) => x.events), overrides);
}

/**
 * `count` template documents encoded without a customer id (field 1), plus what they are. A
 * customer's document is its template with its id prepended: see `documentBytes`.
 */
export function templates(count: number, seed: number, now: number): { bodies: Buffer[]; kinds: Kind[] } {
  const r = rng(seed);
  const bodies: Buffer[] = [];
  const kinds: Kind[] = [];
  for (let i = 0; i < count; i++) {
    const kind = pickKind(r);
    const doc = templateDocument(kind, r, now);
    bodies.push(Buffer.from(AccessDocument.encode(doc).finish()));
    kinds.push(kind);
  }
  return { bodies, kinds };
}

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

/** `AccessDocument` bytes: field 1 (customer_id) then the template's fields, as the encoder writes them. */
export function documentBytes(id: string, body: Buffer): Buffer {
  const idBytes = Buffer.from(id, "utf8");
  return Buffer.concat([Buffer.from([0x0a, ...varint(idBytes.length)]), idBytes, body]);
}

/** Fails loudly if the hand-built encoding ever diverges from the generated encoder. */
export function selfCheck(body: Buffer): void {
  const id = customerId(12345);
  const doc = documentBytes(id, body);
  const decoded = AccessDocument.decode(doc);
  if (decoded.customerId !== id) throw new Error("documentBytes: customer_id not decoded back");
  const again = Buffer.from(AccessDocument.encode(decoded).finish());
  if (!again.equals(doc)) throw new Error("documentBytes: not the encoder's bytes");
}

// ---------------------------------------------------------------------------------------------
// Billing events for the writer

const benchEvent = (customerId: string, eventId: string, at: number, kind: EventKind): BillingEvent =>
  billingEvent({ eventId, customerId, subscriptionId: "sub_1", source: "bench" }, at, kind);

export function subscriptionEvent(customerId: string, eventId: string, at: number, plan: string, version: number, quantity = 1): BillingEvent {
  return benchEvent(customerId, eventId, at, subscriptionChange({ planId: plan, quantity, currentPeriodStart: at - DAY, currentPeriodEnd: at + 29 * DAY, version }));
}

export function paymentEvent(customerId: string, eventId: string, at: number, invoiceId: string, result: PaymentResult, plan = "premium", quantity = 1): BillingEvent {
  return benchEvent(
    customerId,
    eventId,
    at,
    paymentOutcome({
      invoiceId,
      result,
      periodStart: at - DAY,
      periodEnd: at + 29 * DAY,
      planId: plan,
      quantity,
      session: PaymentSession.PAYMENT_SESSION_OFF_SESSION,
      amountMinor: 4900 * quantity,
      currency: "EUR",
    }),
  );
}

/**
 * An endless, realistic event stream over `customers` customers, round robin: each customer's
 * life cycles through subscribe, pay, upgrade with 3-D Secure, a failed renewal recovered, etc.
 * A customer gets an event every `customers` events, so its fact count (and fold cost) grows slowly.
 */
export class EventStream {
  private n = 0;
  // Events advance 1 ms each, faster than real time: start in the past so none is dated ahead
  // of the writer's clock (which it rejects beyond --max-event-skew).
  private readonly start = Date.now() - DAY;
  constructor(
    private readonly customers: number,
    private readonly prefix: string,
    private readonly offset = 0,
  ) {}

  next(): BillingEvent {
    const n = this.n++;
    const c = n % this.customers;
    const round = Math.floor(n / this.customers);
    const id = customerId(this.offset + c);
    const step = round % 8;
    const cycle = Math.floor(round / 8);
    const at = this.start + n;
    const eventId = `${this.prefix}_${n}`;
    const inv = (k: number): string => `in_${this.prefix}_${c}_${cycle * 3 + k}`;
    const qty = 1 + (c % 20);
    switch (step) {
      case 0:
        return subscriptionEvent(id, eventId, at, "premium", cycle * 2 + 1, qty);
      case 1:
        return paymentEvent(id, eventId, at, inv(0), PaymentResult.PAYMENT_RESULT_SUCCEEDED, "premium", qty);
      case 2:
        return subscriptionEvent(id, eventId, at, "enterprise", cycle * 2 + 2, qty);
      case 3:
        return paymentEvent(id, eventId, at, inv(1), PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION, "enterprise", qty);
      case 4:
        return paymentEvent(id, eventId, at, inv(1), PaymentResult.PAYMENT_RESULT_SUCCEEDED, "enterprise", qty);
      case 5:
        return paymentEvent(id, eventId, at, inv(2), PaymentResult.PAYMENT_RESULT_FAILED, "enterprise", qty);
      case 6:
        return benchEvent(id, eventId, at, recoveryOutcome(inv(2), RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED, at + DAY));
      default:
        return paymentEvent(id, eventId, at, inv(2), PaymentResult.PAYMENT_RESULT_SUCCEEDED, "enterprise", qty);
    }
  }
}
