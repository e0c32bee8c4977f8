import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Registry } from "prom-client";
import { silentLogger } from "../../src/observability/logger.js";
import { ALLOWED_STATUSES } from "../../src/policy/index.js";
import { createStripeWebhook, MemoryLinkStore, PriceMap, STRIPE_WEBHOOK_ROUTE } from "../../src/stripe/index.js";
import { OpsServer } from "../../src/transport/http.js";
import { lifecycle, CUSTOMER_A, CUSTOMER_B, type Step } from "./fixtures/lifecycle.js";
import { DAY, PRICE_MAP_PATH, PRICES, SECRET, StripeAccount, T0, deliver, type StripeEvent } from "./fixtures/stripe.js";
import { shuffle } from "../harness/random.js";
import { PolicyWriter } from "./policy-writer.js";

/** A webhook on a real HTTP server in front of the policy core (no ledger, no NATS). */
class Endpoint {
  private constructor(
    readonly server: OpsServer,
    readonly writer: PolicyWriter,
    readonly registry: Registry,
  ) {}

  static async start(opts: { priceMap?: PriceMap; toleranceSeconds?: number } = {}): Promise<Endpoint> {
    const writer = new PolicyWriter();
    const registry = new Registry();
    const handler = createStripeWebhook({
      secret: SECRET,
      ...(opts.toleranceSeconds === undefined ? {} : { toleranceSeconds: opts.toleranceSeconds }),
      priceMap: opts.priceMap ?? PriceMap.load(PRICE_MAP_PATH),
      links: new MemoryLinkStore(),
      apply: writer.apply,
      logger: silentLogger(),
      registry,
    });
    const server = await OpsServer.start("127.0.0.1:0", { registry, healthy: () => true, ready: () => true, routes: { [STRIPE_WEBHOOK_ROUTE]: handler } }, silentLogger());
    return new Endpoint(server, writer, registry);
  }

  get url(): string {
    return `http://${this.server.address}/webhooks/stripe`;
  }

  /** The counter value for `labels`, 0 when never incremented. */
  async counter(name: string, labels: Record<string, string>): Promise<number> {
    const metric = (await this.registry.getMetricsAsJSON()).find((m) => m.name === name);
    const v = metric?.values.find((x) => Object.entries(labels).every(([k, want]) => (x.labels as Record<string, unknown>)[k] === want));
    return v?.value ?? 0;
  }
}

function expectDecisions(writer: PolicyWriter, step: Step): void {
  for (const e of step.expect) {
    const d = writer.decide(e.customer, e.feature, step.at * 1000);
    const where = `${step.label}: ${e.customer} ${e.feature}: ${d.reason}`;
    expect(d.statusName, where).toBe(e.status);
    expect(d.allowed, where).toBe(ALLOWED_STATUSES.has(d.status));
    if (e.reason) expect(d.reason, where).toMatch(e.reason);
    if (e.value !== undefined) expect(d.value, where).toBe(e.value);
    if (e.validUntilMs !== undefined) expect(d.validUntilMs, where).toBe(e.validUntilMs);
  }
}

