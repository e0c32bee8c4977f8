import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServer } from "../harness/nats.js";
import { startTestStack, type TestStack } from "../harness/stack.js";
import { httpGet, waitFor, type TestSidecar } from "../harness/sidecar.js";
import { EventFactory, connectNats, type TestWriter } from "../harness/writer.js";
import { promtoolProblems } from "../harness/system.js";
import { BillingEvent, PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { IngestResult } from "../../src/gen/proofgate/v1/ingest.js";

/** Billing events in, through a real writer and the state stream, to the sidecar's answer. */
describe("writer → sidecar end to end", () => {
  let stack: TestStack;
  let nats: NatsServer;
  let writer: TestWriter;
  let sc: TestSidecar;

  beforeAll(async () => {
    stack = await startTestStack();
    ({ nats, writer, sc } = stack);
  });

  afterAll(() => stack.close());

  it("gives read-your-writes with the revision from IngestService.Publish as min_revision", async () => {
    const f = new EventFactory("cus_ryw@example.com");
    const res = await writer.client.publish([f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, "in_1")]);
    expect(res.results.map((r) => r.result)).toEqual([IngestResult.INGEST_RESULT_ACCEPTED, IngestResult.INGEST_RESULT_ACCEPTED]);
    expect(res.revision).toBeGreaterThan(0);
    // Asked at once, with the token: the sidecar waits for that revision, then answers.
    const r = await sc.client.check({ customerId: f.customerId, feature: "api-access", minRevision: res.revision });
    expect(r.revision).toBeGreaterThanOrEqual(res.revision);
    expect(r.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
    expect(r.stale).toBe(false);

    const refund = await writer.client.publish([f.pay(PaymentResult.PAYMENT_RESULT_REFUNDED, "in_1")]);
    const revoked = await sc.client.check({ customerId: f.customerId, feature: "api-access", minRevision: refund.revision });
    expect(revoked.allowed).toBe(false);
    expect(revoked.status).toBe(AccessStatus.ACCESS_STATUS_REVOKED);
  });

  it("changes its answer when a payment outcome is published to NATS billing", async () => {
    const f = new EventFactory("cus_nats_billing");
    const nc = await connectNats(nats.url);
    try {
      const js = nc.jetstream();
      await js.publish("proofgate.billing.test", BillingEvent.encode(f.subscribe("basic")).finish());
      const pending = await waitFor(async () => {
        const r = await sc.client.check({ customerId: f.customerId, feature: "advanced-filtering" });
        return r.status === AccessStatus.ACCESS_STATUS_PAYMENT_REQUIRED ? r : undefined;
      }, { what: "subscription without payment: PAYMENT_REQUIRED" });
      expect(pending.allowed).toBe(false);

      await js.publish("proofgate.billing.test", BillingEvent.encode(f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, "in_1", { planId: "basic" })).finish());
      const granted = await waitFor(async () => {
        const r = await sc.client.check({ customerId: f.customerId, feature: "advanced-filtering" });
        return r.allowed ? r : undefined;
      }, { what: "payment outcome reflected" });
      expect(granted.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
      expect(granted.revision).toBeGreaterThan(pending.revision);
      expect(granted.stale).toBe(false);
    } finally {
      await nc.close();
    }
  });

  it("follows the writer's heartbeat head", async () => {
    const head = writer.writer.headRevision();
    expect(head).toBeGreaterThan(0);
    await waitFor(async () => {
      const body = (await httpGet(sc.sidecar.httpAddress ?? "", "/metrics")).body;
      const h = /^proofgate_sidecar_head_revision (\d+)$/m.exec(body)?.[1];
      const lag = /^proofgate_sidecar_lag_revisions (\d+)$/m.exec(body)?.[1];
      return Number(h) >= head && lag === "0";
    }, { what: "head revision from heartbeats, no lag" });
    expect(sc.sidecar.stale).toBe(false);
  });

  it("exposes metrics that promtool accepts", async () => {
    const body = (await httpGet(sc.sidecar.httpAddress ?? "", "/metrics")).body;
    expect(body).toContain("proofgate_sidecar_check_duration_seconds");
    expect(await promtoolProblems(body)).toBe("");
  });
});
