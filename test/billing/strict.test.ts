import { describe, expect, test } from "vitest";
import { decodeEvent, validateEvent } from "../../src/billing/index.js";
import { describeEvent } from "../../src/billing/index.js";
import { BillingEvent } from "../../src/gen/proofgate/v1/billing.js";

/** Decodes JSON as the writer does over NATS and validates it against the writer's clock; the error message, or "ok". */
function verdict(o: unknown, now = Date.parse("2026-11-30T00:00:00Z")): string {
  try {
    const e = decodeEvent(Buffer.from(JSON.stringify(o)), "application/json");
    validateEvent(e, undefined, { now, maxSkewMs: 300_000 });
    return "ok";
  } catch (err) {
    return (err as Error).message;
  }
}

const base = { eventId: "evt_1", occurredAt: "2026-11-29T10:00:00Z", customerId: "cus_1", subscriptionId: "sub_1" };
const failed = { invoiceId: "in_1", result: "PAYMENT_RESULT_FAILED" };

describe("strict JSON decoding and bounded fields", () => {
  test("a valid event passes, with JSON or proto field names", () => {
    expect(verdict({ ...base, payment: failed })).toBe("ok");
    expect(verdict({ event_id: "evt_1", occurred_at: "2026-11-29T10:00:00Z", customer_id: "cus_1", subscription_id: "sub_1", payment: { invoice_id: "in_1", result: "PAYMENT_RESULT_FAILED", failure_reason: "card_declined" } })).toBe("ok");
  });

  test.each([
    [{ ...base, customerId: { a: 1 }, payment: failed }, /^customer_id: must be a string/],
    [{ ...base, subscription: { status: "SUBSCRIPTION_STATUS_CANCELED" }, payment: failed }, /^kind: only one of/],
    [{ ...base, subscription: { status: "SUBSCRIPTION_STATUS_ACTIVE", planId: "premium", cancelAt: "end of month" } }, /^subscription\.cancel_at: must be an RFC 3339 timestamp/],
    [{ ...base, payment: { ...failed, amountMinor: "9007199254740993" } }, /^payment\.amount_minor: must be an integer/],
    [{ ...base, payment: { ...failed, failureReason: "x".repeat(2000) } }, /^payment\.failure_reason: 2000 bytes, above the limit of 1024 bytes$/],
    [{ ...base, customerId: "c".repeat(300), payment: failed }, /^customer_id: 300 bytes, above the limit of 256 bytes$/],
    [{ ...base, occurredAt: "2100-01-01T00:00:00Z", payment: failed }, /^occurred_at: 2100-01-01T00:00:00.000Z is more than 300 s ahead of the writer's clock/],
    [{ ...base, payment: { ...failed, addonIds: Array.from({ length: 65 }, (_, i) => `a${i}`) } }, /^payment\.addon_ids: 65 entries/],
    [{ ...base, payment: failed, extra: 1 }, /^payload: unknown field "extra"/],
    [[1, 2], /^payload: must be a JSON object/],
  ])("%#: rejected with a reason naming the field", (o, reason) => {
    expect(verdict(o)).toMatch(reason);
  });

  test("an id with invalid UTF-8 in protobuf is refused, not folded into U+FFFD", () => {
    const good = BillingEvent.encode({ ...BillingEvent.fromJSON({ ...base, payment: failed }), customerId: "cus_\u00e9" }).finish();
    const bytes = Buffer.from(good);
    const at = bytes.indexOf(Buffer.from("cus_\u00e9"));
    bytes[at + 4] = 0xff; // the first byte of é becomes invalid UTF-8
    // Refused by the decoder itself, before ts-proto's decode would fold the byte into U+FFFD.
    expect(() => decodeEvent(bytes, undefined)).toThrow(/^customer_id: not valid UTF-8$/);
    // And an id that holds U+FFFD itself (from JSON, or folded elsewhere) is refused by validation.
    expect(() => validateEvent({ ...BillingEvent.fromJSON({ ...base, payment: failed }), customerId: "cus_\uFFFD" })).toThrow(/^customer_id: not valid UTF-8$/);
  });

  test("describing an event never throws, whatever its dates hold", () => {
    const e = BillingEvent.fromJSON({ ...base, subscription: { status: "SUBSCRIPTION_STATUS_ACTIVE", planId: "p", cancelAt: "2026-11-29T10:00:00Z" } });
    if (e.kind?.$case === "subscription") e.kind.value.cancelAt = new Date(Number.NaN);
    expect(describeEvent(e)).toContain("cancels at an invalid date");
    expect(describeEvent({ ...e, subscriptionId: "s".repeat(100_000) }).length).toBeLessThan(1100);
  });
});

describe("bounded echoes", () => {
  test("a 1 MB invalid catalog key is not echoed back whole", async () => {
    const { validateCatalog } = await import("../../src/catalog/index.js");
    const { demoCatalog } = await import("../policy/story.js");
    const catalog = demoCatalog();
    const first = catalog.features[0];
    if (!first) throw new Error("demo catalog has no features");
    const bad = { ...catalog, features: [{ ...first, key: "K".repeat(1_000_000) }, ...catalog.features.slice(1)] };
    let message = "";
    try {
      validateCatalog(bad);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/^features\[0\]\.key: "K{64}"… \(1000000 bytes\) must be 1-64/);
  });
});
