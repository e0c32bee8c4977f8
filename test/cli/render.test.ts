import { describe, expect, it } from "vitest";
import { AuditKind, type GetCustomerResponse } from "../../src/gen/proofgate/v1/admin.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { renderExplanation } from "../../src/cli/explain.js";
import { parseLines } from "../../src/cli/publish.js";
import { formatCheck } from "../../src/cli/check.js";

const event = (id: string, extra: object): string =>
  JSON.stringify({ eventId: id, occurredAt: "2026-11-01T00:00:00Z", customerId: "cus_1", subscriptionId: "sub_1", ...extra });

describe("proofgate publish input", () => {
  it("reads canonical JSON lines", () => {
    const events = parseLines(
      [
        event("e1", { subscription: { status: "SUBSCRIPTION_STATUS_ACTIVE", planId: "premium" } }),
        "",
        event("e2", { payment: { invoiceId: "in_1", result: "PAYMENT_RESULT_REFUNDED" } }),
      ].join("\n"),
    );
    expect(events.map((e) => e.eventId)).toEqual(["e1", "e2"]);
    expect(events[1]?.kind?.$case).toBe("payment");
  });

  it("names every bad line and the field, and returns nothing", () => {
    const text = [event("e1", { subscription: { status: "SUBSCRIPTION_STATUS_ACTIVE", planId: "premium" } }), "{oops", event("", { recovery: { invoiceId: "in_1", result: "RECOVERY_RESULT_EXHAUSTED" } })].join("\n");
    expect(() => parseLines(text)).toThrow(/nothing was sent[\s\S]*line 2: payload: not valid JSON[\s\S]*line 3: event_id: required/);
  });
});

describe("proofgate explain", () => {
  it("tells the story: intent, proof, access changes with reasons", () => {
    const at = (s: string) => new Date(`2026-11-01T${s}Z`);
    const res: GetCustomerResponse = {
      document: undefined,
      facts: [BillingEvent.fromJSON(JSON.parse(event("evt_2", { payment: { invoiceId: "in_1", result: "PAYMENT_RESULT_SUCCEEDED" } })))],
      entitlements: [
        { feature: "api-access", allowed: true, status: AccessStatus.ACCESS_STATUS_GRANTED, reason: "Paid through 2026-12-01 00:00 UTC (invoice in_1).", value: "true", limit: undefined, validUntil: undefined },
        { feature: "seats", allowed: true, status: AccessStatus.ACCESS_STATUS_GRANTED, reason: "Paid.", value: "5", limit: 5, validUntil: undefined },
      ],
      timeline: [
        { seq: 1, at: at("00:00:01"), kind: AuditKind.AUDIT_KIND_EVENT_APPLIED, customerId: "cus_1", subscriptionId: "sub_1", feature: "", fromStatus: AccessStatus.ACCESS_STATUS_UNSPECIFIED, toStatus: AccessStatus.ACCESS_STATUS_UNSPECIFIED, eventId: "evt_1", correlationId: "", actor: "", reason: "", detail: "subscription sub_1 ACTIVE, wants premium", onBehalfOf: "" },
        { seq: 2, at: at("00:05:00"), kind: AuditKind.AUDIT_KIND_EVENT_APPLIED, customerId: "cus_1", subscriptionId: "sub_1", feature: "", fromStatus: AccessStatus.ACCESS_STATUS_UNSPECIFIED, toStatus: AccessStatus.ACCESS_STATUS_UNSPECIFIED, eventId: "evt_2", correlationId: "chk_9", actor: "", reason: "", detail: "payment SUCCEEDED for invoice in_1", onBehalfOf: "" },
        { seq: 3, at: at("00:05:00"), kind: AuditKind.AUDIT_KIND_ACCESS_CHANGED, customerId: "cus_1", subscriptionId: "sub_1", feature: "api-access", fromStatus: AccessStatus.ACCESS_STATUS_PAYMENT_REQUIRED, toStatus: AccessStatus.ACCESS_STATUS_GRANTED, eventId: "evt_2", correlationId: "", actor: "", reason: "Paid through 2026-12-01", detail: "", onBehalfOf: "" },
      ],
      revision: 42,
    };
    const text = renderExplanation("cus_1", res, Date.UTC(2026, 10, 2));
    expect(text).toContain("revision 42");
    expect(text).toMatch(/allowed\s+GRANTED\s+api-access\s+Paid through/);
    expect(text).toMatch(/seats\s+= 5/);
    expect(text).toMatch(/intent\s+subscription sub_1 ACTIVE, wants premium/);
    expect(text).toMatch(/proof\s+payment SUCCEEDED for invoice in_1 \(occurred 2026-11-01 00:00:00\)\s+\[event evt_2, correlation chk_9\]/);
    expect(text).toContain("access   api-access: PAYMENT_REQUIRED -> GRANTED  (Paid through 2026-12-01)");
    const lines = text.split("\n");
    expect(lines.findIndex((l) => l.includes("intent"))).toBeLessThan(lines.findIndex((l) => l.includes("access   api-access")));
  });

  it("formats a check for humans", () => {
    const text = formatCheck(
      { customerId: "cus_1", feature: "seats", quantity: 3, minRevision: undefined },
      { allowed: false, status: AccessStatus.ACCESS_STATUS_LIMIT_EXCEEDED, reason: "Requested 3 is above the limit of 2.", value: "2", limit: 2, validUntil: undefined, revision: 7, stale: true },
    );
    expect(text.startsWith("DENIED  LIMIT_EXCEEDED  seats for cus_1")).toBe(true);
    expect(text).toContain("limit 2");
    expect(text).toContain("STALE");
  });
});
