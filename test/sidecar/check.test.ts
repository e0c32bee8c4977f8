import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { status } from "@grpc/grpc-js";
import { connect, type NatsConnection } from "nats";
import { NatsServer } from "../harness/nats.js";
import { tempDir } from "../harness/tmp.js";
import {
  CheckClient,
  CustomerStory,
  DAY,
  StatePublisher,
  grpcError,
  httpGet,
  paidCustomer,
  startTestSidecar,
  testCatalog,
  waitFor,
  type TestSidecar,
} from "../harness/sidecar.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { PaymentResult, RecoveryResult } from "../../src/gen/proofgate/v1/billing.js";
import { customerToken } from "../../src/replication/subjects.js";
import { DECISIONS_SUBJECT } from "../../src/sidecar/index.js";

describe("sidecar CheckService", () => {
  let nats: NatsServer;
  let dir: ReturnType<typeof tempDir>;
  let sc: TestSidecar;
  let pub: StatePublisher;
  let client: CheckClient;

  beforeAll(async () => {
    nats = await NatsServer.start();
    dir = tempDir();
    // Started before the state stream exists: it must wait for it, not ready.
    sc = await startTestSidecar({ natsUrl: nats.url, dir: dir.path, socket: true, minRevisionWait: 500 });
    client = sc.client;
  });

  afterAll(async () => {
    await sc.close();
    await pub.close();
    await nats.dispose();
    dir.dispose();
  });

  it("is NOT_SERVING before the initial sync and SERVING once it caught up", async () => {
    expect(await client.healthStatus()).toBe("NOT_SERVING");
    expect(await client.healthStatus("proofgate.v1.CheckService")).toBe("NOT_SERVING");
    expect((await httpGet(sc.sidecar.httpAddress ?? "", "/readyz")).status).toBe(503);
    // Checks are answered anyway (from an empty replica), marked stale.
    const early = await client.check({ customerId: "nobody", feature: "api-access" });
    expect(early.status).toBe(AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER);
    expect(early.stale).toBe(true);

    pub = await StatePublisher.connect(nats.url);
    const rev = await pub.catalog(testCatalog());
    await waitFor(async () => (await client.healthStatus()) === "SERVING", { what: "SERVING" });
    expect(await client.healthStatus("proofgate.v1.CheckService")).toBe("SERVING");
    expect((await httpGet(sc.sidecar.httpAddress ?? "", "/readyz")).status).toBe(200);
    await waitFor(() => sc.sidecar.revision >= rev, { what: "catalog applied" });
  });

  it("changes its answer when a document is published, over TCP and the unix socket", async () => {
    const id = "cus.with spaces/and*wildcards>";
    const socket = sc.socketClient;
    if (!socket) throw new Error("no socket client");
    expect((await client.check({ customerId: id, feature: "api-access" })).status).toBe(AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER);

    const rev = await pub.document(paidCustomer(id, "premium", Date.now()));
    // Fresh once a writer heartbeat has confirmed the replica current (the publisher's beat).
    const granted = await waitFor(async () => {
      const r = await client.check({ customerId: id, feature: "api-access" });
      return r.allowed && !r.stale ? r : undefined;
    });
    expect(granted.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
    expect(granted.revision).toBeGreaterThanOrEqual(rev);
    expect(granted.stale).toBe(false);
    expect(granted.validUntil).toBeInstanceOf(Date);

    const viaSocket = await socket.check({ customerId: id, feature: "api-access" });
    expect(viaSocket.allowed).toBe(true);
    expect(viaSocket.revision).toBe(granted.revision);
    // Not in the premium plan.
    expect((await socket.check({ customerId: id, feature: "ai-assistant" })).status).toBe(AccessStatus.ACCESS_STATUS_NOT_ENTITLED);
    // Numeric limit: premium has 1 seat.
    expect((await client.check({ customerId: id, feature: "seats", quantity: 1 })).allowed).toBe(true);
    expect((await client.check({ customerId: id, feature: "seats", quantity: 2 })).status).toBe(AccessStatus.ACCESS_STATUS_LIMIT_EXCEEDED);

    // Canceled at once: access goes at the next revision.
    const now = Date.now();
    const canceled = new CustomerStory(id).subscribe("premium", now - DAY, { periodEndMs: now + 29 * DAY }).pay("inv", "premium", now - DAY, now - DAY, now + 29 * DAY);
    canceled.subscribe("premium", now - 1000, { canceled: true, periodEndMs: now + 29 * DAY });
    const rev2 = await pub.document(canceled.document());
    const denied = await client.check({ customerId: id, feature: "api-access", minRevision: rev2 });
    expect(denied.revision).toBeGreaterThanOrEqual(rev2);
    expect(denied.allowed).toBe(false);
    expect(denied.status).toBe(AccessStatus.ACCESS_STATUS_CANCELED);
  });

  it("waits for min_revision (read-your-writes) and answers stale when it is not reached in time", async () => {
    const id = "cus_ryw";
    const rev = await pub.document(paidCustomer(id, "basic", Date.now()));
    // Asked right after the publish: the answer must already include it.
    const r = await client.check({ customerId: id, feature: "advanced-filtering", minRevision: rev });
    expect(r.allowed).toBe(true);
    expect(r.revision).toBeGreaterThanOrEqual(rev);
    expect(r.stale).toBe(false);

    const far = rev + 1_000_000;
    const late = await client.check({ customerId: id, feature: "advanced-filtering", minRevision: far });
    expect(late.stale).toBe(true);
    expect(late.revision).toBeLessThan(far);
    expect(late.allowed).toBe(true);
    const batch = await client.checkBatch({ checks: [{ customerId: id, feature: "api-access", quantity: undefined, minRevision: undefined }], minRevision: far });
    expect(batch.stale).toBe(true);
    expect(batch.results[0]?.stale).toBe(true);
    const list = await client.listEntitlements({ customerId: id, minRevision: far });
    expect(list.stale).toBe(true);
  });

  it("rejects malformed requests with INVALID_ARGUMENT naming the field", async () => {
    expect(await grpcError(client.check({ customerId: "", feature: "api-access" }), status.INVALID_ARGUMENT)).toMatch(/^customer_id: /);
    expect(await grpcError(client.check({ customerId: "c", feature: "" }), status.INVALID_ARGUMENT)).toMatch(/^feature: /);
    expect(await grpcError(client.check({ customerId: "é".repeat(129), feature: "api-access" }), status.INVALID_ARGUMENT)).toMatch(/^customer_id: .*256 bytes/);
    expect(await grpcError(client.check({ customerId: "c", feature: "seats", quantity: -1 }), status.INVALID_ARGUMENT)).toMatch(/^quantity: /);
    // 256 bytes exactly is fine.
    expect((await client.check({ customerId: "é".repeat(128), feature: "api-access" })).status).toBe(AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER);

    const one = { customerId: "c", feature: "api-access", quantity: undefined, minRevision: undefined };
    expect(await grpcError(client.checkBatch({ checks: Array.from({ length: 1001 }, () => one), minRevision: undefined }), status.INVALID_ARGUMENT)).toMatch(/^checks: /);
    const bad = [one, one, one, { ...one, feature: "" }];
    expect(await grpcError(client.checkBatch({ checks: bad, minRevision: undefined }), status.INVALID_ARGUMENT)).toMatch(/^checks\[3\]\.feature: /);
    expect(await grpcError(client.listEntitlements({ customerId: "", minRevision: undefined }), status.INVALID_ARGUMENT)).toMatch(/^customer_id: /);
  });

  it("answers CheckBatch in order at one revision, and ListEntitlements for every catalog feature", async () => {
    const a = "cus_batch_a";
    const b = "cus_batch_b";
    await pub.document(paidCustomer(a, "enterprise", Date.now()));
    const rev = await pub.document(paidCustomer(b, "basic", Date.now()));
    const q = (customerId: string, feature: string) => ({ customerId, feature, quantity: undefined, minRevision: undefined });
    const res = await client.checkBatch({ checks: [q(a, "ai-assistant"), q(b, "ai-assistant"), q("cus_nobody", "api-access"), q(b, "advanced-filtering")], minRevision: rev });
    expect(res.results.map((r) => r.status)).toEqual([
      AccessStatus.ACCESS_STATUS_GRANTED,
      AccessStatus.ACCESS_STATUS_NOT_ENTITLED,
      AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER,
      AccessStatus.ACCESS_STATUS_GRANTED,
    ]);
    expect(res.revision).toBeGreaterThanOrEqual(rev);
    expect(new Set(res.results.map((r) => r.revision))).toEqual(new Set([res.revision]));
    expect(res.stale).toBe(false);

    const list = await client.listEntitlements({ customerId: a, minRevision: rev });
    const features = list.entitlements.map((e) => e.feature);
    expect(features).toEqual([...features].sort());
    expect(features).toContain("extended-retention");
    expect(list.entitlements.find((e) => e.feature === "extended-retention")?.allowed).toBe(true);
    expect(list.entitlements.find((e) => e.feature === "support-tier")?.value).toBe("dedicated");
  });

  it("deletes a customer on an erasure tombstone", async () => {
    const id = "cus_erased";
    await pub.document(paidCustomer(id, "basic", Date.now()));
    const rev = await pub.erase(id);
    const r = await client.check({ customerId: id, feature: "advanced-filtering", minRevision: rev });
    expect(r.status).toBe(AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER);
  });

  it("skips a malformed record and keeps applying the ones after it", async () => {
    const bad = await pub.raw("proofgate.state.customer.garbage", new Uint8Array([0x0a, 0xff, 0xff, 0x01]));
    const rev = await pub.document(paidCustomer("cus_after_garbage", "basic", Date.now()));
    expect(rev).toBeGreaterThan(bad);
    const r = await client.check({ customerId: "cus_after_garbage", feature: "advanced-filtering", minRevision: rev });
    expect(r.allowed).toBe(true);
    expect(r.stale).toBe(false);
  });

  it("swaps the catalog when a new one is published", async () => {
    const id = "cus_catalog";
    await pub.document(paidCustomer(id, "premium", Date.now()));
    const catalog = testCatalog();
    const premium = catalog.plans.find((p) => p.id === "premium");
    if (!premium) throw new Error("no premium plan");
    premium.features = premium.features.filter((f) => f.feature !== "api-access");
    const rev = await pub.catalog(catalog);
    const r = await client.check({ customerId: id, feature: "api-access", minRevision: rev });
    expect(r.allowed).toBe(false);
    const back = await pub.catalog(testCatalog());
    expect((await client.check({ customerId: id, feature: "api-access", minRevision: back })).allowed).toBe(true);
  });

  it("exposes metrics", async () => {
    const { status: code, body } = await httpGet(sc.sidecar.httpAddress ?? "", "/metrics");
    expect(code).toBe(200);
    expect(body).toMatch(/proofgate_sidecar_check_duration_seconds_count\{[^}]*method="Check"[^}]*\} [1-9]/);
    expect(body).toMatch(/proofgate_sidecar_decisions_total\{[^}]*status="GRANTED"[^}]*\} [1-9]/);
    expect(body).toMatch(new RegExp(`proofgate_sidecar_applied_revision ${sc.sidecar.revision}\\b`));
    expect(body).toMatch(/proofgate_sidecar_ready 1/);
    expect(body).toMatch(/proofgate_sidecar_lag_seconds/);
    expect(body).toMatch(/proofgate_sidecar_bootstrap_progress_ratio 1/);
  });

  it("flips time-based answers at the exact instant, with no event (injected clock)", async () => {
    const t0 = Date.UTC(2026, 0, 10);
    let clock = t0;
    const local = tempDir();
    const timed = await startTestSidecar({ natsUrl: nats.url, dir: local.path, now: () => clock });
    try {
      const trialEnd = t0 + 3 * DAY;
      const trial = new CustomerStory("cus_trial").subscribe("premium", t0 - DAY, { trialEndMs: trialEnd, periodEndMs: trialEnd }).document();
      const periodEnd = t0 + 5 * DAY;
      const lapsing = paidCustomer("cus_lapsing", "premium", t0, periodEnd);
      const failing = new CustomerStory("cus_failing")
        .subscribe("premium", t0 - DAY, { periodEndMs: periodEnd })
        .pay("inv-1", "premium", t0 - DAY, t0 - DAY, periodEnd)
        .pay("inv-2", "premium", periodEnd, periodEnd, periodEnd + 30 * DAY, PaymentResult.PAYMENT_RESULT_FAILED)
        .document();
      const exhausted = new CustomerStory("cus_exhausted")
        .subscribe("premium", t0 - DAY, { periodEndMs: periodEnd })
        .pay("inv-1", "premium", t0 - DAY, t0 - DAY, periodEnd)
        .pay("inv-2", "premium", periodEnd, periodEnd, periodEnd + 30 * DAY, PaymentResult.PAYMENT_RESULT_FAILED)
        .recovery("inv-2", periodEnd, RecoveryResult.RECOVERY_RESULT_EXHAUSTED)
        .document();
      await pub.documents([trial, lapsing, failing, exhausted]);
      const rev = await pub.lastSeq();
      await waitFor(() => timed.sidecar.revision >= rev, { what: "documents applied" });
      const at = (customerId: string) => timed.client.check({ customerId, feature: "api-access" });

      // Trial: granted until its end, which valid_until announces; denied from that instant.
      const inTrial = await at("cus_trial");
      expect(inTrial.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
      expect(inTrial.validUntil?.getTime()).toBe(trialEnd);
      clock = trialEnd - 1;
      expect((await at("cus_trial")).allowed).toBe(true);
      clock = trialEnd;
      const after = await at("cus_trial");
      expect(after.allowed).toBe(false);
      expect(after.revision).toBe(inTrial.revision);

      // Period end: paid access holds to the last millisecond, then the grace window starts.
      clock = periodEnd - 1;
      const paid = await at("cus_lapsing");
      expect(paid.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
      expect(paid.validUntil?.getTime()).toBe(periodEnd);
      clock = periodEnd;
      const grace = await at("cus_lapsing");
      expect(grace.status).toBe(AccessStatus.ACCESS_STATUS_GRACE_PERIOD);
      expect(grace.allowed).toBe(true);
      expect((await at("cus_failing")).status).toBe(AccessStatus.ACCESS_STATUS_GRACE_PERIOD);
      // Dunning gave up: no grace at all.
      expect((await at("cus_exhausted")).status).toBe(AccessStatus.ACCESS_STATUS_SUSPENDED);

      // Grace end (7 days by the demo policy).
      const graceEnd = grace.validUntil?.getTime() ?? Number.NaN;
      expect(graceEnd).toBe(periodEnd + 7 * DAY);
      clock = graceEnd - 1;
      expect((await at("cus_failing")).allowed).toBe(true);
      clock = graceEnd;
      const suspended = await at("cus_failing");
      expect(suspended.allowed).toBe(false);
      expect(suspended.status).toBe(AccessStatus.ACCESS_STATUS_SUSPENDED);
      expect((await at("cus_lapsing")).allowed).toBe(false);
      expect(timed.sidecar.revision).toBe(rev);
    } finally {
      await timed.close();
      local.dispose();
    }
  });

  it("publishes sampled decisions to NATS without raw customer ids", async () => {
    const local = tempDir();
    const logged = await startTestSidecar({ natsUrl: nats.url, dir: local.path, decisionLogSample: 1 });
    let nc: NatsConnection | undefined;
    try {
      nc = await connect({ servers: nats.url });
      const sub = nc.subscribe(DECISIONS_SUBJECT, { max: 1 });
      await nc.flush();
      await logged.sidecar.whenReady();
      await waitFor(() => logged.sidecar.connected, { what: "connected" });
      const id = "cus_logged@example.com";
      await logged.client.check({ customerId: id, feature: "api-access" });
      let received: Record<string, unknown> | undefined;
      for await (const m of sub) received = JSON.parse(new TextDecoder().decode(m.data)) as Record<string, unknown>;
      expect(received?.["customer_token"]).toBe(customerToken(id));
      expect(received?.["feature"]).toBe("api-access");
      expect(received?.["status"]).toBe("UNKNOWN_CUSTOMER");
      expect(JSON.stringify(received)).not.toContain("example.com");
    } finally {
      await nc?.close();
      await logged.close();
      local.dispose();
    }
  });
});
