import { existsSync } from "node:fs";
import { join } from "node:path";
import { expect, test } from "vitest";
import { PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { STATE_STREAM } from "../../src/replication/subjects.js";
import { ensureStreams } from "../../src/replication/streams.js";
import { NatsServer } from "../harness/nats.js";
import { cleanupAfterAll, tempDir } from "../harness/tmp.js";
import { startWriterSystem } from "../harness/demo.js";
import { StatePublisher, paidCustomer, testCatalog } from "../harness/sidecar.js";
import { EventFactory, WriterClient, WriterProcess, connectNats } from "../harness/writer.js";
import { waitFor } from "../harness/wait.js";
import { metric, startSidecarProcess, type SidecarUnderTest } from "../harness/system.js";

/** Rebuilds and bootstraps never pass an empty or partial replica off as current. */
const cleanup = cleanupAfterAll();

/**
 * Checks every customer once; answers that would lie are collected: a paying customer answered
 * anything but GRANTED, or an answer not marked stale while a rebuild was under way (the new
 * replica, `<replica>.next`, existed before and after the call, so the previous one answered).
 * Done once every answer is fresh at `doneAt` or later. Revisions restart with a recreated
 * stream, so they cannot tell the two replicas apart; the file can.
 */
async function pollAll(sidecar: SidecarUnderTest, customers: readonly string[], replicaPath: string, doneAt: number, problems: string[]): Promise<boolean> {
  let done = true;
  for (const c of customers) {
    const rebuildingBefore = existsSync(`${replicaPath}.next`);
    const r = await sidecar.client.check({ customerId: c, feature: "api-access" });
    const rebuilding = rebuildingBefore && existsSync(`${replicaPath}.next`);
    if (r.status !== AccessStatus.ACCESS_STATUS_GRANTED) problems.push(`${c}: ${AccessStatus[r.status]} (stale=${r.stale}) at revision ${r.revision}`);
    if (!r.stale && rebuilding) problems.push(`${c}: fresh at revision ${r.revision} from the previous replica, while the new one was being built`);
    if (r.stale || r.revision < doneAt || rebuilding) done = false;
  }
  return done;
}

async function payingCustomers(client: WriterClient, prefix: string, n: number): Promise<{ customers: string[]; revision: number }> {
  const customers = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  const { revision } = await client.publish(
    customers.flatMap((c) => {
      const f = new EventFactory(c);
      return [f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)];
    }),
  );
  return { customers, revision };
}

test("state stream deleted and recreated under a running writer: the previous replica answers, stale, until the new one has caught up", async () => {
  const system = await startWriterSystem("rebuild");
  cleanup.push(() => system.close());
  const { nats, dir, client } = system;
  const { customers, revision } = await payingCustomers(client, "cus_rb_", 300);
  const replicaPath = join(dir, "replica.db");
  const sidecar = await startSidecarProcess("rebuild", nats.url, replicaPath);
  cleanup.push(() => sidecar.stop("SIGKILL"));
  await sidecar.client.check({ customerId: "cus_rb_0", feature: "api-access", minRevision: revision });
  await waitFor(async () => !(await sidecar.client.check({ customerId: "cus_rb_0", feature: "api-access" })).stale, "fresh");

  const nc = await connectNats(nats.url);
  cleanup.push(() => nc.close());
  await (await nc.jetstreamManager()).streams.delete(STATE_STREAM);
  // The next change makes the writer notice, recreate the stream and republish everything.
  const late = new EventFactory("cus_rb_late");
  const after = await waitFor(async () => {
    try {
      return (await client.publish([late.subscribe("premium"), late.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)])).revision;
    } catch {
      return undefined;
    }
  }, "publish onto the recreated stream", 30_000);

  // Poll every paying customer until the sidecar has rebuilt: never anything but GRANTED, and
  // never fresh before the rebuilt replica answers.
  const problems: string[] = [];
  await waitFor(() => pollAll(sidecar, customers, replicaPath, after, problems), "every customer granted and fresh after the rebuild", 60_000);
  expect(problems).toEqual([]);
  const r = await sidecar.client.check({ customerId: late.customerId, feature: "api-access" });
  expect([r.status, r.stale]).toEqual([AccessStatus.ACCESS_STATUS_GRANTED, false]);
  expect(await metric(sidecar.httpAddress, "proofgate_sidecar_replica_rebuilds_total", { reason: "stream recreated" })).toBe(1);
  expect(existsSync(`${replicaPath}.next`)).toBe(false);
});

