import { describe, expect, it } from "vitest";
import { validateEvent, decodeEvent } from "../../src/billing/index.js";
import { CatalogIndex, parseCatalogText, validateCatalog } from "../../src/catalog/index.js";
import { InvalidArgumentError } from "../../src/errors/index.js";
import { BillingEvent, PaymentResult, PaymentSession, RecoveryResult, SubscriptionStatus } from "../../src/gen/proofgate/v1/billing.js";
import { FeatureType } from "../../src/gen/proofgate/v1/catalog.js";
import { demoCatalog } from "./story.js";

const base = (): BillingEvent => ({
  eventId: "evt_1",
  occurredAt: new Date("2026-11-01T00:00:00Z"),
  customerId: "cus_1",
  subscriptionId: "sub_1",
  source: "test",
  correlationId: "",
  kind: {
    $case: "payment",
    value: {
      invoiceId: "in_1",
      result: PaymentResult.PAYMENT_RESULT_SUCCEEDED,
      periodStart: new Date("2026-11-01T00:00:00Z"),
      periodEnd: new Date("2026-12-01T00:00:00Z"),
      planId: "premium",
      addonIds: [],
      quantity: 1,
      session: PaymentSession.PAYMENT_SESSION_ON_SESSION,
      amountMinor: 4900,
      currency: "EUR",
      failureReason: "",
    },
  },
});

const catalog = CatalogIndex.from(demoCatalog());

function fieldOf(fn: () => void): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidArgumentError);
    return (err as InvalidArgumentError).field;
  }
  throw new Error("expected an InvalidArgumentError");
}

describe("billing event validation names the field", () => {
  const cases: [string, (e: BillingEvent) => BillingEvent][] = [
    ["event_id", (e) => ({ ...e, eventId: "" })],
    ["occurred_at", (e) => ({ ...e, occurredAt: undefined })],
    ["occurred_at", (e) => ({ ...e, occurredAt: new Date("not a date") })],
    ["customer_id", (e) => ({ ...e, customerId: "x".repeat(257) })],
    ["subscription_id", (e) => ({ ...e, subscriptionId: "" })],
    ["kind", (e) => ({ ...e, kind: undefined })],
    ["payment.invoice_id", (e) => withPayment(e, { invoiceId: "" })],
    ["payment.result", (e) => withPayment(e, { result: PaymentResult.PAYMENT_RESULT_UNSPECIFIED })],
    ["payment.result", (e) => withPayment(e, { result: -1 })],
    ["payment.period_end", (e) => withPayment(e, { periodEnd: undefined })],
    ["payment.period_end", (e) => withPayment(e, { periodEnd: new Date("2026-10-01T00:00:00Z") })],
    ["payment.plan_id", (e) => withPayment(e, { planId: "" })],
    ["payment.plan_id", (e) => withPayment(e, { planId: "platinum" })],
    ["payment.addon_ids[0]", (e) => withPayment(e, { addonIds: ["ghost"] })],
    ["payment.quantity", (e) => withPayment(e, { quantity: -1 })],
    ["payment.quantity", (e) => withPayment(e, { quantity: 1.5 })],
    ["subscription.quantity", (e) => ({ ...e, kind: { $case: "subscription", value: { ...sub(), quantity: 2 ** 32 } } })],
    ["subscription.version", (e) => ({ ...e, kind: { $case: "subscription", value: { ...sub(), version: -3 } } })],
    ["subscription.status", (e) => ({ ...e, kind: { $case: "subscription", value: { ...sub(), status: SubscriptionStatus.SUBSCRIPTION_STATUS_UNSPECIFIED } } })],
    ["subscription.plan_id", (e) => ({ ...e, kind: { $case: "subscription", value: { ...sub(), planId: "" } } })],
    ["recovery.result", (e) => ({ ...e, kind: { $case: "recovery", value: { invoiceId: "in_1", result: RecoveryResult.RECOVERY_RESULT_UNSPECIFIED, nextAttemptAt: undefined } } })],
  ];
  it.each(cases)("%s", (field, mutate) => {
    expect(fieldOf(() => validateEvent(mutate(base()), catalog))).toBe(field);
  });

  it("accepts a valid event, and a refund without a period", () => {
    expect(() => validateEvent(base(), catalog)).not.toThrow();
    expect(() => validateEvent(withPayment(base(), { result: PaymentResult.PAYMENT_RESULT_REFUNDED, periodStart: undefined, periodEnd: undefined, planId: "" }), catalog)).not.toThrow();
  });

  it("decodes canonical proto3 JSON and protobuf, and names a bad payload", () => {
    const json = JSON.stringify(BillingEvent.toJSON(base()));
    expect(JSON.parse(json)).toMatchObject({ eventId: "evt_1", payment: { result: "PAYMENT_RESULT_SUCCEEDED" } });
    expect(decodeEvent(Buffer.from(json), "application/json")).toEqual(base());
    expect(decodeEvent(BillingEvent.encode(base()).finish(), undefined)).toEqual(base());
    expect(fieldOf(() => decodeEvent(Buffer.from("{nope"), "application/json"))).toBe("payload");
    expect(fieldOf(() => decodeEvent(Buffer.from([0xff, 0xff, 0xff]), undefined))).toBe("payload");
  });
});

