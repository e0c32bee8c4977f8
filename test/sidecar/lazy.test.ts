import { statSync } from "node:fs";
import { join } from "node:path";
import { RetentionPolicy, StorageType, DiscardPolicy } from "nats";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NatsServer } from "../harness/nats.js";
import { tempDir } from "../harness/tmp.js";
import { metric } from "../harness/system.js";
import { CustomerStory, DAY, StatePublisher, paidCustomer, startTestSidecar, testCatalog, waitFor, type TestSidecar } from "../harness/sidecar.js";
import { AccessStatus, type CheckResponse } from "../../src/gen/proofgate/v1/check.js";
import type { AccessDocument } from "../../src/gen/proofgate/v1/document.js";
import { STATE_STREAM, STATE_SUBJECTS, customerTokenKeyId } from "../../src/replication/subjects.js";
import { streamIdentity } from "../../src/replication/streams.js";

const FEATURES = ["api-access", "advanced-filtering", "premium-support", "seats", "ai-assistant", "extended-retention", "retention-days", "support-tier", "no-such-feature"];

/** A customer whose subscription was canceled at `at` (after a paid period): access revoked. */
function canceledCustomer(id: string, plan: string, at: number): AccessDocument {
  const start = at - DAY;
  return new CustomerStory(id)
    .subscribe(plan, start, { periodEndMs: at + 30 * DAY })
    .pay(`${id}-inv-1`, plan, start, start, at + 30 * DAY)
    .subscribe(plan, at, { periodEndMs: at + 30 * DAY, canceled: true })
    .document();
}

