import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { validateEvent } from "../../src/billing/index.js";
import { CatalogIndex, parseCatalogText } from "../../src/catalog/index.js";
import { PaymentResult, PaymentSession, RecoveryResult, SubscriptionStatus, type BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { learnFromEvent, mapStripeEvent, MemoryLinkStore, PriceMap, type MapContext, type MapResult, type StripeEventShape } from "../../src/stripe/index.js";
import { lifecycle } from "./fixtures/lifecycle.js";
import { DAY, PRICE_MAP_PATH, PRICES, StripeAccount, T0, type StripeEvent } from "./fixtures/stripe.js";

const catalog = CatalogIndex.from(parseCatalogText(readFileSync(new URL("../../examples/catalog.yaml", import.meta.url), "utf8")));
const recorded = (name: string): Record<string, unknown> => JSON.parse(readFileSync(new URL(`./fixtures/${name}.json`, import.meta.url), "utf8")) as Record<string, unknown>;

function context(priceMap = PriceMap.load(PRICE_MAP_PATH)): MapContext & { links: MemoryLinkStore } {
  return { prices: priceMap, links: new MemoryLinkStore() };
}

/** Learns from, then maps, each event in order (what the webhook does); returns the last result. */
function run(ctx: MapContext & { links: MemoryLinkStore }, ...events: StripeEvent[]): MapResult {
  let last: MapResult | undefined;
  for (const e of events) {
    ctx.links.learn(learnFromEvent(e, ctx));
    last = mapStripeEvent(e, ctx);
  }
  if (!last) throw new Error("no events");
  return last;
}

function events(r: MapResult): BillingEvent[] {
  if (r.outcome !== "mapped") throw new Error(`expected mapped, got ${JSON.stringify(r)}`);
  return r.events;
}

function only(r: MapResult): BillingEvent {
  const list = events(r);
  expect(list).toHaveLength(1);
  return list[0] as BillingEvent;
}

const seconds = (d: Date | undefined): number | undefined => (d ? d.getTime() / 1000 : undefined);
const p1 = { start: T0, end: T0 + 30 * DAY };

describe("mapping Stripe events to billing events", () => {
  it("every event the lifecycle produces is a valid billing event for the demo catalog", () => {
    const ctx = context();
    let n = 0;
    for (const e of lifecycle().flatMap((s) => s.events)) {
      ctx.links.learn(learnFromEvent(e, ctx));
      const r = mapStripeEvent(e, ctx);
      if (r.outcome !== "mapped") continue;
      for (const b of r.events) {
        expect(() => validateEvent(b, catalog), `${e.type} → ${b.eventId}`).not.toThrow();
        expect(b.source).toBe("stripe");
        // A subscription change is its Stripe event; a payment fact is named after its object.
        expect(b.eventId === e.id || b.eventId.startsWith("stripe:"), b.eventId).toBe(true);
        expect(b.occurredAt?.getTime()).toBe(e.created * 1000);
        n++;
      }
    }
    expect(n).toBeGreaterThan(15);
  });

  it("subscription intent: plan from the lookup key, add-on from price metadata, quantity, item periods, cancel at period end", () => {
    const acct = new StripeAccount("cus_R2wIntent01");
    const e = acct.event(
      "customer.subscription.updated",
      acct.subscription({ id: "sub_1QIntent0Kb8mTr2cVw", status: "active", items: [{ price: PRICES.premium, quantity: 5 }, { price: PRICES.aiAssistant }], ...p1, cancelAtPeriodEnd: true }),
      T0 + 100,
    );
    const b = only(run(context(), e));
    expect(b).toMatchObject({ customerId: acct.customer, subscriptionId: "sub_1QIntent0Kb8mTr2cVw", correlationId: expect.stringMatching(/^req_/) as unknown });
    if (b.kind?.$case !== "subscription") throw new Error("not a subscription");
    const s = b.kind.value;
    expect(s).toMatchObject({ status: SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE, planId: "premium", addonIds: ["ai-assistant"], quantity: 5, version: (T0 + 100) * 10 });
    expect(seconds(s.currentPeriodStart)).toBe(p1.start);
    expect(seconds(s.currentPeriodEnd)).toBe(p1.end);
    expect(seconds(s.cancelAt)).toBe(p1.end);
    expect(s.trialEnd).toBeUndefined();
  });

  it("subscription status → intent: dunning keeps the intent, ended subscriptions cancel it", () => {
    const acct = new StripeAccount("cus_R2xStatus01");
    const statusOf = (status: string, type = "customer.subscription.updated"): SubscriptionStatus => {
      const b = events(run(context(), acct.event(type, acct.subscription({ id: "sub_1QStatus0Kb8mTr2cVw", status, items: [{ price: PRICES.basic }], ...p1 }), T0)))[0];
      if (b?.kind?.$case !== "subscription") throw new Error("not a subscription");
      return b.kind.value.status;
    };
    // Paused (a trial ended without a payment method) is still wanted: pay to resume.
    for (const s of ["active", "trialing", "past_due", "unpaid", "incomplete", "paused"]) expect(statusOf(s), s).toBe(SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE);
    for (const s of ["canceled", "incomplete_expired"]) expect(statusOf(s), s).toBe(SubscriptionStatus.SUBSCRIPTION_STATUS_CANCELED);
    expect(statusOf("active", "customer.subscription.deleted")).toBe(SubscriptionStatus.SUBSCRIPTION_STATUS_CANCELED);
    const unknown = run(context(), acct.event("customer.subscription.updated", acct.subscription({ id: "sub_1QStatus0Kb8mTr2cVw", status: "frozen", items: [{ price: PRICES.basic }], ...p1 }), T0));
    expect(unknown).toMatchObject({ outcome: "ignored", reason: "unknown_status" });
  });

  it("a canceled subscription wins over an update of the same second", () => {
    const acct = new StripeAccount("cus_R2ySameSec01");
    const sub = (status: string): Record<string, unknown> => acct.subscription({ id: "sub_1QSameSec0Kb8mTr2cVw", status, items: [{ price: PRICES.basic }], ...p1 });
    const version = (r: MapResult): number => {
      const b = events(r)[0];
      return b?.kind?.$case === "subscription" ? b.kind.value.version : -1;
    };
    const ctx = context();
    expect(version(run(ctx, acct.event("customer.subscription.deleted", sub("canceled"), T0)))).toBeGreaterThan(version(run(ctx, acct.event("customer.subscription.updated", sub("active"), T0))));
  });

  it("`unpaid` also says dunning gave up on the latest invoice", () => {
    const acct = new StripeAccount("cus_R2zUnpaid01");
    const e = acct.event("customer.subscription.updated", acct.subscription({ id: "sub_1QUnpaid0Kb8mTr2cVw", status: "unpaid", items: [{ price: PRICES.basic }], ...p1, latestInvoice: "in_1QUnpaidLatest" }), T0);
    const [intent, recovery] = events(run(context(), e));
    expect(intent?.eventId).toBe(e.id);
    expect(recovery).toMatchObject({ eventId: "stripe:in_1QUnpaidLatest:exhausted", kind: { $case: "recovery", value: { invoiceId: "in_1QUnpaidLatest", result: RecoveryResult.RECOVERY_RESULT_EXHAUSTED } } });
  });

  it("a trial maps to trial_end", () => {
    const acct = new StripeAccount("cus_R30Trial001");
    const b = only(run(context(), acct.event("customer.subscription.created", acct.subscription({ id: "sub_1QTrial00Kb8mTr2cVw", status: "trialing", items: [{ price: PRICES.enterprise }], ...p1, trialEnd: T0 + 14 * DAY }), T0)));
    expect(b.kind?.$case === "subscription" && b.kind.value.planId).toBe("enterprise");
    expect(b.kind?.$case === "subscription" && seconds(b.kind.value.trialEnd)).toBe(T0 + 14 * DAY);
  });

  it("invoice.paid after failed attempts: SUCCEEDED for the line period, and RECOVERED", () => {
    const acct = new StripeAccount("cus_R31Recov001");
    const ctx = context();
    run(ctx, acct.event("customer.subscription.created", acct.subscription({ id: "sub_1QRecov00Kb8mTr2cVw", status: "past_due", items: [{ price: PRICES.premium, quantity: 2 }], ...p1 }), T0));
    const inv = acct.invoice({ id: "in_1QRecov0001", subscription: "sub_1QRecov00Kb8mTr2cVw", lines: [{ price: PRICES.premium, quantity: 2, ...p1 }], status: "paid", billingReason: "subscription_cycle", created: T0, attemptCount: 3 });
    const e = acct.event("invoice.paid", inv, T0 + 3 * DAY, { automatic: true });
    const [paid, recovered] = events(run(ctx, e));
    expect(paid).toMatchObject({
      eventId: "stripe:in_1QRecov0001:paid",
      kind: { $case: "payment", value: { invoiceId: "in_1QRecov0001", result: PaymentResult.PAYMENT_RESULT_SUCCEEDED, planId: "premium", quantity: 2, session: PaymentSession.PAYMENT_SESSION_OFF_SESSION, amountMinor: 9800, currency: "EUR" } },
    });
    expect(paid?.kind?.$case === "payment" && [seconds(paid.kind.value.periodStart), seconds(paid.kind.value.periodEnd)]).toEqual([p1.start, p1.end]);
    expect(recovered).toMatchObject({ eventId: "stripe:in_1QRecov0001:recovered", kind: { $case: "recovery", value: { invoiceId: "in_1QRecov0001", result: RecoveryResult.RECOVERY_RESULT_RECOVERED } } });
    // Paid at the first attempt: no recovery outcome.
    const first = acct.event("invoice.paid", { ...inv, attempt_count: 1 }, T0 + 3 * DAY);
    expect(events(run(ctx, first))).toHaveLength(1);
  });

  it("an upgrade invoice pays for the new plan from now on; the credit for unused time and ignored fees grant nothing", () => {
    const acct = new StripeAccount("cus_R32Upgrade1");
    const sub = "sub_1QUpgrade0Kb8mTr2cVw";
    const now = T0 + 10 * DAY;
    const inv = acct.invoice({
      id: "in_1QUpgrade001",
      subscription: sub,
      billingReason: "subscription_update",
      status: "open",
      created: now,
      lines: [
        { price: PRICES.premium, start: now, end: p1.end, amount: -3267, proration: true },
        { price: PRICES.enterprise, start: now, end: p1.end, amount: 13267, proration: true },
        { price: PRICES.onboarding, start: now, end: now, amount: 50000 },
      ],
    });
    const ctx = context();
    run(ctx, acct.event("customer.subscription.updated", acct.subscription({ id: sub, status: "active", items: [{ price: PRICES.enterprise }], ...p1 }), now));
    const b = only(run(ctx, acct.event("invoice.payment_action_required", inv, now + 1)));
    expect(b.kind).toMatchObject({ $case: "payment", value: { result: PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION, planId: "enterprise", addonIds: [], session: PaymentSession.PAYMENT_SESSION_ON_SESSION } });
    expect(b.kind?.$case === "payment" && [seconds(b.kind.value.periodStart), seconds(b.kind.value.periodEnd)]).toEqual([now, p1.end]);

    const feeOnly = acct.invoice({ id: "in_1QFeeOnly0001", subscription: sub, billingReason: "manual", status: "paid", created: now, lines: [{ price: PRICES.onboarding, start: now, end: now + 1 }] });
    expect(run(ctx, acct.event("invoice.paid", feeOnly, now))).toMatchObject({ outcome: "ignored", reason: "nothing_granted" });
  });

  it("invoice.payment_failed: FAILED with the reason, and the retry Stripe scheduled", () => {
    const acct = new StripeAccount("cus_R33Failed01");
    const inv = acct.invoice({ id: "in_1QFailed0001", subscription: "sub_1QFailed00Kb8mTr2cVw", lines: [{ price: PRICES.basic, ...p1 }], status: "open", billingReason: "subscription_cycle", created: T0, attemptCount: 2, nextPaymentAttempt: T0 + 5 * DAY });
    const e = acct.event("invoice.payment_failed", inv, T0 + 2 * DAY, { automatic: true });
    const [failed, retry] = events(run(context(), e));
    expect(failed).toMatchObject({ eventId: "stripe:in_1QFailed0001:failed:2", correlationId: "", kind: { $case: "payment", value: { result: PaymentResult.PAYMENT_RESULT_FAILED, failureReason: "payment attempt 2 failed", planId: "basic" } } });
    expect(retry).toMatchObject({ eventId: "stripe:in_1QFailed0001:retry:2", kind: { $case: "recovery", value: { result: RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED } } });
    expect(retry?.kind?.$case === "recovery" && seconds(retry.kind.value.nextAttemptAt)).toBe(T0 + 5 * DAY);

    // No further attempt planned; a price the map does not know does not stop a failure from counting.
    const last = acct.invoice({ id: "in_1QFailed0002", subscription: "sub_1QFailed00Kb8mTr2cVw", lines: [{ price: PRICES.unknown, ...p1 }], status: "open", billingReason: "subscription_cycle", created: T0, attemptCount: 4, nextPaymentAttempt: null });
    const f = only(run(context(), acct.event("invoice.payment_failed", last, T0 + 9 * DAY)));
    expect(f.kind).toMatchObject({ $case: "payment", value: { result: PaymentResult.PAYMENT_RESULT_FAILED, planId: "" } });
  });

  it("dunning and voiding: marked_uncollectible → EXHAUSTED, voided → CANCELED", () => {
    const acct = new StripeAccount("cus_R34Dunning1");
    const inv = (status: "uncollectible" | "void"): Record<string, unknown> =>
      acct.invoice({ id: "in_1QDun00001", subscription: "sub_1QDun000Kb8mTr2cVw", lines: [{ price: PRICES.basic, ...p1 }], status, billingReason: "subscription_cycle", created: T0 });
    expect(only(run(context(), acct.event("invoice.marked_uncollectible", inv("uncollectible"), T0))).kind).toMatchObject({
      $case: "recovery",
      value: { invoiceId: "in_1QDun00001", result: RecoveryResult.RECOVERY_RESULT_EXHAUSTED },
    });
    expect(only(run(context(), acct.event("invoice.voided", inv("void"), T0))).kind).toMatchObject({ $case: "payment", value: { result: PaymentResult.PAYMENT_RESULT_CANCELED } });
  });

  it("an invoice of no subscription is ignored", () => {
    const inv = { ...recorded("invoice"), parent: null, lines: { object: "list", data: [], has_more: false } };
    const acct = new StripeAccount("cus_R35OneOff01");
    expect(run(context(), acct.event("invoice.paid", inv, T0))).toMatchObject({ outcome: "ignored", reason: "no_subscription" });
  });

  it("an invoice before the subscription that names its price by lookup key is unmapped until the subscription is seen", () => {
    const acct = new StripeAccount("cus_R36Early001");
    const ctx = context();
    const inv = acct.invoice({ id: "in_1QEarly00001", subscription: "sub_1QEarly000Kb8mTr2cVw", lines: [{ price: PRICES.premium, ...p1 }], status: "paid", billingReason: "subscription_create", created: T0 });
    const early = run(ctx, acct.event("invoice.paid", inv, T0));
    expect(early).toMatchObject({ outcome: "unmapped" });
    expect(early.outcome === "unmapped" && early.detail).toContain(PRICES.premium.id);
    run(ctx, acct.event("customer.subscription.created", acct.subscription({ id: "sub_1QEarly000Kb8mTr2cVw", status: "active", items: [{ price: PRICES.premium }], ...p1 }), T0));
    expect(only(run(ctx, acct.event("invoice.paid", inv, T0))).kind).toMatchObject({ $case: "payment", value: { planId: "premium" } });
  });

  it("disputes: chargebacks open, won and lost; inquiries and prevented disputes are ignored", () => {
    const acct = new StripeAccount("cus_R37Dispute1");
    const ctx = context();
    run(ctx, acct.event("invoice.paid", acct.invoice({ id: "in_1QDisp00001", subscription: "sub_1QDisp000Kb8mTr2cVw", lines: [{ price: PRICES.basic, ...p1 }], status: "paid", billingReason: "subscription_create", created: T0 }), T0));
    run(ctx, acct.event("invoice_payment.paid", acct.invoicePayment({ invoice: "in_1QDisp00001", paymentIntent: "pi_3QDisp00001", amount: 1900, paidAt: T0 }), T0));
    const dispute = (status: string, type = "charge.dispute.updated"): MapResult =>
      run(ctx, acct.event(type, acct.dispute({ id: "du_1QDisp00001", charge: "ch_3QDisp00001", paymentIntent: "pi_3QDisp00001", status, amount: 1900, created: T0 + DAY }), T0 + 2 * DAY));
    const result = (r: MapResult): PaymentResult | undefined => {
      const b = events(r)[0];
      return b?.kind?.$case === "payment" ? b.kind.value.result : undefined;
    };
    expect(result(dispute("needs_response", "charge.dispute.created"))).toBe(PaymentResult.PAYMENT_RESULT_DISPUTE_OPENED);
    expect(result(dispute("under_review"))).toBe(PaymentResult.PAYMENT_RESULT_DISPUTE_OPENED);
    expect(result(dispute("won", "charge.dispute.closed"))).toBe(PaymentResult.PAYMENT_RESULT_DISPUTE_WON);
    expect(result(dispute("lost", "charge.dispute.closed"))).toBe(PaymentResult.PAYMENT_RESULT_DISPUTE_LOST);
    for (const s of ["warning_needs_response", "warning_under_review", "warning_closed", "prevented"]) expect(dispute(s), s).toMatchObject({ outcome: "ignored", reason: "inquiry" });
    const b = events(dispute("lost", "charge.dispute.closed"))[0];
    expect(b).toMatchObject({ customerId: acct.customer, subscriptionId: "sub_1QDisp000Kb8mTr2cVw", kind: { $case: "payment", value: { invoiceId: "in_1QDisp00001", failureReason: "fraudulent" } } });
  });

  it("a dispute or refund of a payment no link names is unlinked, with the ids to wait for", () => {
    const acct = new StripeAccount("cus_R38Unlinked");
    const r = run(context(), acct.event("charge.refunded", acct.charge({ id: "ch_3QUnlinked01", paymentIntent: "pi_3QUnlinked01", amount: 1000, amountRefunded: 1000, created: T0 }), T0));
    expect(r).toMatchObject({ outcome: "ignored", reason: "unlinked", waitFor: ["pi_3QUnlinked01", "ch_3QUnlinked01"] });
  });

  it("payment_intent.processing: tied by metadata or a learned link, with what the invoice bills for", () => {
    const acct = new StripeAccount("cus_R39Sepa0001");
    const ctx = context();
    const inv = acct.invoice({ id: "in_1QSepa00001", subscription: "sub_1QSepa000Kb8mTr2cVw", lines: [{ price: PRICES.basic, ...p1 }], status: "open", billingReason: "subscription_create", created: T0 });
    run(ctx, acct.event("invoice.finalized", inv, T0));
    const pi = acct.paymentIntent({ id: "pi_3QSepa00001", status: "processing", amount: 1900, created: T0 + 5, metadata: { proofgate_invoice_id: "in_1QSepa00001" } });
    const b = only(run(ctx, acct.event("payment_intent.processing", pi, T0 + 5)));
    expect(b).toMatchObject({ subscriptionId: "sub_1QSepa000Kb8mTr2cVw", kind: { $case: "payment", value: { invoiceId: "in_1QSepa00001", result: PaymentResult.PAYMENT_RESULT_PROCESSING, planId: "basic", amountMinor: 1900 } } });
    expect(() => validateEvent(b, catalog)).not.toThrow();
    const bare = acct.paymentIntent({ id: "pi_3QSepa00002", status: "processing", amount: 1900, created: T0 + 5 });
    expect(run(ctx, acct.event("payment_intent.processing", bare, T0 + 5))).toMatchObject({ outcome: "ignored", reason: "unlinked" });
  });

  it("API versions before 2025-03-31.basil: subscription on the invoice, price objects on lines, periods on the subscription, invoice on the charge", () => {
    const legacy = new StripeAccount("cus_QCa1LegacyCust", "legacy");
    const ctx = context(PriceMap.EMPTY); // price metadata names the plan
    const sub = recorded("legacy-2024-06-20.subscription");
    const intent = only(run(ctx, legacy.event("customer.subscription.updated", sub, 1718000000)));
    expect(intent.kind).toMatchObject({ $case: "subscription", value: { planId: "premium", quantity: 3, status: SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE } });
    // cancel_at_period_end without cancel_at (older versions): the intent ends with the period.
    expect(intent.kind?.$case === "subscription" && seconds(intent.kind.value.cancelAt)).toBe(1719792000);

    const paid = only(run(ctx, legacy.event("invoice.payment_succeeded", recorded("legacy-2024-06-20.invoice"), 1717203600)));
    expect(paid).toMatchObject({ subscriptionId: "sub_1PLgLegacySub01", kind: { $case: "payment", value: { invoiceId: "in_1PLg2xKb8mTr2cVwOldInv01", planId: "premium", quantity: 3 } } });

    // The charge names its invoice directly; the subscription comes from that invoice, seen above…
    const refund = only(run(ctx, legacy.event("charge.refunded", recorded("legacy-2024-06-20.charge"), 1718100000)));
    expect(refund).toMatchObject({ subscriptionId: "sub_1PLgLegacySub01", kind: { $case: "payment", value: { invoiceId: "in_1PLg2xKb8mTr2cVwOldInv01", result: PaymentResult.PAYMENT_RESULT_REFUNDED } } });
    // …or, by a writer that never saw the invoice, waits for it, unless metadata names the subscription.
    expect(run(context(PriceMap.EMPTY), legacy.event("charge.refunded", recorded("legacy-2024-06-20.charge"), 1718100000))).toMatchObject({
      outcome: "ignored",
      reason: "unlinked",
      waitFor: ["in_1PLg2xKb8mTr2cVwOldInv01"],
    });
    const charge = { ...recorded("legacy-2024-06-20.charge"), metadata: { proofgate_subscription_id: "sub_1PLgLegacySub01" } };
    expect(only(run(context(PriceMap.EMPTY), legacy.event("charge.refunded", charge, 1718100000))).subscriptionId).toBe("sub_1PLgLegacySub01");
  });

  it("learns payment → invoice links from invoice_payment.paid and from invoices that name their payment", () => {
    const ctx = context();
    const acct = new StripeAccount("cus_R3aLearn001");
    ctx.links.learn(learnFromEvent(acct.event("invoice_payment.paid", acct.invoicePayment({ invoice: "in_A", paymentIntent: "pi_A", amount: 1, paidAt: T0 }), T0), ctx));
    ctx.links.learn(learnFromEvent(new StripeAccount("cus_QCa1LegacyCust", "legacy").event("invoice.paid", recorded("legacy-2024-06-20.invoice"), T0), ctx));
    expect(ctx.links.invoiceOfPayment("pi_A")).toBe("in_A");
    expect(ctx.links.invoiceOfPayment("pi_3PLg2xKb8mTr2cVw1OldPi01")).toBe("in_1PLg2xKb8mTr2cVwOldInv01");
    expect(ctx.links.invoiceOfPayment("ch_3PLg2xKb8mTr2cVw1OldCh01")).toBe("in_1PLg2xKb8mTr2cVwOldInv01");
    expect(ctx.links.invoice("in_1PLg2xKb8mTr2cVwOldInv01")).toMatchObject({ subscriptionId: "sub_1PLgLegacySub01", customerId: "cus_QCa1LegacyCust", planId: "premium", quantity: 3 });
  });

  it("never throws on a verified event of a handled type with a bare object", () => {
    const ctx = context();
    for (const type of ["customer.subscription.updated", "invoice.paid", "invoice.payment_failed", "charge.refunded", "charge.dispute.closed", "payment_intent.processing"]) {
      const bare: StripeEventShape = { id: "evt_bare", type, created: T0, data: { object: { id: "x_1" } } };
      expect(() => mapStripeEvent(bare, ctx), type).not.toThrow();
      expect(() => learnFromEvent(bare, ctx), type).not.toThrow();
      const empty: StripeEventShape = { id: "evt_empty", type, created: T0, data: { object: {} } };
      expect(mapStripeEvent(empty, ctx), type).toMatchObject({ outcome: "ignored", reason: "malformed" });
    }
  });
});
