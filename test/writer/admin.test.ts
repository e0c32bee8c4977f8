import { existsSync, readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { status, type ServiceError } from "@grpc/grpc-js";
import type { JetStreamManager, NatsConnection } from "nats";
import { AuditKind } from "../../src/gen/proofgate/v1/admin.js";
import { BillingEvent, PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { FeatureType } from "../../src/gen/proofgate/v1/catalog.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { OverrideEffect, type Override } from "../../src/gen/proofgate/v1/document.js";
import { IngestResult } from "../../src/gen/proofgate/v1/ingest.js";
import { statusName } from "../../src/policy/index.js";
import { customerSubject, customerToken } from "../../src/replication/subjects.js";
import { NatsServer } from "../harness/nats.js";
import { DAY, EventFactory, connectNats, demoCatalog, lastState, startTestWriter, type TestWriter } from "../harness/writer.js";

const T0 = Date.UTC(2026, 10, 1, 9);
const clock = { now: T0 };

let nats: NatsServer;
let w: TestWriter;
const writers: TestWriter[] = [];
let nc: NatsConnection;
let jsm: JetStreamManager;

beforeAll(async () => {
  nats = await NatsServer.start();
  w = await startTestWriter({ natsUrl: nats.url, now: () => clock.now });
  writers.push(w);
  nc = await connectNats(nats.url);
  jsm = await nc.jetstreamManager();
  await w.client.applyCatalog(demoCatalog(), "alice", "initial catalog");
});

afterAll(async () => {
  await nc.close();
  for (const x of writers.reverse()) await x.dispose();
  await nats.dispose();
});

const override = (o: Partial<Override>): Override => ({
  overrideId: "",
  feature: "api-access",
  effect: OverrideEffect.OVERRIDE_EFFECT_DENY,
  value: undefined,
  validFromMs: 0,
  validUntilMs: 0,
  reason: "",
  actor: "",
  createdAtMs: 0,
  ...o,
});

/** Runs `fn`, expecting a gRPC error; returns it. */
async function grpcError(fn: () => Promise<unknown>): Promise<ServiceError> {
  try {
    await fn();
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error("expected the call to fail");
}

describe("the audit log", () => {
  test("tells a customer's full story: events, every access transition, overrides with actor and reason", async () => {
    const id = "cus_story";
    const f = new EventFactory(id, "story", T0);
    const subscribe = f.subscribe("premium");
    const sca = f.pay(PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION, "in_1");
    const paid = f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, "in_1", {}, 60_000);
    const refund = f.pay(PaymentResult.PAYMENT_RESULT_REFUNDED, "in_1", { periodStart: undefined, periodEnd: undefined }, 3 * DAY);

    await w.client.publish([subscribe]);
    clock.now += 60_000;
    await w.client.publish([sca]);
    clock.now += 60_000;
    await w.client.publish([paid]);
    clock.now += DAY;
    const put = await w.client.putOverride({
      customerId: id,
      override: override({ feature: "api-access", effect: OverrideEffect.OVERRIDE_EFFECT_DENY }),
      actor: "bob@example.com",
      reason: "abuse ticket 7",
    });
    expect(put.overrideId).toMatch(/^ovr_/);
    clock.now += DAY;
    await w.client.deleteOverride({ customerId: id, overrideId: put.overrideId, actor: "carol@example.com", reason: "ticket 7 resolved" });
    clock.now += DAY;
    const last = await w.client.publish([refund]);

    const c = await w.client.getCustomer(id);
    expect(c.revision).toBe(last.revision);
    const apiAccess = c.timeline
      .filter((e) => e.kind === AuditKind.AUDIT_KIND_ACCESS_CHANGED && e.feature === "api-access")
      .map((e) => `${statusName(e.fromStatus)}->${statusName(e.toStatus)}`);
    expect(apiAccess).toEqual([
      "UNKNOWN_CUSTOMER->PAYMENT_REQUIRED",
      "PAYMENT_REQUIRED->PAYMENT_PENDING",
      "PAYMENT_PENDING->GRANTED",
      "GRANTED->BLOCKED",
      "BLOCKED->GRANTED",
      "GRANTED->REVOKED",
    ]);
    // Each transition names its cause.
    const byCause = c.timeline.filter((e) => e.kind === AuditKind.AUDIT_KIND_ACCESS_CHANGED && e.feature === "api-access");
    // Without an auth file the actor is the "local" principal; the caller's name is "on behalf of".
    expect(byCause.map((e) => e.eventId || e.onBehalfOf)).toEqual([subscribe.eventId, sca.eventId, paid.eventId, "bob@example.com", "carol@example.com", refund.eventId]);
    expect(byCause[2]?.correlationId).toBe(paid.correlationId);
    expect(byCause[2]?.reason).not.toBe("");

    const kinds = c.timeline.filter((e) => e.kind !== AuditKind.AUDIT_KIND_ACCESS_CHANGED).map((e) => AuditKind[e.kind]);
    expect(kinds).toEqual([
      "AUDIT_KIND_EVENT_APPLIED",
      "AUDIT_KIND_EVENT_APPLIED",
      "AUDIT_KIND_EVENT_APPLIED",
      "AUDIT_KIND_OVERRIDE_PUT",
      "AUDIT_KIND_OVERRIDE_DELETED",
      "AUDIT_KIND_EVENT_APPLIED",
    ]);
    const applied = c.timeline.find((e) => e.eventId === paid.eventId && e.kind === AuditKind.AUDIT_KIND_EVENT_APPLIED);
    expect(applied?.detail).toContain("payment SUCCEEDED for invoice in_1");
    expect(applied?.correlationId).toBe(paid.correlationId);
    const putEntry = c.timeline.find((e) => e.kind === AuditKind.AUDIT_KIND_OVERRIDE_PUT);
    expect(putEntry).toMatchObject({ actor: "local", onBehalfOf: "bob@example.com", reason: "abuse ticket 7", feature: "api-access", customerId: id });
    // Entries are in order, stamped with the writer's clock.
    const seqs = c.timeline.map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    expect(c.timeline[0]?.at?.getTime()).toBe(T0);
    expect(c.timeline[c.timeline.length - 1]?.at?.getTime()).toBe(clock.now);

    expect(c.facts.map((e) => e.eventId)).toEqual([subscribe.eventId, sca.eventId, paid.eventId, refund.eventId]);
    expect(c.entitlements.find((e) => e.feature === "api-access")?.status).toBe(AccessStatus.ACCESS_STATUS_REVOKED);
    expect(c.entitlements.map((e) => e.feature)).toEqual([...demoCatalog().features.map((x) => x.key)].sort());
  });
});

describe("overrides", () => {
  test("a GRANT override replicates a new document and is visible at the returned revision", async () => {
    const id = "cus_override";
    const put = await w.client.putOverride({
      customerId: id,
      override: override({ overrideId: "trial-extension", feature: "seats", effect: OverrideEffect.OVERRIDE_EFFECT_GRANT, value: { kind: { $case: "limit", value: 25 } }, validUntilMs: clock.now + 7 * DAY }),
      actor: "dave@example.com",
      reason: "pilot",
    });
    expect(put.overrideId).toBe("trial-extension");
    const m = await lastState(jsm, customerSubject(id));
    expect(m?.seq).toBe(put.revision);
    if (m?.record.record?.$case !== "document") throw new Error("expected a document");
    expect(m.record.record.value.overrides).toEqual([
      expect.objectContaining({ overrideId: "trial-extension", feature: "seats", actor: "local", reason: "pilot", createdAtMs: clock.now }),
    ]);
    const c = await w.client.getCustomer(id);
    const seats = c.entitlements.find((e) => e.feature === "seats");
    expect(seats).toMatchObject({ allowed: true, status: AccessStatus.ACCESS_STATUS_GRANTED, limit: 25 });
  });
});

describe("erasure", () => {
  test("replicates a tombstone without the id, forgets the customer, and keeps only the token in the audit log", async () => {
    const id = "erase-me-7d1f@example.com";
    const f = new EventFactory(id, "erase", clock.now);
    const events = [f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)];
    await w.client.publish(events);
    await w.client.putOverride({ customerId: id, override: override({ feature: "ai-assistant", effect: OverrideEffect.OVERRIDE_EFFECT_GRANT }), actor: "erin", reason: "goodwill" });

    const erased = await w.client.eraseCustomer({ customerId: id, actor: "dpo@example.com", reason: "GDPR request 99" });
    const m = await lastState(jsm, customerSubject(id));
    expect(m?.seq).toBe(erased.revision);
    expect(m?.record.record?.$case).toBe("erased");
    expect(Buffer.from(m?.data ?? []).includes(Buffer.from(id))).toBe(false);

    const notFound = await grpcError(() => w.client.getCustomer(id));
    expect(notFound.code).toBe(status.NOT_FOUND);

    // A redelivered old event does not bring the customer back.
    const again = await w.client.publish([events[0] as BillingEvent]);
    expect(again.results[0]?.result).toBe(IngestResult.INGEST_RESULT_DUPLICATE);
    expect((await lastState(jsm, customerSubject(id)))?.seq).toBe(erased.revision);

    // After shutdown, the ledger files hold no trace of the raw id.
    await w.close();
    const files = Buffer.concat([w.ledgerPath, `${w.ledgerPath}-wal`].filter((f) => existsSync(f)).map((f) => readFileSync(f)));
    expect(files.includes(Buffer.from("cus_story"))).toBe(true); // the scan does find ids that are there
    expect(files.includes(Buffer.from(id))).toBe(false);
    // The audit entries remain under the token (reopen the ledger through a new writer).
    w = await startTestWriter({ natsUrl: nats.url, ledgerPath: w.ledgerPath, now: () => clock.now });
    writers.push(w);
    const token = customerToken(id);
    expect(token).not.toContain(id);
    const f2 = new EventFactory(id, "erase2", clock.now);
    await w.client.publish([f2.subscribe("basic")]);
    const back = await w.client.getCustomer(id);
    const old = back.timeline.filter((e) => e.seq < (back.timeline.find((x) => x.kind === AuditKind.AUDIT_KIND_CUSTOMER_ERASED)?.seq ?? 0));
    expect(old.length).toBeGreaterThan(3);
    expect(old.every((e) => e.customerId === "")).toBe(true);
    expect(back.timeline.find((x) => x.kind === AuditKind.AUDIT_KIND_CUSTOMER_ERASED)).toMatchObject({ actor: "local", onBehalfOf: "dpo@example.com", reason: "GDPR request 99", customerId: "" });
    expect(back.facts.map((e) => e.eventId)).toEqual([`erase2_1`]);
  });
});

describe("bad admin input", () => {
  const cases: [string, () => Promise<unknown>, RegExp][] = [
    ["PutOverride without reason", () => w.client.putOverride({ customerId: "cus_bad", override: override({}), actor: "a", reason: " " }), /^reason: required/],
    ["PutOverride without customer", () => w.client.putOverride({ customerId: "", override: override({}), actor: "a", reason: "r" }), /^customer_id: required/],
    ["PutOverride without override", () => w.client.putOverride({ customerId: "cus_bad", override: undefined, actor: "a", reason: "r" }), /^override: required/],
    ["PutOverride with an unknown feature", () => w.client.putOverride({ customerId: "cus_bad", override: override({ feature: "teleport" }), actor: "a", reason: "r" }), /^override\.feature: unknown feature "teleport"/],
    ["PutOverride GRANT on *", () => w.client.putOverride({ customerId: "cus_bad", override: override({ feature: "*", effect: OverrideEffect.OVERRIDE_EFFECT_GRANT }), actor: "a", reason: "r" }), /^override\.feature: /],
    ["PutOverride without effect", () => w.client.putOverride({ customerId: "cus_bad", override: override({ effect: OverrideEffect.OVERRIDE_EFFECT_UNSPECIFIED }), actor: "a", reason: "r" }), /^override\.effect: /],
    ["PutOverride with a value of the wrong type", () => w.client.putOverride({ customerId: "cus_bad", override: override({ feature: "seats", effect: OverrideEffect.OVERRIDE_EFFECT_GRANT, value: { kind: { $case: "enabled", value: true } } }), actor: "a", reason: "r" }), /^override\.value: "seats" needs a numeric/],
    ["PutOverride ending before it starts", () => w.client.putOverride({ customerId: "cus_bad", override: override({ validFromMs: T0 + DAY, validUntilMs: T0 }), actor: "a", reason: "r" }), /^override\.valid_until_ms: /],
    ["DeleteOverride without reason", () => w.client.deleteOverride({ customerId: "cus_bad", overrideId: "x", actor: "a", reason: "" }), /^reason: required/],
    ["EraseCustomer without reason", () => w.client.eraseCustomer({ customerId: "cus_bad", actor: "a", reason: "" }), /^reason: required/],
    ["ApplyCatalog without reason", () => w.client.applyCatalogRequest({ catalog: demoCatalog(), actor: "a", reason: "", allowRemovals: false }), /^reason: required/],
    ["ApplyCatalog without catalog", () => w.client.applyCatalogRequest({ catalog: undefined, actor: "a", reason: "r", allowRemovals: false }), /^catalog: required/],
    ["ApplyCatalog with a bad feature key", () => w.client.applyCatalog({ ...demoCatalog(), features: [{ key: "Bad Key", type: FeatureType.FEATURE_TYPE_BOOLEAN, perUnit: false, values: [], description: "" }] }), /^catalog\.features\[0\]\.key: /],
    ["ApplyCatalog with a plan granting an unknown feature", () => w.client.applyCatalog({ ...demoCatalog(), features: [] }), /^catalog\.plans\[0\]\.features\[0\]\.feature: unknown feature/],
    ["Publish with too many events", () => w.client.publish(Array.from({ length: 1001 }, () => BillingEvent.create())), /^events: at most 1000/],
    ["GetCustomer without id", () => w.client.getCustomer(""), /^customer_id: required/],
  ];
  test.each(cases)("%s → INVALID_ARGUMENT naming the field", async (_name, call, message) => {
    const err = await grpcError(call);
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.details).toMatch(message);
  });

  test("nothing is half-applied: rejected calls leave no customer, override or catalog change behind", async () => {
    await expect(w.client.getCustomer("cus_bad")).rejects.toMatchObject({ code: status.NOT_FOUND });
    expect((await w.client.getCatalog()).catalog).toEqual(demoCatalog());
  });

  test("unknown things are NOT_FOUND", async () => {
    expect((await grpcError(() => w.client.getCustomer("cus_nobody"))).code).toBe(status.NOT_FOUND);
    expect((await grpcError(() => w.client.eraseCustomer({ customerId: "cus_nobody", actor: "a", reason: "r" }))).code).toBe(status.NOT_FOUND);
    expect((await grpcError(() => w.client.deleteOverride({ customerId: "cus_override", overrideId: "nope", actor: "a", reason: "r" }))).code).toBe(status.NOT_FOUND);
  });
});
