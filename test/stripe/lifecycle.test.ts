import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { status as grpcStatus } from "@grpc/grpc-js";
import { statusName } from "../../src/policy/index.js";
import { NatsServer } from "../harness/nats.js";
import { grpcError, startTestSidecar, testCatalog, waitFor, type TestSidecar } from "../harness/sidecar.js";
import { tempDir } from "../harness/tmp.js";
import { startTestWriter, type TestWriter } from "../harness/writer.js";
import { lifecycle, CUSTOMER_A } from "./fixtures/lifecycle.js";
import { DAY, PRICE_MAP_PATH, PRICES, SECRET, StripeAccount, T0, deliver, type Delivery, type StripeEvent } from "./fixtures/stripe.js";

/**
 * The issue's acceptance test: signed Stripe deliveries to a real writer's `POST /webhooks/stripe`,
 * replicated over a real nats-server to a real sidecar, and every decision asked of the sidecar.
 * Writer and sidecar share a test clock, set to each step's time (the fixtures' dates are in
 * 2026-11); signatures are made at the real time, as Stripe does.
 */
describe("Stripe lifecycle through writer, NATS and sidecar", () => {
  let nats: NatsServer;
  let writer: TestWriter;
  let sidecar: TestSidecar;
  const dir = tempDir("proofgate-stripe-");
  let clock = T0 * 1000;
  let revision = 0;

  beforeAll(async () => {
    nats = await NatsServer.start();
    writer = await startTestWriter({
      natsUrl: nats.url,
      now: () => clock,
      options: { stripeWebhookSecret: SECRET, stripePriceMap: PRICE_MAP_PATH, ledger: `${dir.path}/ledger.db` },
    });
    revision = await writer.client.applyCatalog(testCatalog());
    sidecar = await startTestSidecar({ natsUrl: nats.url, dir: dir.path, now: () => clock });
  });

  afterAll(async () => {
    await sidecar.close();
    await writer.close();
    await nats.dispose();
    dir.dispose();
  });

  const url = (): string => `http://${writer.writer.httpAddress}/webhooks/stripe`;

  async function post(event: StripeEvent, opts: Parameters<typeof deliver>[2] = {}): Promise<Delivery> {
    const r = await deliver(url(), event, opts);
    if (r.body.revision) revision = Math.max(revision, r.body.revision);
    return r;
  }

  /**
   * The sidecar's answer once its replica holds every revision the webhook reported and a writer
   * heartbeat has confirmed it current (a loaded machine can delay that past the revision).
   */
  const check = (customerId: string, feature: string): ReturnType<TestSidecar["client"]["check"]> =>
    waitFor(async () => {
      const d = await sidecar.client.check({ customerId, feature, minRevision: revision });
      return d.stale ? undefined : d;
    }, `a fresh answer for ${customerId} ${feature}`);

  it("answers every step of the lifecycle as the check rules say", async () => {
    for (const step of lifecycle()) {
      clock = step.at * 1000;
      for (const event of step.events) {
        const r = await post(event);
        expect(r.status, `${step.label}: ${event.type}: ${JSON.stringify(r.body)}`).toBe(200);
        expect(r.body.results?.filter((x) => x.result === "rejected") ?? [], `${step.label}: ${event.type}`).toEqual([]);
      }
      for (const e of step.expect) {
        const d = await check(e.customer, e.feature);
        const where = `${step.label}: ${e.customer} ${e.feature}: ${d.reason}`;
        expect(d.stale, where).toBe(false);
        expect(statusName(d.status), where).toBe(e.status);
        expect(d.allowed, where).toBe(e.status === "GRANTED" || e.status === "GRACE_PERIOD");
        if (e.reason) expect(d.reason, where).toMatch(e.reason);
        if (e.value !== undefined) expect(d.value, where).toBe(e.value);
        if (e.validUntilMs !== undefined) expect(d.validUntil?.getTime(), where).toBe(e.validUntilMs);
      }
    }
    // The writer kept the Stripe event ids as idempotency keys and "stripe" as the source.
    const doc = await writer.client.getCustomer(CUSTOMER_A);
    expect(doc.facts.every((f) => f.source === "stripe" && /^(evt_|stripe:)/.test(f.eventId))).toBe(true);
  });

  it("rejects a tampered body, a wrong secret and an expired timestamp with 400, and applies nothing", async () => {
    clock = (T0 + 60) * 1000;
    const acct = new StripeAccount("cus_R2uForgedQ0vX");
    const forged = acct.event(
      "customer.subscription.created",
      acct.subscription({ id: "sub_1QForged0Kb8mTr2cVwAAAA", status: "trialing", items: [{ price: PRICES.enterprise }], start: T0, end: T0 + 30 * DAY, trialEnd: T0 + 30 * DAY }),
      T0,
    );
    const tampered = await post(forged, { tamper: (body) => body.replace(PRICES.enterprise.id, PRICES.premium.id) });
    const wrongSecret = await post(forged, { secret: "whsec_not_this_endpoints_secret" });
    const expired = await post(forged, { timestamp: Math.floor(Date.now() / 1000) - 600 });
    for (const [what, r] of [["tampered", tampered], ["wrong secret", wrongSecret], ["expired", expired]] as const) {
      expect(r.status, what).toBe(400);
      expect(r.body.error, what).toBeTruthy();
      expect(r.body.results, what).toBeUndefined();
    }
    expect(expired.body.error).toMatch(/tolerance/);

    // A genuine delivery after them is applied; once the sidecar has it, the forged one is still unknown.
    const genuine = new StripeAccount("cus_R2vGenuineQ1w");
    const ok = await post(
      genuine.event("customer.subscription.created", genuine.subscription({ id: "sub_1QGenuine0Kb8mTr2cVwAA", status: "trialing", items: [{ price: PRICES.basic }], start: T0, end: T0 + 30 * DAY, trialEnd: T0 + 14 * DAY }), T0),
    );
    expect(ok.status).toBe(200);
    expect(statusName((await check(genuine.customer, "advanced-filtering")).status)).toBe("GRANTED");
    expect(statusName((await check(acct.customer, "ai-assistant")).status)).toBe("UNKNOWN_CUSTOMER");
    await grpcError(writer.client.getCustomer(acct.customer), grpcStatus.NOT_FOUND);

    const metrics = await (await fetch(`http://${writer.writer.httpAddress}/metrics`)).text();
    expect(metrics).toMatch(/proofgate_stripe_refused_total\{reason="bad_signature"[^}]*\} 2/);
    expect(metrics).toMatch(/proofgate_stripe_refused_total\{reason="expired"[^}]*\} 1/);
  });

  it("has no Stripe route on a writer without a webhook secret", async () => {
    const plain = await startTestWriter({ natsUrl: nats.url });
    try {
      const [first] = lifecycle();
      const r = await fetch(`http://${plain.writer.httpAddress}/webhooks/stripe`, { method: "POST", body: JSON.stringify(first?.events[0]) });
      expect(r.status).toBe(404);
    } finally {
      await plain.dispose();
    }
  });
});