/** The lazy mode (`--mode lazy`) against a real nats-server, in-process sidecars over real gRPC. */
describe("lazy sidecar", () => {
  let nats: NatsServer;
  let dir: ReturnType<typeof tempDir>;
  let pub: StatePublisher;
  const sidecars: TestSidecar[] = [];
  const now = Date.now();

  const start = async (opts: Partial<Parameters<typeof startTestSidecar>[0]> = {}): Promise<TestSidecar> => {
    const sc = await startTestSidecar({ natsUrl: nats.url, dir: dir.path, mode: "lazy", replica: join(dir.path, `lazy-${sidecars.length}.db`), now: () => now, ...opts });
    sidecars.push(sc);
    return sc;
  };
  const fresh = (sc: TestSidecar, customerId: string, feature = "advanced-filtering"): Promise<CheckResponse> =>
    waitFor(async () => {
      const r = await sc.client.check({ customerId, feature });
      return r.stale ? undefined : r;
    }, `a fresh answer for ${customerId}`);

  beforeEach(async () => {
    nats = await NatsServer.start();
    dir = tempDir();
    pub = await StatePublisher.connect(nats.url);
  });

  afterEach(async (ctx) => {
    for (const sc of sidecars.splice(0)) await sc.close();
    await pub.close();
    if (ctx.task.result?.state === "fail") process.stderr.write(nats.log());
    await nats.dispose();
    dir.dispose();
  });

  it("is ready at once, answers a miss from NATS, then follows that customer: a cancellation revokes", async () => {
    await pub.catalog(testCatalog());
    await pub.document(paidCustomer("cus_a", "basic", now));
    await pub.document(paidCustomer("cus_other", "basic", now));
    const sc = await start();
    expect(await sc.client.healthStatus()).toBe("SERVING");

    const first = await fresh(sc, "cus_a");
    expect(first.allowed).toBe(true);
    expect(first.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
    expect(await metric(sc.sidecar.httpAddress ?? "", "proofgate_sidecar_lazy_customers")).toBe(1);

    const canceled = await pub.document(canceledCustomer("cus_a", "basic", now));
    const revoked = await waitFor(async () => {
      const r = await sc.client.check({ customerId: "cus_a", feature: "advanced-filtering" });
      return r.allowed ? undefined : r;
    }, "the cancellation to reach the lazy sidecar");
    expect(revoked.status).toBe(AccessStatus.ACCESS_STATUS_CANCELED);
    expect(revoked.revision).toBeGreaterThanOrEqual(canceled);
    // Only what it was asked about is kept: the other customer's changes were read and skipped.
    await pub.document(canceledCustomer("cus_other", "basic", now));
    await waitFor(() => sc.sidecar.revision >= canceled + 1, "the other customer's change to be seen");
    expect(await metric(sc.sidecar.httpAddress ?? "", "proofgate_sidecar_lazy_customers")).toBe(1);
    expect(await metric(sc.sidecar.httpAddress ?? "", "proofgate_sidecar_lazy_misses_total", { result: "fetched" })).toBe(1);
  });

  it("answers exactly like a full sidecar for the same customers at the same revision", async () => {
    await pub.catalog(testCatalog());
    const ids: string[] = [];
    const docs: AccessDocument[] = [];
    const plans = ["basic", "premium", "enterprise"];
    for (let i = 0; i < 30; i++) {
      const id = `cus_same_${i}`;
      ids.push(id);
      const plan = plans[i % 3] ?? "basic";
      if (i % 5 === 0) docs.push(canceledCustomer(id, plan, now));
      else if (i % 7 === 0) docs.push(new CustomerStory(id).subscribe(plan, now - DAY, { trialEndMs: now + 3 * DAY }).document());
      else docs.push(paidCustomer(id, plan, now, now + (i % 4) * DAY + 1));
    }
    await pub.documents(docs);
    await pub.erase("cus_same_3");
    const full = await startTestSidecar({ natsUrl: nats.url, dir: dir.path, now: () => now });
    sidecars.push(full);
    const lazy = await start();
    await full.sidecar.whenReady();
    const asked = [...ids, "cus_never_seen"];
    // The lazy sidecar fetches each customer on its first check.
    for (const id of asked) await lazy.client.check({ customerId: id, feature: "advanced-filtering" });
    // A change after both hold the customers: both must follow it.
    const head = await pub.document(paidCustomer("cus_same_1", "enterprise", now));
    await waitFor(() => full.sidecar.revision >= head && lazy.sidecar.revision >= head, "both sidecars at the head");
    await waitFor(async () => !(await full.client.check({ customerId: "cus_same_1", feature: "advanced-filtering" })).stale && !(await lazy.client.check({ customerId: "cus_same_1", feature: "advanced-filtering" })).stale, "both fresh");
    let compared = 0;
    for (const id of asked) {
      for (const feature of FEATURES) {
        const [a, b] = await Promise.all([full.client.check({ customerId: id, feature }), lazy.client.check({ customerId: id, feature })]);
        expect(b, `${id} ${feature}`).toEqual(a);
        compared++;
      }
      const [la, lb] = await Promise.all([full.client.listEntitlements({ customerId: id, minRevision: undefined }), lazy.client.listEntitlements({ customerId: id, minRevision: undefined })]);
      expect(lb, id).toEqual(la);
    }
    const batch = { checks: asked.map((customerId, i) => ({ customerId, feature: FEATURES[i % FEATURES.length] ?? "", quantity: undefined, minRevision: undefined })), minRevision: undefined };
    expect(await lazy.client.checkBatch(batch)).toEqual(await full.client.checkBatch(batch));
    expect(compared).toBe(asked.length * FEATURES.length);
    expect((await lazy.client.check({ customerId: "cus_same_1", feature: "ai-assistant" })).allowed).toBe(true);
  });

  it("a batch of misses is fetched before it is answered, and a min_revision read-your-writes holds on a miss", async () => {
    await pub.catalog(testCatalog());
    const sc = await start();
    await fresh(sc, "cus_nobody");
    const rev = await pub.document(paidCustomer("cus_ryw", "enterprise", now));
    const r = await sc.client.check({ customerId: "cus_ryw", feature: "ai-assistant", minRevision: rev });
    expect(r.allowed).toBe(true);
    expect(r.revision).toBeGreaterThanOrEqual(rev);
    const last = await pub.documents([paidCustomer("cus_b1", "basic", now), paidCustomer("cus_b2", "premium", now)]);
    const batch = await sc.client.checkBatch({
      checks: ["cus_b1", "cus_b2", "cus_b1"].map((customerId) => ({ customerId, feature: "advanced-filtering", quantity: undefined, minRevision: undefined })),
      minRevision: last,
    });
    expect(batch.stale).toBe(false);
    expect(batch.results.map((x) => x.allowed)).toEqual([true, true, true]);
  });

  it("keeps at most --lazy-max-customers, least recently checked out first, and fetches an evicted one again", async () => {
    await pub.catalog(testCatalog());
    const ids = ["cus_e0", "cus_e1", "cus_e2", "cus_e3", "cus_e4"];
    await pub.documents(ids.map((id) => paidCustomer(id, "basic", now)));
    const sc = await start({ lazyMaxCustomers: 3 });
    const http = sc.sidecar.httpAddress ?? "";
    for (const id of ids.slice(0, 3)) expect((await fresh(sc, id)).allowed).toBe(true);
    // e0 checked again: e1 is now the least recently used.
    await sc.client.check({ customerId: "cus_e0", feature: "advanced-filtering" });
    await sc.client.check({ customerId: "cus_e3", feature: "advanced-filtering" });
    await sc.client.check({ customerId: "cus_e4", feature: "advanced-filtering" });
    expect(await metric(http, "proofgate_sidecar_lazy_customers")).toBe(3);
    expect(await metric(http, "proofgate_sidecar_lazy_evictions_total")).toBe(2);
    const fetchedBefore = (await metric(http, "proofgate_sidecar_lazy_misses_total", { result: "fetched" })) ?? 0;
    // e0 survived (a hit, no fetch); e1 was evicted: changed meanwhile, it is fetched again, current.
    await sc.client.check({ customerId: "cus_e0", feature: "advanced-filtering" });
    expect(await metric(http, "proofgate_sidecar_lazy_misses_total", { result: "fetched" })).toBe(fetchedBefore);
    await pub.document(canceledCustomer("cus_e1", "basic", now));
    const again = await sc.client.check({ customerId: "cus_e1", feature: "advanced-filtering" });
    expect(again.allowed).toBe(false);
    expect(again.status).toBe(AccessStatus.ACCESS_STATUS_CANCELED);
    expect(await metric(http, "proofgate_sidecar_lazy_misses_total", { result: "fetched" })).toBe(fetchedBefore + 1);
    expect(await metric(http, "proofgate_sidecar_lazy_customers")).toBe(3);
  });

  it("keeps its documents and its file within --lazy-max-bytes however many customers it is asked about", async () => {
    await pub.catalog(testCatalog());
    const ids = Array.from({ length: 600 }, (_, i) => `cus_bytes_${i}`);
    await pub.documents(ids.map((id) => paidCustomer(id, "enterprise", now)));
    const maxBytes = 64 * 1024;
    const sc = await start({ lazyMaxBytes: maxBytes });
    const http = sc.sidecar.httpAddress ?? "";
    // Ready at once, fresh once a writer heartbeat confirms it: from then on every answer counts.
    expect((await fresh(sc, ids[0] ?? "")).allowed).toBe(true);
    for (const id of ids) expect((await sc.client.check({ customerId: id, feature: "advanced-filtering" })).allowed, id).toBe(true);
    const kept = (await metric(http, "proofgate_sidecar_lazy_customers")) ?? 0;
    const bytes = (await metric(http, "proofgate_sidecar_lazy_bytes")) ?? Infinity;
    expect(bytes).toBeLessThanOrEqual(maxBytes);
    expect(kept).toBeGreaterThan(50);
    expect(kept).toBeLessThan(ids.length);
    expect(await metric(http, "proofgate_sidecar_lazy_evictions_total")).toBe(ids.length - kept);
    // On disk: pages freed by evictions are reused, so the file stays near the bound, not the region (600 × ~300 B).
    const path = join(dir.path, "lazy-0.db");
    const size = (f: string): number => {
      try {
        return statSync(f).size;
      } catch {
        return 0;
      }
    };
    expect(size(path)).toBeLessThanOrEqual(3 * maxBytes);
    expect(size(`${path}-wal`)).toBeLessThanOrEqual(2 * 1024 * 1024);
  });

  it("while NATS is down: a kept customer is served, a miss is answered at once, stale, saying why, under either stale policy", async () => {
    await pub.catalog(testCatalog({ stalePolicy: "deny", coherencyWindowMs: 60_000 }));
    await pub.document(paidCustomer("cus_kept", "basic", now));
    const sc = await start();
    expect((await fresh(sc, "cus_kept")).allowed).toBe(true);
    await nats.stop();
    await waitFor(() => !sc.sidecar.connected, "the sidecar to notice NATS is gone");
    // Within the coherency window the kept customer is still fresh.
    const kept = await sc.client.check({ customerId: "cus_kept", feature: "advanced-filtering" });
    expect(kept.allowed).toBe(true);
    const started = Date.now();
    const miss = await sc.client.check({ customerId: "cus_unseen", feature: "advanced-filtering" }, 5_000);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(miss.stale).toBe(true);
    expect(miss.allowed).toBe(false);
    expect(miss.status).toBe(AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER);
    expect(miss.reason).toContain("not cached by this lazy sidecar and NATS is unreachable");
    const batch = await sc.client.checkBatch({ checks: [{ customerId: "cus_unseen", feature: "advanced-filtering", quantity: undefined, minRevision: undefined }], minRevision: undefined });
    expect(batch.stale).toBe(true);
    expect(batch.results[0]?.reason).toContain("NATS is unreachable");
    const list = await sc.client.listEntitlements({ customerId: "cus_unseen", minRevision: undefined });
    expect(list.stale).toBe(true);
    expect(list.entitlements.every((e) => !e.allowed && e.reason.includes("NATS is unreachable"))).toBe(true);
    expect(await metric(sc.sidecar.httpAddress ?? "", "proofgate_sidecar_lazy_misses_total", { result: "offline" })).toBeGreaterThanOrEqual(3);

    // Under stale_policy serve the answer is the same denial, also saying why.
    await nats.start();
    await waitFor(() => sc.sidecar.connected, "reconnected");
    // JetStream may still be recovering its streams when the connections are back: retried until stored.
    const serve = await waitFor(() => pub.catalog(testCatalog({ stalePolicy: "serve", coherencyWindowMs: 60_000 })).catch(() => undefined), "the serve catalog stored");
    await waitFor(() => sc.sidecar.revision >= serve, "the serve catalog to be applied");
    await nats.stop();
    await waitFor(() => !sc.sidecar.connected, "the sidecar to notice NATS is gone again");
    const served = await sc.client.check({ customerId: "cus_unseen_2", feature: "advanced-filtering" }, 5_000);
    expect(served.stale).toBe(true);
    expect(served.allowed).toBe(false);
    expect(served.reason).toContain("NATS is unreachable");
  });

  it("started with NATS unreachable: ready at once, misses answered stale, served fresh once NATS is there", async () => {
    await pub.catalog(testCatalog());
    await pub.document(paidCustomer("cus_late", "basic", now));
    await pub.close();
    await nats.stop();
    const sc = await start();
    expect(await sc.client.healthStatus()).toBe("SERVING");
    const r = await sc.client.check({ customerId: "cus_late", feature: "advanced-filtering" }, 5_000);
    expect(r.stale).toBe(true);
    expect(r.reason).toContain("NATS is unreachable");
    await nats.start();
    pub = await StatePublisher.connect(nats.url);
    expect((await fresh(sc, "cus_late")).allowed).toBe(true);
  });

  it("survives a nats-server restart: keeps following its customers", async () => {
    await pub.catalog(testCatalog());
    await pub.document(paidCustomer("cus_r", "basic", now));
    const sc = await start();
    expect((await fresh(sc, "cus_r")).allowed).toBe(true);
    await pub.close();
    await nats.stop();
    await nats.start();
    pub = await StatePublisher.connect(nats.url);
    const again = pub;
    const rev = await waitFor(() => again.document(canceledCustomer("cus_r", "basic", now)).catch(() => undefined), "the change stored after the restart");
    const revoked = await waitFor(async () => {
      const x = await sc.client.check({ customerId: "cus_r", feature: "advanced-filtering" });
      return !x.allowed && !x.stale ? x : undefined;
    }, "the change made after the restart");
    expect(revoked.revision).toBeGreaterThanOrEqual(rev);
    await pub.document(paidCustomer("cus_new", "premium", now));
    expect((await fresh(sc, "cus_new", "premium-support")).allowed).toBe(true);
  });

  it("restarted, resumes from its file: kept customers answer at once, changes made while it was down are applied", async () => {
    await pub.catalog(testCatalog());
    await pub.document(paidCustomer("cus_w", "basic", now));
    const replica = join(dir.path, "warm.db");
    const a = await start({ replica });
    expect((await fresh(a, "cus_w")).allowed).toBe(true);
    await a.close();
    sidecars.splice(sidecars.indexOf(a), 1);
    const rev = await pub.document(canceledCustomer("cus_w", "basic", now));
    const b = await start({ replica });
    const after = await waitFor(async () => {
      const x = await b.client.check({ customerId: "cus_w", feature: "advanced-filtering" });
      return !x.allowed && !x.stale ? x : undefined;
    }, "the change made while it was down");
    expect(after.revision).toBeGreaterThanOrEqual(rev);
    expect(await metric(b.sidecar.httpAddress ?? "", "proofgate_sidecar_lazy_misses_total", { result: "fetched" })).toBeUndefined();
  });

  it("reads a stream created without direct gets through the stream API; the writer's update then allows them in place (same incarnation, same messages)", async () => {
    await pub.jsm.streams.delete(STATE_STREAM);
    await pub.jsm.streams.add({
      name: STATE_STREAM,
      subjects: [STATE_SUBJECTS],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      max_msgs_per_subject: 1,
      discard: DiscardPolicy.Old,
      // An older writer's stream of this release's key: only direct gets are off.
      description: `proofgate access documents and catalog; incarnation=7d2f1c1e-8d36-4c4a-9a43-0f6c2a1d9e55; tokens=${customerTokenKeyId()}`,
    });
    await pub.catalog(testCatalog());
    await pub.document(paidCustomer("cus_old", "basic", now));
    const before = await pub.jsm.streams.info(STATE_STREAM);
    expect(before.config.allow_direct).toBeFalsy();
    // An older writer's stream: the miss is answered all the same.
    const old = await start();
    expect((await fresh(old, "cus_old")).allowed).toBe(true);
    expect(await metric(old.sidecar.httpAddress ?? "", "proofgate_sidecar_lazy_misses_total", { result: "fetched" })).toBe(1);
    await pub.ensureStreams();
    const after = await pub.jsm.streams.info(STATE_STREAM);
    expect(after.config.allow_direct).toBe(true);
    expect(streamIdentity(after)).toBe(streamIdentity(before));
    expect(after.state.messages).toBe(before.state.messages);
    const sc = await start();
    expect((await fresh(sc, "cus_old")).allowed).toBe(true);
  });
});
