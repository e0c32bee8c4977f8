import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Registry } from "prom-client";
import { silentLogger } from "../../src/observability/logger.js";
import { createStripeWebhook, MemoryLinkStore, PriceMap, STRIPE_WEBHOOK_ROUTE } from "../../src/stripe/index.js";
import { OpsServer } from "../../src/transport/http.js";
import { DAY, PRICE_MAP_PATH, PRICES, StripeAccount, T0, deliver, type StripeEvent } from "./fixtures/stripe.js";
import { StripeApiDouble } from "./fixtures/stripe-api.js";
import { shuffle } from "../harness/random.js";
import { PolicyWriter } from "./policy-writer.js";

type Json = Record<string, unknown>;
type Api = "current" | "legacy";

/**
 * The numbered cases (and the "also not handled" list), each a story of Stripe objects
 * shaped like Stripe's published fixtures, on the current API version and on 2025-02-24.acacia,
 * delivered signed to the webhook in order, and shuffled with every event delivered twice (a 500
 * is delivered again, as Stripe does). What Stripe's API would answer is served by a local HTTP
 * double. The checks hold after all deliveries, whatever their order.
 */
interface Check {
  readonly at: number;
  readonly feature: string;
  readonly status: string;
  readonly reason?: RegExp;
  readonly value?: string;
}
interface Story {
  readonly customer: string;
  readonly events: StripeEvent[];
  /** What Stripe's API holds. */
  readonly api: Json[];
  readonly checks: Check[];
}

const p1 = { start: T0, end: T0 + 30 * DAY };
const p2 = { start: T0 + 30 * DAY, end: T0 + 60 * DAY };
let n = 0;
const account = (api: Api): StripeAccount => new StripeAccount(`cus_S${api === "current" ? "c" : "a"}${(++n).toString().padStart(4, "0")}Sem`, api);

/** The subscription paid for p1 (premium × quantity), with the first invoice. */
function paidStart(a: StripeAccount, sub: string, extra: Json = {}, quantity = 1, price = PRICES.premium): { events: StripeEvent[]; invoice: Json } {
  const invoice = a.invoice({ id: a.id("in"), subscription: sub, lines: [{ price, quantity, ...p1 }], status: "paid", billingReason: "subscription_create", created: T0 + 10 });
  return {
    invoice,
    events: [
      a.event("customer.subscription.created", { ...a.subscription({ id: sub, status: "active", items: [{ price, quantity }], ...p1 }), ...extra }, T0),
      a.event("invoice.paid", invoice, T0 + 10),
    ],
  };
}