describe("Stripe webhook over the policy core", () => {
  let ep: Endpoint;
  beforeEach(async () => {
    ep = await Endpoint.start();
  });
  afterEach(async () => {
    await ep.server.close();
  });

  it("maps the full lifecycle (3-D Secure checkout, failed renewal and recovery, refunds, lost dispute) to the expected decisions", async () => {
    for (const step of lifecycle()) {
      for (const event of step.events) {
        const r = await deliver(ep.url, event);
        expect(r.status, `${step.label}: ${event.type}: ${JSON.stringify(r.body)}`).toBe(200);
      }
      expectDecisions(ep.writer, step);
    }
    expect(await ep.counter("proofgate_stripe_events_total", { type: "charge.refunded", outcome: "ignored_partial_refund" })).toBe(1);
    expect(await ep.counter("proofgate_stripe_events_total", { type: "invoice.finalized", outcome: "ignored_unhandled_type" })).toBe(1);
    expect(await ep.counter("proofgate_stripe_events_total", { type: "invoice.paid", outcome: "applied" })).toBe(3);
  });

  it("treats Stripe's retry of an event as a duplicate: the Stripe event id is the idempotency key", async () => {
    const [first] = lifecycle();
    const created = first?.events[0] as StripeEvent;
    const a = await deliver(ep.url, created);
    const b = await deliver(ep.url, created);
    expect(a.body.results?.map((r) => r.result)).toEqual(["accepted"]);
    expect(b.status).toBe(200);
    expect(b.body.results).toEqual([{ event_id: created.id, result: "duplicate" }]);
    expect(ep.writer.facts.size).toBe(1);
  });

  it("gives the same decisions whatever the delivery order, with every event delivered twice and failures retried", async () => {
    const steps = lifecycle();
    const all = steps.flatMap((s) => s.events);
    for (const e of all) expect((await deliver(ep.url, e)).status).toBe(200);

    for (const seed of [7, 1337, 424242]) {
      const other = await Endpoint.start();
      try {
        let pending = shuffle([...all, ...all], seed);
        // Stripe retries what failed (a 500: e.g. an invoice before the subscription that names its price).
        for (let round = 0; pending.length > 0; round++) {
          expect(round, `seed ${seed}: deliveries still failing: ${pending.map((e) => e.type).join(", ")}`).toBeLessThan(5);
          const failed: StripeEvent[] = [];
          for (const e of pending) if ((await deliver(other.url, e)).status !== 200) failed.push(e);
          pending = failed;
        }
        expect([...other.writer.facts.keys()].sort(), `seed ${seed}`).toEqual([...ep.writer.facts.keys()].sort());
        for (const step of steps) {
          for (const customer of [CUSTOMER_A, CUSTOMER_B]) {
            for (const feature of other.writer.catalog.featureKeys) {
              const want = ep.writer.decide(customer, feature, step.at * 1000);
              const got = other.writer.decide(customer, feature, step.at * 1000);
              expect(got, `seed ${seed}, ${customer} ${feature} at ${step.label}`).toEqual(want);
            }
          }
        }
      } finally {
        await other.server.close();
      }
    }
  });

  it("parks a refund that arrives before its payment is linked to an invoice, and applies it once the link arrives", async () => {
    const acct = new StripeAccount("cus_R2pParkQ1aZbX");
    const sub = "sub_1QPark00Kb8mTr2cVwAAAAAA";
    const inv = "in_1QPark00Kb8mTr2cVwInv0001";
    const pi = "pi_3QPark00Kb8mTr2cVwPi00001";
    const period = { start: T0, end: T0 + 30 * DAY };
    const refund = acct.event("charge.refunded", acct.charge({ id: "ch_3QPark00Kb8mTr2cVwCh00001", paymentIntent: pi, amount: 4900, amountRefunded: 4900, created: T0 + 60 }), T0 + DAY);
    await deliver(ep.url, acct.event("customer.subscription.created", acct.subscription({ id: sub, status: "active", items: [{ price: PRICES.premium }], ...period }), T0));
    await deliver(ep.url, acct.event("invoice.paid", acct.invoice({ id: inv, subscription: sub, lines: [{ price: PRICES.premium, ...period }], status: "paid", billingReason: "subscription_create", created: T0 }), T0 + 60));
    expect(ep.writer.decide(acct.customer, "api-access", (T0 + 2 * DAY) * 1000).statusName).toBe("GRANTED");

    const parked = await deliver(ep.url, refund);
    expect(parked.status).toBe(200);
    expect(parked.body).toMatchObject({ ignored: "unlinked", parked: true });
    expect(ep.writer.decide(acct.customer, "api-access", (T0 + 2 * DAY) * 1000).statusName).toBe("GRANTED");

    const link = await deliver(ep.url, acct.event("invoice_payment.paid", acct.invoicePayment({ invoice: inv, paymentIntent: pi, amount: 4900, paidAt: T0 + 60 }), T0 + 60));
    expect(link.status).toBe(200);
    expect(link.body.results).toEqual([{ event_id: "stripe:ch_3QPark00Kb8mTr2cVwCh00001:refunded", result: "accepted" }]);
    expect(ep.writer.decide(acct.customer, "api-access", (T0 + 2 * DAY) * 1000).statusName).toBe("REVOKED");
    expect(await ep.counter("proofgate_stripe_events_total", { type: "charge.refunded", outcome: "released" })).toBe(1);
    // Released once: a second sighting of the link applies nothing new.
    const again = await deliver(ep.url, acct.event("invoice_payment.paid", acct.invoicePayment({ invoice: inv, paymentIntent: pi, amount: 4900, paidAt: T0 + 60 }), T0 + 61));
    expect(again.body).toMatchObject({ ignored: "unhandled_type" });
  });

  it("acknowledges event types it does not use, and counts them by type", async () => {
    const acct = new StripeAccount("cus_R2qUnusedTypes");
    const e = acct.event("customer.created", { id: acct.customer, object: "customer", email: "x@example.com", metadata: {} }, T0);
    const r = await deliver(ep.url, e);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ received: true, ignored: "unhandled_type" });
    expect(ep.writer.calls).toBe(0);
    expect(await ep.counter("proofgate_stripe_events_total", { type: "customer.created", outcome: "ignored_unhandled_type" })).toBe(1);
  });

  it("answers 500 for a price that maps to nothing, so Stripe retries once the map is fixed", async () => {
    const acct = new StripeAccount("cus_R2rUnmapped01");
    const e = acct.event("customer.subscription.created", acct.subscription({ id: "sub_1QUnmapped0Kb8mTr2cVw", status: "active", items: [{ price: PRICES.unknown }], start: T0, end: T0 + 30 * DAY }), T0);
    const r = await deliver(ep.url, e);
    expect(r.status).toBe(500);
    expect(r.body.error).toContain(PRICES.unknown.id);
    expect(r.body.error).toContain('lookup key "team_monthly"');
    expect(r.body.error).toMatch(/price map/);
    expect(ep.writer.calls).toBe(0);

    const fixed = await Endpoint.start({ priceMap: PriceMap.from({ plans: { premium: ["team_monthly"] } }) });
    try {
      expect((await deliver(fixed.url, e)).status).toBe(200);
      expect(fixed.writer.decide(acct.customer, "api-access", (T0 + 60) * 1000).statusName).toBe("PAYMENT_REQUIRED");
    } finally {
      await fixed.server.close();
    }
  });

  it("answers 500 when the writer cannot apply, and the retry applies", async () => {
    const [first] = lifecycle();
    const e = first?.events[0] as StripeEvent;
    ep.writer.failWith = new Error("ledger unavailable");
    const r = await deliver(ep.url, e);
    expect(r.status).toBe(500);
    expect(r.body.error).toMatch(/ledger unavailable/);
    ep.writer.failWith = undefined;
    const retry = await deliver(ep.url, e);
    expect(retry.status).toBe(200);
    expect(retry.body.results?.[0]?.result).toBe("accepted");
  });

  it("acknowledges an event the writer rejects (dead-lettered: a retry cannot help)", async () => {
    const gold = await Endpoint.start({ priceMap: PriceMap.from({ plans: { gold: [PRICES.premium.id] } }) });
    try {
      const acct = new StripeAccount("cus_R2sRejected01");
      const r = await deliver(gold.url, acct.event("customer.subscription.created", acct.subscription({ id: "sub_1QGold00Kb8mTr2cVw", status: "active", items: [{ price: PRICES.premium }], start: T0, end: T0 + 30 * DAY }), T0));
      expect(r.status).toBe(200);
      expect(r.body.results?.[0]).toMatchObject({ result: "rejected", reason: 'subscription.plan_id: unknown plan "gold"' });
      expect(await gold.counter("proofgate_stripe_events_total", { type: "customer.subscription.created", outcome: "rejected" })).toBe(1);
    } finally {
      await gold.server.close();
    }
  });

  it("suspends when dunning gives up and cancels when the subscription is deleted", async () => {
    const acct = new StripeAccount("cus_R2tDunning01");
    const sub = "sub_1QDunning0Kb8mTr2cVwAAA";
    const p1 = { start: T0, end: T0 + 30 * DAY };
    const p2 = { start: T0 + 30 * DAY, end: T0 + 60 * DAY };
    const items = [{ price: PRICES.basic }];
    const renewal = (status: "open" | "uncollectible", attempts: number): Record<string, unknown> =>
      acct.invoice({ id: "in_1QDunning0Kb8mTr2cVwIn02", subscription: sub, lines: [{ price: PRICES.basic, ...p2 }], status, billingReason: "subscription_cycle", created: p2.start, attemptCount: attempts });
    for (const e of [
      acct.event("customer.subscription.created", acct.subscription({ id: sub, status: "active", items, ...p1 }), T0),
      acct.event("invoice.paid", acct.invoice({ id: "in_1QDunning0Kb8mTr2cVwIn01", subscription: sub, lines: [{ price: PRICES.basic, ...p1 }], status: "paid", billingReason: "subscription_create", created: T0 }), T0 + 5),
      acct.event("invoice.payment_failed", renewal("open", 4), p2.start + 5 * DAY, { automatic: true }),
    ])
      expect((await deliver(ep.url, e)).status).toBe(200);
    const at = (p2.start + 5 * DAY + 60) * 1000;
    expect(ep.writer.decide(acct.customer, "advanced-filtering", at).statusName).toBe("GRACE_PERIOD");

    await deliver(ep.url, acct.event("customer.subscription.updated", acct.subscription({ id: sub, status: "unpaid", items, ...p2, latestInvoice: "in_1QDunning0Kb8mTr2cVwIn02" }), p2.start + 5 * DAY + 10, { automatic: true }));
    expect(ep.writer.decide(acct.customer, "advanced-filtering", at)).toMatchObject({ statusName: "SUSPENDED", reason: expect.stringMatching(/gave up/) as unknown });
    // The same signal from the invoice itself is idempotent at the fold.
    await deliver(ep.url, acct.event("invoice.marked_uncollectible", renewal("uncollectible", 4), p2.start + 5 * DAY + 20, { automatic: true }));
    expect(ep.writer.decide(acct.customer, "advanced-filtering", at).statusName).toBe("SUSPENDED");

    await deliver(ep.url, acct.event("customer.subscription.deleted", acct.subscription({ id: sub, status: "canceled", items, ...p2, canceledAt: p2.start + 6 * DAY }), p2.start + 6 * DAY, { automatic: true }));
    expect(ep.writer.decide(acct.customer, "advanced-filtering", (p2.start + 6 * DAY + 60) * 1000).statusName).toBe("CANCELED");
  });
});