test("state stream recreated empty while the writer is down: the previous replica is served stale and ready until the writer has republished", async () => {
  const system = await startWriterSystem("rebuild-down");
  cleanup.push(() => system.close());
  const { nats, dir, client } = system;
  const { customers, revision } = await payingCustomers(client, "cus_rd_", 200);
  const replicaPath = join(dir, "replica.db");
  const sidecar = await startSidecarProcess("rebuild-down", nats.url, replicaPath);
  cleanup.push(() => sidecar.stop("SIGKILL"));
  await sidecar.client.check({ customerId: "cus_rd_0", feature: "api-access", minRevision: revision });
  await waitFor(async () => !(await sidecar.client.check({ customerId: "cus_rd_0", feature: "api-access" })).stale, "fresh");

  await system.writer.stop("SIGKILL");
  const nc = await connectNats(nats.url);
  cleanup.push(() => nc.close());
  const jsm = await nc.jetstreamManager();
  await jsm.streams.delete(STATE_STREAM);
  // An empty stream of a new incarnation, as an operator's script would make it.
  await ensureStreams(jsm);
  await waitFor(async () => (await metric(sidecar.httpAddress, "proofgate_sidecar_replica_rebuilds_total", { reason: "stream recreated" })) === 1, "the sidecar saw the new stream");

  // Nothing confirms the empty new stream is the writer's state: the old replica keeps answering,
  // every answer stale, and the sidecar stays ready.
  expect(existsSync(`${replicaPath}.next`)).toBe(true);
  const problems: string[] = [];
  expect(await pollAll(sidecar, customers, replicaPath, Number.MAX_SAFE_INTEGER, problems)).toBe(false);
  expect(problems).toEqual([]);
  const r = await sidecar.client.check({ customerId: "cus_rd_7", feature: "api-access" });
  expect([r.status, r.stale, r.revision]).toEqual([AccessStatus.ACCESS_STATUS_GRANTED, true, revision]);
  expect(await sidecar.client.healthStatus()).toBe("SERVING");

  // The writer comes back on its ledger, finds the stream empty and republishes a snapshot; the
  // rebuilt replica replaces the old one once it has all of it.
  const writer = await WriterProcess.start({ natsUrl: nats.url, ledgerPath: join(dir, "ledger.db") });
  cleanup.push(() => writer.stop("SIGKILL"));
  const again = new WriterClient(writer.grpcAddress);
  cleanup.push(() => again.close());
  const late = new EventFactory("cus_rd_late");
  // Published after the snapshot the writer enqueues on reconnecting: its revision is past it.
  const after = await waitFor(async () => {
    try {
      return (await again.publish([late.subscribe("premium"), late.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)])).revision;
    } catch {
      return undefined;
    }
  }, "the writer is back", 30_000);
  await waitFor(() => pollAll(sidecar, [...customers, late.customerId], replicaPath, after, problems), "every customer granted and fresh from the rebuilt replica", 60_000);
  expect(problems).toEqual([]);
  expect(existsSync(`${replicaPath}.next`)).toBe(false);
  await writer.stop("SIGTERM");
});

test("a sidecar killed mid-bootstrap and restarted without NATS is not ready: an interrupted bootstrap is never a warm replica", async () => {
  const nats = await NatsServer.start();
  cleanup.push(() => nats.dispose());
  const dir = tempDir("proofgate-bootstrap-");
  cleanup.push(() => dir.dispose());
  const pub = await StatePublisher.connect(nats.url);
  cleanup.push(() => pub.close());
  await pub.catalog(testCatalog());
  const now = Date.now();
  const last = await pub.documents(Array.from({ length: 20_000 }, (_, i) => paidCustomer(`cus_boot_${i}`, "basic", now)));
  const replicaPath = join(dir.path, "replica.db");
  const first = await startSidecarProcess("bootstrap", nats.url, replicaPath);
  await waitFor(async () => ((await metric(first.httpAddress, "proofgate_sidecar_applied_revision")) ?? 0) > 0, { what: "bootstrap under way", intervalMs: 5 });
  await first.stop("SIGKILL");

  await nats.stop();
  const second = await startSidecarProcess("bootstrap-again", nats.url, replicaPath);
  cleanup.push(() => second.stop("SIGKILL"));
  const applied = (await metric(second.httpAddress, "proofgate_sidecar_applied_revision")) ?? 0;
  expect(applied).toBeLessThan(last);
  await waitFor(() => /interrupted bootstrap, not a complete state/.test(second.proc.output()), "the sidecar saw the replica is incomplete");
  expect(await second.client.healthStatus()).toBe("NOT_SERVING");
  expect(await metric(second.httpAddress, "proofgate_sidecar_ready")).toBe(0);

  // NATS back: it syncs from the stream and only then is ready, with every document.
  await nats.start();
  await waitFor(async () => (await second.client.healthStatus()) === "SERVING", "ready after syncing", 60_000);
  expect((await second.client.check({ customerId: "cus_boot_19999", feature: "advanced-filtering" })).allowed).toBe(true);
});
