import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { run } from "../../src/cli/reconcile.js";
import { NatsServer } from "../harness/nats.js";
import { tempDir } from "../harness/tmp.js";
import { startTestWriter, waitFor, type TestWriter } from "../harness/writer.js";
import { DAY, PRICE_MAP_PATH, PRICES, StripeAccount, T0 } from "./fixtures/stripe.js";
import { StripeApiDouble } from "./fixtures/stripe-api.js";

/**
 * Reconciliation through a real writer (gRPC, SQLite ledger, NATS): `proofgate reconcile stripe`
 * one-off, and the writer's scheduled mode, against a local double of Stripe's API holding a
 * paid subscription whose webhooks were all lost.
 */
describe("Stripe reconciliation with a real writer", () => {
  let nats: NatsServer;
  let double: StripeApiDouble;
  const dir = tempDir("proofgate-reconcile-");
  const writers: TestWriter[] = [];
  const p1 = { start: T0, end: T0 + 30 * DAY };
  const clock = (T0 + 2 * DAY) * 1000;

  beforeAll(async () => {
    nats = await NatsServer.start();
    double = await StripeApiDouble.start();
  });
  afterEach(async () => {
    for (const w of writers.splice(0)) await w.dispose();
    vi.restoreAllMocks();
  });
  afterAll(async () => {
    await double.close();
    await nats.dispose();
    dir.dispose();
  });

  /**
   * The writer's clock stands at the fixtures' date while reconciliation stamps what it observes
   * with today's: allow that gap, which a real writer (whose clock is today's) never sees.
   */
  const CLOCK_SKEW_OF_THIS_TEST = 10 * 365 * 86_400_000;

  /** A customer whose Stripe objects exist but whose webhooks never arrived. */
  function lostCustomer(name: string): { customer: string; invoiceId: string } {
    const l = new StripeAccount(name);
    const sub = l.subscription({ id: l.id("sub"), status: "active", items: [{ price: PRICES.premium, quantity: 3 }], ...p1 });
    const inv = l.invoice({ id: l.id("in"), subscription: sub["id"] as string, lines: [{ price: PRICES.premium, quantity: 3, ...p1 }], status: "paid", billingReason: "subscription_create", created: T0 + 5 });
    double.put({ ...sub, object: "subscription" }, inv);
    return { customer: l.customer, invoiceId: inv["id"] as string };
  }

  it("proofgate reconcile stripe: a dry run reports, a run restores and reports, a second run publishes nothing", async () => {
    const lost = lostCustomer("cus_CliLost00001");
    const w = await startTestWriter({ natsUrl: nats.url, now: () => clock, options: { maxEventSkew: CLOCK_SKEW_OF_THIS_TEST } });
    writers.push(w);
    await w.client.applyCatalog();
    vi.stubEnv("PROOFGATE_STRIPE_API_KEY", "rk_test_reconcile");
    const out: string[] = [];
    vi.spyOn(console, "log").mockImplementation((...args: unknown[]) => {
      out.push(args.join(" "));
    });
    const args = ["stripe", "--writer", w.writer.grpcAddress, "--price-map", PRICE_MAP_PATH, "--api-base", double.baseUrl, "--links", `${dir.path}/cli.stripe-links`];

    expect(await run([...args, "--dry-run"])).toBe(0);
    expect(out.join("\n")).toMatch(new RegExp(`${lost.customer}[\\s\\S]*dry_run.*stripe:${lost.invoiceId}:paid`));
    expect(out.at(-1)).toMatch(/dry run: nothing published/);
    await expect(w.client.getCustomer(lost.customer)).rejects.toThrow(/NOT_FOUND|unknown customer/);

    out.length = 0;
    expect(await run(args)).toBe(0);
    expect(out.join("\n")).toMatch(new RegExp(`${lost.customer}[\\s\\S]*accepted.*stripe:${lost.invoiceId}:paid`));
    const doc = await w.client.getCustomer(lost.customer);
    expect(doc.entitlements.find((e) => e.feature === "seats")).toMatchObject({ allowed: true, value: "3" });
    const facts = doc.facts.length;

    out.length = 0;
    expect(await run(args)).toBe(0);
    expect(out.join("\n")).not.toContain(lost.customer);
    expect(out.at(-1)).toMatch(/0 missing event\(s\), 0 customer\(s\)/);
    expect((await w.client.getCustomer(lost.customer)).facts).toHaveLength(facts);
  });

  it("the writer's scheduled reconciliation restores a customer whose webhooks were all lost", async () => {
    const lost = lostCustomer("cus_SchedLost0001");
    const w = await startTestWriter({
      natsUrl: nats.url,
      now: () => clock,
      options: {
        stripeWebhookSecret: "whsec_scheduled",
        stripePriceMap: PRICE_MAP_PATH,
        stripeApiKey: "rk_test_scheduled",
        stripeApiBase: double.baseUrl,
        stripeReconcileInterval: 200,
        maxEventSkew: CLOCK_SKEW_OF_THIS_TEST,
        ledger: `${dir.path}/scheduled.db`,
      },
    });
    writers.push(w);
    await w.client.applyCatalog();
    await waitFor(async () => {
      try {
        const doc = await w.client.getCustomer(lost.customer);
        return doc.entitlements.some((e) => e.feature === "seats" && e.allowed && e.value === "3");
      } catch {
        return false;
      }
    });
    const metrics = await (await fetch(`http://${w.writer.httpAddress}/metrics`)).text();
    expect(metrics).toMatch(/proofgate_stripe_reconcile_drift_total\{kind="payment"[^}]*\} [1-9]/);
  });
});
