import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import type { JetStreamManager, NatsConnection } from "nats";
import { AuditKind } from "../../src/gen/proofgate/v1/admin.js";
import { BillingEvent, PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { IngestResult } from "../../src/gen/proofgate/v1/ingest.js";
import { CATALOG_SUBJECT, customerSubject } from "../../src/replication/subjects.js";
import { NatsServer } from "../harness/nats.js";
import { tempDir } from "../harness/tmp.js";
import { EventFactory, WriterClient, WriterProcess, allState, connectNats, lastState, streamLastSeq, waitFor } from "../harness/writer.js";

/**
 * The writer as a real process, killed with SIGKILL at the two dangerous moments (test-only
 * fault hooks, see docs/writer.md): after a ledger commit but before its publish, and after a
 * publish but before the ledger recorded it. Both must end with the stream holding every change
 * exactly once, with no gap in revisions.
 */
let nats: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
const dir = tempDir("proofgate-crash-");
const ledgerPath = join(dir.path, "ledger.db");
const running: WriterProcess[] = [];

async function startWriter(env: Record<string, string> = {}): Promise<{ p: WriterProcess; client: WriterClient }> {
  const p = await WriterProcess.start({ natsUrl: nats.url, ledgerPath, env });
  running.push(p);
  return { p, client: new WriterClient(p.grpcAddress) };
}

beforeAll(async () => {
  nats = await NatsServer.start();
  nc = await connectNats(nats.url);
  jsm = await nc.jetstreamManager();
});

afterAll(async () => {
  for (const p of running) await p.stop("SIGKILL");
  await nc.close();
  await nats.dispose();
  dir.dispose();
});

test("a writer killed between commit and publish republishes on restart: no gap, no duplicate effect", async () => {
  const customer = "cus_crash";
  const subject = customerSubject(customer);
  const f = new EventFactory(customer, "crash");

  // 1. A normal run: catalog and a first event, then a graceful stop.
  const first = await startWriter();
  const catalogRevision = await first.client.applyCatalog();
  const subscribed = f.subscribe("premium");
  const a = await first.client.publish([subscribed]);
  expect(a.revision).toBe(catalogRevision + 1);
  first.client.close();
  expect(await first.p.stop("SIGTERM")).toEqual({ code: 0, signal: null });

  // 2. The next event arrives on NATS; the writer commits it and dies before publishing.
  const crashing = await startWriter({ PROOFGATE_TEST_CRASH_AFTER_COMMIT: "1" });
  const paid = f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED);
  await nc.jetstream().publish("proofgate.billing.crash", BillingEvent.encode(paid).finish());
  const exit = await crashing.p.exited;
  crashing.client.close();
  expect(exit.signal).toBe("SIGKILL");
  expect(await streamLastSeq(jsm)).toBe(a.revision); // committed, never published

  // 3. Restart: the outbox publishes the committed change, right after the last one.
  const restarted = await startWriter();
  const doc = await waitFor(async () => {
    const m = await lastState(jsm, subject);
    return m?.record.record?.$case === "document" && m.record.record.value.factCount === 2 ? m : undefined;
  }, "the committed event's document on the stream");
  expect(doc.seq).toBe(a.revision + 1);
  const state = await allState(jsm);
  expect(state.map((m) => [m.subject, m.seq])).toEqual([
    [CATALOG_SUBJECT, catalogRevision],
    [subject, a.revision + 1],
  ]);
  expect(await streamLastSeq(jsm)).toBe(a.revision + 1);

  // The event is in the ledger once; replaying it (as NATS will, it was never acked) is a duplicate.
  const c = await restarted.client.getCustomer(customer);
  expect(c.facts.map((e) => e.eventId)).toEqual([subscribed.eventId, paid.eventId]);
  expect(c.timeline.filter((e) => e.kind === AuditKind.AUDIT_KIND_EVENT_APPLIED && e.eventId === paid.eventId)).toHaveLength(1);
  const replay = await restarted.client.publish([paid]);
  expect(replay.results[0]?.result).toBe(IngestResult.INGEST_RESULT_DUPLICATE);
  expect(replay.revision).toBe(a.revision + 1);
  expect(await streamLastSeq(jsm)).toBe(a.revision + 1);
  restarted.client.close();
  expect((await restarted.p.stop("SIGTERM")).code).toBe(0);
});

test("a writer killed after a publish but before recording it does not publish it again", async () => {
  const customer = "cus_crash";
  const f = new EventFactory(customer, "crash2");
  const before = await streamLastSeq(jsm);

  const crashing = await startWriter({ PROOFGATE_TEST_CRASH_AFTER_PUBLISH: "1" });
  await waitFor(async () => (await crashing.p.http("/readyz")).status === 200, "the writer to be ready");
  const dunning = f.pay(PaymentResult.PAYMENT_RESULT_FAILED, "in_2");
  await expect(crashing.client.publish([dunning])).rejects.toBeDefined(); // the process died mid-call
  expect((await crashing.p.exited).signal).toBe("SIGKILL");
  crashing.client.close();
  expect(await streamLastSeq(jsm)).toBe(before + 1); // it did reach the stream

  const restarted = await startWriter();
  await waitFor(async () => (await restarted.p.http("/readyz")).status === 200, "the restarted writer to be ready");
  // The next change lands right after: the unrecorded publish was recognised, not repeated.
  const next = await restarted.client.publish([f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, "in_2", {}, 60_000)]);
  expect(next.revision).toBe(before + 2);
  const c = await restarted.client.getCustomer(customer);
  expect(c.facts).toHaveLength(4);
  expect(c.revision).toBe(before + 2);
  restarted.client.close();
  await restarted.p.stop("SIGTERM");
});