const STORIES: Record<string, (api: Api) => Story> = {
  "1. a $0 trial invoice is no payment proof: no grace after the trial, and a canceled unpaid trial is EXPIRED": (api) => {
    const a = account(api);
    const sub = a.id("sub");
    const trialEnd = T0 + 14 * DAY;
    const trial = a.subscription({ id: sub, status: "trialing", items: [{ price: PRICES.premium }], start: T0, end: trialEnd, trialEnd });
    const zero = a.invoice({ id: a.id("in"), subscription: sub, lines: [{ price: PRICES.premium, start: T0, end: trialEnd, amount: 0 }], status: "paid", billingReason: "subscription_create", created: T0 });
    const b = account(api);
    const subB = b.id("sub");
    const trialB = b.subscription({ id: subB, status: "trialing", items: [{ price: PRICES.premium }], start: T0, end: trialEnd, trialEnd });
    const zeroB = b.invoice({ id: b.id("in"), subscription: subB, lines: [{ price: PRICES.premium, start: T0, end: trialEnd, amount: 0 }], status: "paid", billingReason: "subscription_create", created: T0 });
    return {
      customer: a.customer,
      events: [
        a.event("customer.subscription.created", trial, T0),
        a.event("invoice.paid", zero, T0),
        b.event("customer.subscription.created", trialB, T0),
        b.event("invoice.paid", zeroB, T0),
        b.event("customer.subscription.deleted", { ...trialB, status: "canceled", canceled_at: trialEnd, ended_at: trialEnd }, trialEnd),
      ],
      api: [],
      checks: [
        { at: T0 + DAY, feature: "api-access", status: "GRANTED", reason: /trial/ },
        { at: trialEnd + DAY, feature: "api-access", status: "PAYMENT_REQUIRED", reason: /trial ended/ },
        { at: trialEnd + DAY, feature: `${b.customer}:api-access`, status: "EXPIRED" },
      ],
    };
  },
  "2. an invoice of more than 10 lines (prorations first) still proves the renewal, with the seats of the period line": (api) => {
    const a = account(api);
    const sub = a.id("sub");
    const start = paidStart(a, sub, {}, 3);
    const prorations = Array.from({ length: 12 }, (_, i) => ({ price: PRICES.premium, quantity: 2 + (i % 4), start: T0 + (i + 1) * DAY, end: p1.end, amount: i % 2 ? -1000 : 1200, proration: true }));
    const renewal = a.invoice({ id: a.id("in"), subscription: sub, lines: [...prorations, { price: PRICES.premium, quantity: 4, ...p2 }], status: "paid", billingReason: "subscription_cycle", created: p2.start });
    const lines = renewal["lines"] as Json;
    const truncated = { ...renewal, lines: { ...lines, data: (lines["data"] as Json[]).slice(0, 10), has_more: true } };
    return {
      customer: a.customer,
      events: [
        ...start.events,
        a.event("customer.subscription.updated", a.subscription({ id: sub, status: "active", items: [{ price: PRICES.premium, quantity: 4 }], ...p1 }), T0 + 12 * DAY),
        a.event("invoice.paid", truncated, p2.start + 60, { automatic: true }),
      ],
      api: [renewal],
      checks: [{ at: p2.start + 20 * DAY, feature: "seats", status: "GRANTED", value: "4" }],
    };
  },
  "3. 3-D Secure reported with invoice.payment_failed is PAYMENT_PENDING, not a failure": (api) => {
    const a = account(api);
    const sub = a.id("sub");
    const pi = a.id("pi");
    const inv = { ...a.invoice({ id: a.id("in"), subscription: sub, lines: [{ price: PRICES.premium, ...p1 }], status: "open", billingReason: "subscription_create", created: T0, paymentIntent: pi }) };
    const stored = api === "current" ? { ...inv, payments: { object: "list", data: [{ object: "invoice_payment", invoice: inv["id"], payment: { type: "payment_intent", payment_intent: pi } }], has_more: false } } : inv;
    const intent = { ...a.paymentIntent({ id: pi, status: "requires_action", amount: 4900, created: T0 }), last_payment_error: { code: "authentication_required" } };
    return {
      customer: a.customer,
      events: [
        a.event("customer.subscription.created", a.subscription({ id: sub, status: "incomplete", items: [{ price: PRICES.premium }], ...p1 }), T0),
        a.event("invoice.payment_action_required", inv, T0 + 1),
        a.event("invoice.payment_failed", inv, T0 + 2),
      ],
      api: [stored, intent],
      checks: [{ at: T0 + 600, feature: "api-access", status: "PAYMENT_PENDING", reason: /authentication/ }],
    };
  },
  "4. an upgrade held in pending_update: the new features are PAYMENT_PENDING, the paid ones stay GRANTED": (api) => {
    const a = account(api);
    const sub = a.id("sub");
    const start = paidStart(a, sub, {}, 1, PRICES.basic);
    const now = T0 + 10 * DAY;
    const premiumItem = (a.subscription({ id: sub, status: "active", items: [{ price: PRICES.premium }], ...p1 })["items"] as Json)["data"] as Json[];
    const held = { ...a.subscription({ id: sub, status: "active", items: [{ price: PRICES.basic }], ...p1 }), pending_update: { expires_at: now + DAY, subscription_items: premiumItem, billing_cycle_anchor: null, trial_end: null, trial_from_plan: null } };
    const upgrade = a.invoice({
      id: a.id("in"),
      subscription: sub,
      lines: [
        { price: PRICES.basic, start: now, end: p1.end, amount: -1267, proration: true },
        { price: PRICES.premium, start: now, end: p1.end, amount: 3267, proration: true },
      ],
      status: "open",
      billingReason: "subscription_update",
      created: now,
    });
    return {
      customer: a.customer,
      events: [...start.events, a.event("customer.subscription.updated", held, now), a.event("invoice.payment_action_required", upgrade, now + 1)],
      api: [],
      checks: [
        { at: now + 600, feature: "api-access", status: "PAYMENT_PENDING" },
        { at: now + 600, feature: "advanced-filtering", status: "GRANTED" },
      ],
    };
  },
  "5. payment_intent.processing is tied to its invoice (from Stripe's API on the current version): PAYMENT_PENDING": (api) => {
    const a = account(api);
    const sub = a.id("sub");
    const pi = a.id("pi");
    const inv = a.invoice({ id: a.id("in"), subscription: sub, lines: [{ price: PRICES.premium, ...p1 }], status: "open", billingReason: "subscription_create", created: T0, paymentIntent: pi });
    const link = { ...a.invoicePayment({ invoice: inv["id"] as string, paymentIntent: pi, amount: 4900, paidAt: T0 }), status: "open" };
    return {
      customer: a.customer,
      events: [
        a.event("customer.subscription.created", a.subscription({ id: sub, status: "incomplete", items: [{ price: PRICES.premium }], ...p1 }), T0),
        a.event("payment_intent.processing", a.paymentIntent({ id: pi, status: "processing", amount: 4900, created: T0, invoice: inv["id"] as string }), T0 + 5),
      ],
      api: [inv, link],
      checks: [{ at: T0 + 2 * DAY, feature: "api-access", status: "PAYMENT_PENDING", reason: /processing/ }],
    };
  },
  "6. two subscription updates in the same second: the state Stripe holds now wins": (api) => {
    const a = account(api);
    const sub = a.id("sub");
    const start = paidStart(a, sub, {}, 5);
    const at = T0 + DAY;
    // Event ids are random in Stripe: here the older state has the larger id.
    const newer = a.event("customer.subscription.updated", a.subscription({ id: sub, status: "active", items: [{ price: PRICES.premium, quantity: 4 }], ...p1 }), at);
    const older = a.event("customer.subscription.updated", a.subscription({ id: sub, status: "active", items: [{ price: PRICES.premium, quantity: 5 }], ...p1 }), at);
    return {
      customer: a.customer,
      events: [...start.events, older, newer],
      api: [newer.data.object],
      checks: [{ at: at + 600, feature: "seats", status: "GRANTED", value: "4" }],
    };
  },
  "7. paused collection and paused subscriptions: no grace for a voided or uncollectible renewal, paused is not canceled": (api) => {
    const a = account(api);
    const sub = a.id("sub");
    const start = paidStart(a, sub, { pause_collection: { behavior: "void", resumes_at: null } });
    const voided = a.invoice({ id: a.id("in"), subscription: sub, lines: [{ price: PRICES.premium, ...p2 }], status: "void", billingReason: "subscription_cycle", created: p2.start, attemptCount: 0 });
    const b = account(api);
    const subB = b.id("sub");
    const startB = paidStart(b, subB, { pause_collection: { behavior: "mark_uncollectible", resumes_at: null } });
    const uncollectible = b.invoice({ id: b.id("in"), subscription: subB, lines: [{ price: PRICES.premium, ...p2 }], status: "uncollectible", billingReason: "subscription_cycle", created: p2.start, attemptCount: 0 });
    const c = account(api);
    const subC = c.id("sub");
    const trialEnd = T0 + 14 * DAY;
    return {
      customer: a.customer,
      events: [
        ...start.events,
        a.event("invoice.voided", voided, p2.start + 60, { automatic: true }),
        ...startB.events,
        b.event("invoice.marked_uncollectible", uncollectible, p2.start + 60, { automatic: true }),
        c.event("customer.subscription.created", c.subscription({ id: subC, status: "trialing", items: [{ price: PRICES.premium }], start: T0, end: trialEnd, trialEnd }), T0),
        c.event("customer.subscription.paused", c.subscription({ id: subC, status: "paused", items: [{ price: PRICES.premium }], start: T0, end: trialEnd, trialEnd }), trialEnd, { automatic: true }),
      ],
      api: [],
      checks: [
        { at: p2.start + DAY, feature: "api-access", status: "PAYMENT_REQUIRED", reason: /not being collected/ },
        { at: p2.start + DAY, feature: `${b.customer}:api-access`, status: "PAYMENT_REQUIRED", reason: /not being collected/ },
        { at: trialEnd + DAY, feature: `${c.customer}:api-access`, status: "PAYMENT_REQUIRED", reason: /trial ended/ },
      ],
    };
  },
  "8. an invoice sent with payment terms keeps paid access until its due date (then the grace period)": (api) => {
    const a = account(api);
    const sub = a.id("sub");
    const start = paidStart(a, sub, { collection_method: "send_invoice" });
    const due = p2.start + 30 * DAY;
    const renewal = { ...a.invoice({ id: a.id("in"), subscription: sub, lines: [{ price: PRICES.premium, ...p2 }], status: "open", billingReason: "subscription_cycle", created: p2.start, attemptCount: 0 }), collection_method: "send_invoice", due_date: due };
    return {
      customer: a.customer,
      events: [...start.events, a.event("invoice.finalized", renewal, p2.start + 3600, { automatic: true })],
      api: [],
      checks: [
        { at: p2.start + 20 * DAY, feature: "api-access", status: "GRACE_PERIOD", reason: /due on/ },
        { at: due + 8 * DAY, feature: "api-access", status: "PAYMENT_REQUIRED" },
      ],
    };
  },
  "also: a failed refund restores access": (api) => {
    const a = account(api);
    const sub = a.id("sub");
    const pi = a.id("pi");
    const ch = a.id("ch");
    const start = paidStart(a, sub);
    const invoiceId = start.invoice["id"] as string;
    const charge = a.charge({ id: ch, paymentIntent: pi, amount: 4900, amountRefunded: 4900, created: T0 + 10, invoice: invoiceId });
    const refund = { id: a.id("re"), object: "refund", amount: 4900, charge: ch, payment_intent: pi, currency: "eur", created: T0 + 5 * DAY, metadata: {}, status: "failed", failure_reason: "expired_or_canceled_card" };
    return {
      customer: a.customer,
      events: [
        ...start.events,
        a.event("invoice_payment.paid", a.invoicePayment({ invoice: invoiceId, paymentIntent: pi, amount: 4900, paidAt: T0 + 10 }), T0 + 10),
        a.event("charge.refunded", charge, T0 + 5 * DAY),
        a.event("refund.failed", refund, T0 + 6 * DAY),
      ],
      api: [],
      checks: [{ at: T0 + 7 * DAY, feature: "api-access", status: "GRANTED" }],
    };
  },
  "also: an invoice before its subscription event, naming its price by lookup key, grants at once": (api) => {
    const a = account(api);
    const sub = a.id("sub");
    const inv = a.invoice({ id: a.id("in"), subscription: sub, lines: [{ price: PRICES.premium, quantity: 2, ...p1 }], status: "paid", billingReason: "subscription_create", created: T0 });
    const price = { id: PRICES.premium.id, object: "price", lookup_key: PRICES.premium.lookupKey, metadata: {}, product: { id: PRICES.premium.product, object: "product", metadata: {} }, unit_amount: PRICES.premium.unitAmount };
    return { customer: a.customer, events: [a.event("invoice.paid", inv, T0 + 10)], api: [price], checks: [{ at: T0 + DAY, feature: "seats", status: "GRANTED", value: "2" }] };
  },
  "also: quantity_decimal and item-level trials": (api) => {
    const a = account(api);
    const sub = a.id("sub");
    const paid = a.invoice({ id: a.id("in"), subscription: sub, lines: [{ price: PRICES.premium, quantity: 3, ...p1 }, { price: PRICES.aiAssistant, ...p1, amount: 0 }], status: "paid", billingReason: "subscription_create", created: T0 });
    const lines = ((paid["lines"] as Json)["data"] as Json[]).map((l, i) => (i === 0 ? { ...l, quantity: null, quantity_decimal: "3.0" } : l));
    const items = [{ price: PRICES.premium, quantity: 3 }, { price: PRICES.aiAssistant }];
    return {
      customer: a.customer,
      events: [a.event("customer.subscription.created", a.subscription({ id: sub, status: "active", items, ...p1 }), T0), a.event("invoice.paid", { ...paid, lines: { ...(paid["lines"] as Json), data: lines } }, T0 + 10)],
      api: [],
      checks: [
        { at: T0 + DAY, feature: "seats", status: "GRANTED", value: "3" },
        // The add-on's line is in its own trial ($0): no payment proves it.
        { at: T0 + DAY, feature: "ai-assistant", status: "PAYMENT_REQUIRED" },
      ],
    };
  },
};