describe("Stripe webhook signature checks", () => {
  let ep: Endpoint;
  let event: StripeEvent;
  beforeEach(async () => {
    ep = await Endpoint.start();
    event = (lifecycle()[0] as Step).events[0] as StripeEvent;
  });
  afterEach(async () => {
    await ep.server.close();
  });

  const refused = async (reason: string): Promise<number> => ep.counter("proofgate_stripe_refused_total", { reason });

  it("rejects a tampered body with 400 and applies nothing", async () => {
    const r = await deliver(ep.url, event, { tamper: (body) => body.replace('"status": "incomplete"', '"status": "active"') });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/signature does not match/);
    expect(ep.writer.calls).toBe(0);
    expect(await refused("bad_signature")).toBe(1);
  });

  it("rejects a delivery signed with another secret with 400 and applies nothing", async () => {
    const r = await deliver(ep.url, event, { secret: "whsec_someone_elses_endpoint_secret" });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/signing secret/);
    expect(ep.writer.calls).toBe(0);
  });

  it("rejects an expired timestamp (a replay) with 400 and applies nothing", async () => {
    const r = await deliver(ep.url, event, { timestamp: Math.floor(Date.now() / 1000) - 301 });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/outside the tolerance of 300s/);
    expect(ep.writer.calls).toBe(0);
    expect(await refused("expired")).toBe(1);
  });

  it("rejects a missing or malformed Stripe-Signature header with 400", async () => {
    const missing = await deliver(ep.url, event, { header: null });
    expect(missing.status).toBe(400);
    expect(missing.body.error).toMatch(/missing Stripe-Signature/);
    const garbage = await deliver(ep.url, event, { header: "v1=deadbeef" });
    expect(garbage.status).toBe(400);
    expect(garbage.body.error).toMatch(/malformed Stripe-Signature/);
    expect(ep.writer.calls).toBe(0);
    expect(await refused("missing_signature")).toBe(1);
  });

  it("accepts a delivery within the tolerance, and any of several secrets while one is rolled", async () => {
    const old = await deliver(ep.url, event, { timestamp: Math.floor(Date.now() / 1000) - 240 });
    expect(old.status).toBe(200);

    const registry = new Registry();
    const writer = new PolicyWriter();
    const handler = createStripeWebhook({ secret: `whsec_new_secret_1, ${SECRET}`, apply: writer.apply, logger: silentLogger(), registry, priceMap: PriceMap.load(PRICE_MAP_PATH) });
    const server = await OpsServer.start("127.0.0.1:0", { registry, healthy: () => true, ready: () => true, routes: { [STRIPE_WEBHOOK_ROUTE]: handler } }, silentLogger());
    try {
      const url = `http://${server.address}/webhooks/stripe`;
      expect((await deliver(url, event, { secret: "whsec_new_secret_1" })).status).toBe(200);
      expect((await deliver(url, event)).status).toBe(200);
      expect((await deliver(url, event, { secret: "whsec_retired" })).status).toBe(400);
    } finally {
      await server.close();
    }
  });
});
