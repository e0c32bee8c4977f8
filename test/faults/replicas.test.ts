import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { JetStreamManager, NatsConnection } from "nats";
import { CatalogIndex } from "../../src/catalog/index.js";
import { type BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { AccessStatus, CheckResponse } from "../../src/gen/proofgate/v1/check.js";
import { evaluate, foldDocument } from "../../src/policy/index.js";
import { NatsServer } from "../harness/nats.js";
import { WriterClient, WriterProcess, demoCatalog, streamLastSeq } from "../harness/writer.js";
import { startWriterSystem, type WriterSystem } from "../harness/demo.js";
import { waitFor } from "../harness/wait.js";
import { BillingTraffic, expectConverged, mapLimit, metric, publishAccepted, replicaRevision, seedEvents, startSidecarProcess, testRng, type Rng, type SidecarUnderTest } from "../harness/system.js";

/**
 * Sidecars as real processes over a writer holding a few thousand customers: one SIGKILLed in
 * the middle of its bootstrap (twice) and restarted; two sidecars, one following from the start
 * and one bootstrapped while events flow, must hold the same replica and give the same answers.
 */
const SEEDED = 5_000;

describe("sidecar replicas", () => {
  let nats: NatsServer;
  let system: WriterSystem;
  let dir: string;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let writer: WriterProcess;
  let client: WriterClient;
  /** Follows the stream from before the first customer existed. */
  let live: SidecarUnderTest;
  /** Every event sent, per customer (the seed events and each test's traffic). */
  const sent = new Map<string, BillingEvent[]>();
  const stopped: SidecarUnderTest[] = [];

  const publish = (events: readonly BillingEvent[]): Promise<number> => publishAccepted(client, events, sent);
  /** A burst of random traffic through the writer, recorded as sent. */
  const burst = async (rng: Rng, customers: readonly string[], n: number, prefix: string): Promise<number> => {
    const traffic = new BillingTraffic(rng, customers, prefix);
    return publish(traffic.burst(n));
  };

  beforeAll(async () => {
    system = await startWriterSystem("replicas");
    ({ nats, dir, nc, jsm, writer, client } = system);
    live = await startSidecarProcess("live", nats.url, join(dir, "live.db"));
    // A few thousand customers: every one subscribed, two in three paid, some upgraded.
    await publish(seedEvents(SEEDED));
    // Thousands of durable events through a writer: on a loaded CI machine this alone has taken a minute.
  }, 180_000);

  afterAll(async () => {
    for (const s of stopped) await s.stop("SIGKILL");
    await live.stop("SIGKILL");
    await system.close();
  });

  const customers = (): string[] => [...sent.keys()].sort();
  const target = (sidecars: SidecarUnderTest[]) => ({ nc, jsm, writer: { client, httpAddress: writer.httpAddress }, sidecars, expected: sent });

  test("a sidecar SIGKILLed mid-bootstrap, twice, resumes or rebuilds to exactly the writer's state", async () => {
    const rng = testRng();
    const replicaPath = join(dir, "killed.db");
    const kills: { threshold: number; revisionAtKill: number; streamLast: number }[] = [];
    for (let round = 1; round <= 2; round++) {
      const streamLast = await streamLastSeq(jsm);
      const from = replicaRevision(replicaPath);
      // Killed once its file shows a random point of the way to the stream's end.
      const threshold = from + rng.int(Math.ceil((streamLast - from) * 0.1), Math.floor((streamLast - from) * 0.6));
      const sc = await startSidecarProcess(`bootstrap-${round}`, nats.url, replicaPath);
      stopped.push(sc);
      await waitFor(() => replicaRevision(replicaPath) >= threshold, `sidecar ${sc.name} to apply revision ${threshold}`, 30_000);
      expect(await sc.stop("SIGKILL")).toBe(null);
      const revisionAtKill = replicaRevision(replicaPath);
      kills.push({ threshold, revisionAtKill, streamLast });
      // It really was interrupted: the file is part of the way there.
      expect(revisionAtKill).toBeGreaterThanOrEqual(threshold);
      expect(revisionAtKill).toBeLessThan(streamLast);
      // While it is dead, customers change (some it already has, some it has not reached) and new ones arrive.
      await burst(rng, [...customers().filter(() => rng.next() < 0.02), "cus_new_1", "cus_new_2"], 200, `k${round}_${rng.seed}`);
      // (Random picks may miss one of them: each gets an event of its own too.)
      for (const c of ["cus_new_1", "cus_new_2"]) await burst(rng, [c], 1, `k${round}_${c}_${rng.seed}`);
    }

    const restarted = await startSidecarProcess("restarted", nats.url, replicaPath);
    stopped.push(restarted);
    await waitFor(async () => (await restarted.client.healthStatus()) === "SERVING", "the restarted sidecar to be ready", 30_000);
    const converged = await expectConverged(target([restarted, live]));
    expect(converged.revision).toBe(await streamLastSeq(jsm));
    expect(sent.size).toBe(SEEDED + 2);
    const rebuilds = await metric(restarted.httpAddress, "proofgate_sidecar_replica_rebuilds_total");
    process.stdout.write(`bootstrap kills (seed ${rng.seed}): ${JSON.stringify(kills)}; rebuilds after restart: ${rebuilds ?? 0}\n`);
  });

  test("two sidecars on the same stream, one following live and one bootstrapped while events flow, agree on every customer × feature", async () => {
    const rng = testRng();
    const late = await startSidecarProcess("late", nats.url, join(dir, "late.db"));
    stopped.push(late);
    // Events keep coming while it bootstraps.
    await burst(rng, customers(), 600, `t${rng.seed}`);
    const converged = await expectConverged(target([live, late]));

    const catalog = CatalogIndex.from(demoCatalog());
    const features = demoCatalog().features.map((f) => f.key);
    const ids = customers();
    const checks = ids.flatMap((customerId) => features.map((feature) => ({ customerId, feature, quantity: feature === "seats" ? 2 : undefined, minRevision: converged.revision })));
    const answers = async (sc: SidecarUnderTest): Promise<CheckResponse[]> =>
      (
        await mapLimit(
          Array.from({ length: Math.ceil(checks.length / 1_000) }, (_, i) => checks.slice(i * 1_000, (i + 1) * 1_000)),
          4,
          async (chunk) => (await sc.client.checkBatch({ checks: chunk, minRevision: converged.revision })).results,
        )
      ).flat();
    const now = Date.now();
    const [a, b] = await Promise.all([answers(live), answers(late)]);
    expect(a).toHaveLength(checks.length);
    expect(b).toHaveLength(checks.length);
    const disagreements: string[] = [];
    const wrong: string[] = [];
    checks.forEach((c, i) => {
      const ra = a[i] as CheckResponse;
      const x = CheckResponse.toJSON(ra);
      const y = CheckResponse.toJSON(b[i] as CheckResponse);
      if (JSON.stringify(x) !== JSON.stringify(y)) disagreements.push(`${c.customerId} ${c.feature}: ${JSON.stringify(x)} vs ${JSON.stringify(y)}`);
      // And the answer is the policy core's for the fold of the events sent.
      const want = evaluate(foldDocument(c.customerId, sent.get(c.customerId) ?? [], []), catalog, c.feature, c.quantity, now);
      if (ra.status !== want.status || ra.allowed !== want.allowed) wrong.push(`${c.customerId} ${c.feature}: ${JSON.stringify(x)}, expected ${JSON.stringify(want)}`);
    });
    expect(disagreements.slice(0, 5)).toEqual([]);
    expect(wrong.slice(0, 5)).toEqual([]);
    expect(a.every((r) => r.revision === converged.revision && !r.stale)).toBe(true);
    // The traffic is varied enough for the comparison to mean something.
    const statuses = new Set(a.map((r) => r.status));
    for (const s of [AccessStatus.ACCESS_STATUS_GRANTED, AccessStatus.ACCESS_STATUS_PAYMENT_REQUIRED, AccessStatus.ACCESS_STATUS_NOT_ENTITLED, AccessStatus.ACCESS_STATUS_LIMIT_EXCEEDED]) expect(statuses).toContain(s);
  });
});