describe("catalog validation names the field", () => {
  it("loads the demo catalog", () => {
    const c = demoCatalog();
    expect(c.plans.map((p) => p.id)).toEqual(["basic", "premium", "enterprise"]);
    expect(CatalogIndex.from(c).gracePeriodMs).toBe(7 * 86_400_000);
  });

  const yamlCases: [string, string][] = [
    ["features[0].type", "features: [{key: a, type: colour}]"],
    ["features[1].key", "features: [{key: a, type: boolean}, {key: a, type: boolean}]"],
    ["plans[0].features[0].feature", "features: [{key: a, type: boolean}]\nplans: [{id: p, features: {b: true}}]"],
    ["plans[0].features[0].value", "features: [{key: a, type: numeric}]\nplans: [{id: p, features: {a: true}}]"],
    ["plans[0].features[0].value", "features: [{key: a, type: string, values: [x, y]}]\nplans: [{id: p, features: {a: z}}]"],
    ["features[0].per_unit", "features: [{key: a, type: boolean, per_unit: true}]"],
    ["policy.grace_period", "features: []\npolicy: {grace_period: soon}"],
    ["policy.dispute_policy", "features: []\npolicy: {dispute_policy: maybe}"],
    ["catalog", "features: [unclosed"],
  ];
  it.each(yamlCases)("%s", (field, text) => {
    expect(fieldOf(() => parseCatalogText(text))).toBe(field);
  });

  it("rejects an unspecified feature type in a wire catalog", () => {
    expect(fieldOf(() => validateCatalog({ features: [{ key: "a", type: FeatureType.FEATURE_TYPE_UNSPECIFIED, perUnit: false, values: [], description: "" }], plans: [], addons: [], policy: undefined }))).toBe("features[0].type");
  });
});

function withPayment(e: BillingEvent, patch: object): BillingEvent {
  if (e.kind?.$case !== "payment") throw new Error("payment event expected");
  return { ...e, kind: { $case: "payment", value: { ...e.kind.value, ...patch } } };
}

function sub() {
  return {
    status: SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE,
    planId: "premium",
    addonIds: [],
    quantity: 1,
    currentPeriodStart: undefined,
    currentPeriodEnd: undefined,
    cancelAt: undefined,
    trialEnd: undefined,
    version: 1,
  };
}

describe("catalog file", () => {
  it("round-trips through its text form", async () => {
    const { catalogToText } = await import("../../src/catalog/index.js");
    const c = demoCatalog();
    expect(parseCatalogText(catalogToText(c))).toEqual(c);
  });
});
