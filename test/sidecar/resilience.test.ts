import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NatsServer } from "../harness/nats.js";
import { tempDir } from "../harness/tmp.js";
import { metric as scrapeMetric } from "../harness/system.js";
import { CustomerStory, DAY, StatePublisher, httpGet, paidCustomer, startTestSidecar, testCatalog, waitFor, type TestSidecar } from "../harness/sidecar.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";

/** Replication faults: restarts, outages, recreated streams, cold and warm starts. Each test gets its own nats-server. */
describe("sidecar replication", () => {
  let nats: NatsServer;
  let dir: ReturnType<typeof tempDir>;
  let pub: StatePublisher | undefined;
  const sidecars: TestSidecar[] = [];

  const start = async (opts: Partial<Parameters<typeof startTestSidecar>[0]> = {}): Promise<TestSidecar> => {
    const sc = await startTestSidecar({ natsUrl: nats.url, dir: dir.path, ...opts });
    sidecars.push(sc);
    return sc;
  };
  const stop = async (sc: TestSidecar): Promise<void> => {
    sidecars.splice(sidecars.indexOf(sc), 1);
    await sc.close();
  };

  beforeEach(async () => {
    nats = await NatsServer.start();
    dir = tempDir();
  });

  afterEach(async (ctx) => {
    for (const sc of sidecars.splice(0)) await sc.close();
    await pub?.close();
    pub = undefined;
    if (ctx.task.result?.state === "fail") process.stderr.write(nats.log());
    await nats.dispose();
    dir.dispose();
  });

  it("restarted warm, serves from its file at once (even with NATS down) and catches up by itself", async () => {
    pub = await StatePublisher.connect(nats.url);
    await pub.catalog(testCatalog());
    const id = "cus_warm";
    const now = Date.now();
    const first = await pub.document(paidCustomer(id, "basic", now));
    const a = await start();
    await a.sidecar.whenReady();
    await waitFor(() => a.sidecar.revision >= first, { what: "first document applied" });
    const revisionBefore = a.sidecar.revision;
    await stop(a);

    // While the sidecar is down, the customer upgrades.
    const upgraded = await pub.document(paidCustomer(id, "enterprise", now));
    await nats.stop();

    const b = await start();
    // Before any NATS traffic: the replica answers from its file, at its stored revision.
    const immediate = await b.client.check({ customerId: id, feature: "advanced-filtering" });
    expect(immediate.allowed).toBe(true);
    expect(immediate.revision).toBe(revisionBefore);
    expect((await b.client.check({ customerId: id, feature: "ai-assistant" })).allowed).toBe(false);
    // A warm replica that cannot reach NATS still becomes ready (its answers say how stale they are).
    await waitFor(async () => (await b.client.healthStatus()) === "SERVING", { what: "warm replica ready while NATS is down" });

    await nats.start();
    const caughtUp = await waitFor(async () => {
      const r = await b.client.check({ customerId: id, feature: "ai-assistant" });
      return r.allowed ? r : undefined;
    }, { what: "upgrade applied after NATS returned" });
    expect(caughtUp.revision).toBeGreaterThanOrEqual(upgraded);
    await waitFor(async () => !(await b.client.check({ customerId: id, feature: "ai-assistant" })).stale, { what: "fresh again" });
  });

  it("started cold while NATS is down, stays NOT_SERVING (unlike a warm replica) until it has synced", async () => {
    pub = await StatePublisher.connect(nats.url);
    await pub.catalog(testCatalog());
    const rev = await pub.document(paidCustomer("cus_cold", "basic", Date.now()));
    const warmDir = tempDir();
    try {
      const first = await start({ dir: warmDir.path });
      await first.sidecar.whenReady();
      await stop(first);
      await nats.stop();

      const cold = await start();
      const warm = await start({ dir: warmDir.path });
      // The warm replica becomes ready without NATS; the cold one, started first, must not.
      await waitFor(async () => (await warm.client.healthStatus()) === "SERVING", { what: "warm replica ready offline" });
      expect(await cold.client.healthStatus()).toBe("NOT_SERVING");
      expect((await httpGet(cold.sidecar.httpAddress ?? "", "/readyz")).status).toBe(503);
      const unready = await cold.client.check({ customerId: "cus_cold", feature: "advanced-filtering" });
      expect(unready.status).toBe(AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER);
      expect(unready.stale).toBe(true);
      const fromFile = await warm.client.check({ customerId: "cus_cold", feature: "advanced-filtering" });
      expect(fromFile.allowed).toBe(true);

      await nats.start();
      await waitFor(async () => (await cold.client.healthStatus()) === "SERVING", { what: "cold replica SERVING once synced" });
      const r = await cold.client.check({ customerId: "cus_cold", feature: "advanced-filtering" });
      expect(r.allowed).toBe(true);
      expect(r.revision).toBeGreaterThanOrEqual(rev);
    } finally {
      for (const sc of [...sidecars]) await stop(sc);
      warmDir.dispose();
    }
  });

  it("started cold, bootstraps every customer from the compacted stream before it is ready", async () => {
    pub = await StatePublisher.connect(nats.url);
    await pub.catalog(testCatalog());
    const now = Date.now();
    const n = 3_000;
    const ids = Array.from({ length: n }, (_, i) => `cus_${i}`);
    await pub.documents(ids.map((id) => paidCustomer(id, "basic", now)));
    // Compaction: republish a third of them on another plan; only the latest per subject remains.
    await pub.documents(ids.filter((_, i) => i % 3 === 0).map((id) => paidCustomer(id, "premium", now)));
    const last = await pub.lastSeq();

    const sc = await start();
    await sc.sidecar.whenReady();
    expect(sc.sidecar.revision).toBe(last);
    const q = (customerId: string, feature: string) => ({ customerId, feature, quantity: undefined, minRevision: undefined });
    for (let i = 0; i < n; i += 1_000) {
      const batch = await sc.client.checkBatch({ checks: ids.slice(i, i + 1_000).map((id) => q(id, "api-access")), minRevision: undefined });
      expect(batch.stale).toBe(false);
      batch.results.forEach((r, j) => {
        expect(r.allowed, `cus_${i + j}`).toBe((i + j) % 3 === 0);
      });
    }
    const metrics = await httpGet(sc.sidecar.httpAddress ?? "", "/metrics");
    expect(metrics.body).toMatch(new RegExp(`proofgate_sidecar_records_applied_total\\{[^}]*kind="document"[^}]*\\} ${n}\\b`));
  });

  it("keeps answering while NATS is down, marks answers stale after the coherency window, and catches up when NATS returns", async () => {
    pub = await StatePublisher.connect(nats.url);
    await pub.catalog(testCatalog({ coherencyWindowMs: 1_000 }));
    const id = "cus_outage";
    const now = Date.now();
    await pub.document(paidCustomer(id, "basic", now));
    const sc = await start();
    await sc.sidecar.whenReady();
    const fresh = await waitFor(async () => {
      const r = await sc.client.check({ customerId: id, feature: "advanced-filtering" });
      return r.allowed && !r.stale ? r : undefined;
    }, { what: "fresh answer" });

    await nats.stop();
    const stale = await waitFor(async () => {
      const r = await sc.client.check({ customerId: id, feature: "advanced-filtering" });
      return r.stale ? r : undefined;
    }, { what: "stale answer while NATS is down" });
    // stale_policy serve: still the replica's answer.
    expect(stale.allowed).toBe(true);
    expect(stale.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
    expect(stale.revision).toBe(fresh.revision);
    expect(sc.sidecar.connected).toBe(false);

    await nats.start();
    // The publisher reconnects by itself too; the new document must reach the sidecar without help.
    const rev = await waitFor(() => pub?.document(paidCustomer(id, "enterprise", now)), { what: "publish after restart" });
    const after = await waitFor(async () => {
      const r = await sc.client.check({ customerId: id, feature: "ai-assistant" });
      return r.allowed && !r.stale ? r : undefined;
    }, { what: "caught up after NATS returned" });
    expect(after.revision).toBeGreaterThanOrEqual(rev);

    // stale_policy deny: a stale replica denies, and says what it would have answered.
    const denyRev = await pub.catalog(testCatalog({ coherencyWindowMs: 1_000, stalePolicy: "deny" }));
    await waitFor(() => sc.sidecar.revision >= denyRev, { what: "deny policy applied" });
    await nats.stop();
    const denied = await waitFor(async () => {
      const r = await sc.client.check({ customerId: id, feature: "ai-assistant" });
      return r.stale ? r : undefined;
    }, { what: "stale denial" });
    expect(denied.allowed).toBe(false);
    expect(denied.reason).toMatch(/stale/i);
    expect(denied.reason).toMatch(/GRANTED/);
    const list = await sc.client.listEntitlements({ customerId: id, minRevision: undefined });
    expect(list.stale).toBe(true);
    expect(list.entitlements.every((e) => !e.allowed)).toBe(true);
    await nats.start();
    await waitFor(async () => {
      const r = await sc.client.check({ customerId: id, feature: "ai-assistant" });
      return r.allowed && !r.stale;
    }, { what: "allowed again once fresh" });
  });

  it("rebuilds a replica whose stream was recreated while it was stopped", async () => {
    pub = await StatePublisher.connect(nats.url);
    await pub.catalog(testCatalog());
    const now = Date.now();
    for (let i = 0; i < 5; i++) await pub.document(paidCustomer(`cus_old_${i}`, "basic", now));
    const a = await start();
    await a.sidecar.whenReady();
    await waitFor(async () => (await a.client.check({ customerId: "cus_old_4", feature: "advanced-filtering" })).allowed, { what: "old data applied" });
    await stop(a);

    await pub.recreateStream();
    await pub.catalog(testCatalog());
    const rev = await pub.document(paidCustomer("cus_new", "basic", now));
    // The new stream is shorter than the replica's revision and has another creation time.
    expect(rev).toBeLessThan(a.sidecar.revision);

    const b = await start();
    // Ready at once: the old replica was complete, so it answers (stale) while the new one is
    // built beside it, and is replaced once that has caught up.
    await b.sidecar.whenReady();
    await waitFor(() => b.sidecar.revision === rev, { what: "the rebuilt replica swapped in" });
    expect((await b.client.check({ customerId: "cus_old_0", feature: "advanced-filtering" })).status).toBe(AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER);
    expect((await b.client.check({ customerId: "cus_new", feature: "advanced-filtering" })).allowed).toBe(true);
    const metrics = await httpGet(b.sidecar.httpAddress ?? "", "/metrics");
    expect(metrics.body).toMatch(/proofgate_sidecar_replica_rebuilds_total\{[^}]*reason="stream recreated"[^}]*\} 1/);
  });

  it("detects a stream recreated under it while running and rebuilds", async () => {
    pub = await StatePublisher.connect(nats.url);
    await pub.catalog(testCatalog());
    const now = Date.now();
    for (let i = 0; i < 20; i++) await pub.document(paidCustomer(`cus_gone_${i}`, "basic", now));
    const sc = await start();
    await sc.sidecar.whenReady();
    await waitFor(async () => (await sc.client.check({ customerId: "cus_gone_19", feature: "advanced-filtering" })).allowed, { what: "old data applied" });

    await pub.recreateStream();
    await pub.catalog(testCatalog());
    // More records than before, so the new stream's sequences pass the old revision: following
    // blindly from there would mix incarnations.
    for (let i = 0; i < 30; i++) await pub.document(paidCustomer(`cus_fresh_${i}`, "basic", now));
    const last = await pub.lastSeq();
    await waitFor(async () => {
      const gone = await sc.client.check({ customerId: "cus_gone_0", feature: "advanced-filtering" });
      const first = await sc.client.check({ customerId: "cus_fresh_0", feature: "advanced-filtering" });
      return gone.status === AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER && first.allowed && sc.sidecar.revision === last;
    }, { what: "replica rebuilt from the new stream", timeoutMs: 20_000 });
  });

  it("settles a purged tail (erasure tombstone then purge) instead of waiting for it forever", async () => {
    pub = await StatePublisher.connect(nats.url);
    await pub.catalog(testCatalog());
    const now = Date.now();
    await pub.document(paidCustomer("cus_kept", "basic", now));
    await pub.document(paidCustomer("cus_forgotten", "basic", now));
    const tombstone = await pub.erase("cus_forgotten");
    await pub.purge("cus_forgotten");
    expect(await pub.lastSeq()).toBe(tombstone);

    const sc = await start();
    await sc.sidecar.whenReady();
    await waitFor(() => sc.sidecar.revision === tombstone, { what: "revision reaches the purged tombstone" });
    expect((await sc.client.check({ customerId: "cus_forgotten", feature: "advanced-filtering" })).status).toBe(AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER);
    // Fresh once a heartbeat confirms the replica at the tombstone.
    const kept = await waitFor(async () => {
      const r = await sc.client.check({ customerId: "cus_kept", feature: "advanced-filtering", minRevision: tombstone });
      return r.stale ? undefined : r;
    }, "a fresh answer for cus_kept");
    expect(kept.allowed).toBe(true);
    expect(kept.stale).toBe(false);
  });

  it("tracks the writer's heartbeats: head revision, heartbeat age and lag", async () => {
    pub = await StatePublisher.connect(nats.url, { heartbeats: false });
    await pub.catalog(testCatalog());
    const rev = await pub.document(new CustomerStory("cus_hb").subscribe("basic", Date.now() - DAY).document());
    const sc = await start();
    await sc.sidecar.whenReady();
    await waitFor(() => sc.sidecar.revision >= rev, { what: "applied" });
    const metric = (name: string): Promise<number | undefined> => scrapeMetric(sc.sidecar.httpAddress ?? "", name);
    expect(await metric("proofgate_sidecar_heartbeat_age_seconds")).toBe(-1);
    // Caught up with the stream, but no writer has spoken: not known current.
    expect(await metric("proofgate_sidecar_stale")).toBe(1);
    pub.heartbeat(rev);
    await waitFor(async () => (await metric("proofgate_sidecar_head_revision")) === rev, { what: "head from the heartbeat" });
    expect(await metric("proofgate_sidecar_heartbeat_age_seconds")).toBeGreaterThanOrEqual(0);
    expect(await metric("proofgate_sidecar_lag_revisions")).toBe(0);
    expect(await metric("proofgate_sidecar_stale")).toBe(0);
  });
});
