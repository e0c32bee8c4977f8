import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Registry } from "prom-client";
import { silentLogger } from "../../src/observability/logger.js";
import { foldDocument } from "../../src/policy/index.js";
import { createStripeWebhook, MemoryLinkStore, PriceMap, STRIPE_WEBHOOK_ROUTE } from "../../src/stripe/index.js";
import { reconcileStripe, type LedgerView } from "../../src/stripe/reconcile.js";
import { OpsServer } from "../../src/transport/http.js";
import { DAY, PRICE_MAP_PATH, PRICES, StripeAccount, T0, deliver } from "./fixtures/stripe.js";
import { StripeApiDouble } from "./fixtures/stripe-api.js";
import { PolicyWriter } from "./policy-writer.js";

/** The ledger as reconciliation sees it, over the policy core's facts. */
function ledgerOf(writer: PolicyWriter): LedgerView {
  return {
    customer: (customerId) => {
      const facts = writer.eventsOf(customerId);
      if (facts.length === 0) return Promise.resolve(undefined);
      const doc = foldDocument(customerId, facts, []);
      return Promise.resolve({ eventIds: new Set(facts.map((f) => f.eventId)), intents: new Map(doc.subscriptions.map((s) => [s.subscriptionId, s.intent])) });
    },
  };
}

describe.each(["current", "legacy"] as const)("Stripe reconciliation against Stripe's list endpoints (%s API shape)", (api) => {
  let double: StripeApiDouble;
  beforeAll(async () => {
    double = await StripeApiDouble.start();
  });
  afterAll(async () => {
    await double.close();
  });

  it("restores a customer whose webhooks were all lost, reports it, leaves the others alone, and a second run changes nothing", async () => {
    const p1 = { start: T0, end: T0 + 30 * DAY };
    const writer = new PolicyWriter();
    const links = new MemoryLinkStore();
    const prices = PriceMap.load(PRICE_MAP_PATH);
    const registry = new Registry();

    // Customer A: every webhook arrived.
    const a = new StripeAccount(api === "current" ? "cus_DelivC0001" : "cus_DelivA0001", api);
    const subA = a.subscription({ id: a.id("sub"), status: "active", items: [{ price: PRICES.basic }], ...p1 });
    const invA = a.invoice({ id: a.id("in"), subscription: subA["id"] as string, lines: [{ price: PRICES.basic, ...p1 }], status: "paid", billingReason: "subscription_create", created: T0 + 10 });
    // Customer L: Stripe holds a paid subscription with 2 seats, the webhooks never arrived.
    const l = new StripeAccount(api === "current" ? "cus_LostCC0001" : "cus_LostAA0001", api);
    const subL = l.subscription({ id: l.id("sub"), status: "active", items: [{ price: PRICES.premium, quantity: 2 }], ...p1 });
    const invL = l.invoice({ id: l.id("in"), subscription: subL["id"] as string, lines: [{ price: PRICES.premium, quantity: 2, ...p1 }], status: "paid", billingReason: "subscription_create", created: T0 + 20 });
    double.put({ ...subA, object: "subscription" }, invA, { ...subL, object: "subscription" }, invL);

    const handler = createStripeWebhook({ secret: "whsec_reconcile", priceMap: prices, links, reader: double.reader(), apply: writer.apply, logger: silentLogger(), registry });
    const server = await OpsServer.start("127.0.0.1:0", { registry, healthy: () => true, ready: () => true, routes: { [STRIPE_WEBHOOK_ROUTE]: handler } }, silentLogger());
    try {
      for (const e of [a.event("customer.subscription.created", subA, T0), a.event("invoice.paid", invA, T0 + 10)]) {
        expect((await deliver(`http://${server.address}/webhooks/stripe`, e, { secret: "whsec_reconcile" })).status).toBe(200);
      }
    } finally {
      await server.close();
    }
    const at = (T0 + 2 * DAY) * 1000;
    expect(writer.decide(a.customer, "advanced-filtering", at).statusName).toBe("GRANTED");
    expect(writer.decide(l.customer, "seats", at).statusName).toBe("UNKNOWN_CUSTOMER");
    const factsA = writer.eventsOf(a.customer).length;

    const run = (dryRun: boolean): ReturnType<typeof reconcileStripe> =>
      reconcileStripe({ reader: double.reader(), prices, links, ledger: ledgerOf(writer), apply: writer.apply, logger: silentLogger(), registry, dryRun, now: () => at });

    // A dry run reports what is missing and applies nothing.
    const dry = await run(true);
    expect(dry.customers).toEqual([l.customer]);
    expect(writer.eventsOf(l.customer)).toEqual([]);

    // Stripe rate-limits the first requests: the client backs off and retries.
    double.rateLimit = 2;
    const first = await run(false);
    expect(first.problems).toEqual([]);
    expect(first.customers).toEqual([l.customer]);
    expect(first.read.subscriptions).toBe(2);
    expect(first.read.invoices).toBe(2);
    expect(first.drift.map((d) => [d.customerId, d.result])).toEqual(first.drift.map(() => [l.customer, "accepted"]));
    expect(first.drift.map((d) => d.why).join("\n")).toMatch(new RegExp(`invoice ${invL["id"] as string}`));
    expect(writer.decide(l.customer, "seats", at)).toMatchObject({ statusName: "GRANTED", value: "2" });
    // Customer A already had every fact: nothing was added.
    expect(writer.eventsOf(a.customer)).toHaveLength(factsA);

    const facts = writer.facts.size;
    const second = await run(false);
    expect(second.drift).toEqual([]);
    expect(second.customers).toEqual([]);
    expect(writer.facts.size).toBe(facts);

    const metrics = await registry.getMetricsAsJSON();
    const drift = metrics.find((m) => m.name === "proofgate_stripe_reconcile_drift_total");
    expect(drift?.values.reduce((n, v) => n + v.value, 0)).toBe(first.drift.length);
  });
});