describe("Stripe payment semantics (issue cases), both API shapes, in order and shuffled with duplicates", () => {
  let double: StripeApiDouble;
  beforeAll(async () => {
    double = await StripeApiDouble.start();
  });
  afterAll(async () => {
    await double.close();
  });

  async function run(story: Story, order: "in order" | "shuffled"): Promise<PolicyWriter> {
    double.put(...story.api);
    const writer = new PolicyWriter();
    const registry = new Registry();
    const handler = createStripeWebhook({
      secret: "whsec_semantics",
      priceMap: PriceMap.load(PRICE_MAP_PATH),
      links: new MemoryLinkStore(),
      reader: double.reader(),
      apply: writer.apply,
      logger: silentLogger(),
      registry,
    });
    const server = await OpsServer.start("127.0.0.1:0", { registry, healthy: () => true, ready: () => true, routes: { [STRIPE_WEBHOOK_ROUTE]: handler } }, silentLogger());
    try {
      const url = `http://${server.address}/webhooks/stripe`;
      let queue = order === "in order" ? story.events : shuffle([...story.events, ...story.events], story.events.length * 7919 + 17);
      // Stripe delivers again what was not acknowledged (bounded: a story has few events).
      for (let round = 0; round < 4 && queue.length > 0; round++) {
        const again: StripeEvent[] = [];
        for (const e of queue) {
          const r = await deliver(url, e, { secret: "whsec_semantics" });
          if (r.status !== 200) again.push(e);
        }
        queue = again;
      }
      expect(queue.map((e) => e.type)).toEqual([]);
      return writer;
    } finally {
      await server.close();
    }
  }

  for (const [name, build] of Object.entries(STORIES)) {
    for (const api of ["current", "legacy"] as const) {
      for (const order of ["in order", "shuffled"] as const) {
        it(`${name} (${api === "current" ? "2026-10-28.endive" : "2025-02-24.acacia"}, ${order})`, async () => {
          const story = build(api);
          const writer = await run(story, order);
          for (const c of story.checks) {
            const [customer, feature] = c.feature.includes(":") ? (c.feature.split(":") as [string, string]) : [story.customer, c.feature];
            const d = writer.decide(customer, feature, c.at * 1000);
            const where = `${customer} ${feature} at +${((c.at - T0) / DAY).toFixed(1)}d: ${d.reason}`;
            expect(d.statusName, where).toBe(c.status);
            if (c.reason) expect(d.reason, where).toMatch(c.reason);
            if (c.value !== undefined) expect(d.value, where).toBe(c.value);
          }
        });
      }
    }
  }
});
