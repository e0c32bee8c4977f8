import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, expect, test } from "vitest";
import { status } from "@grpc/grpc-js";
import { StorageType, type NatsConnection } from "nats";
import { BillingEvent, PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { Heartbeat } from "../../src/gen/proofgate/v1/document.js";
import { IngestResult } from "../../src/gen/proofgate/v1/ingest.js";
import {
  BILLING_STREAM,
  CATALOG_SUBJECT,
  DEADLETTER_STREAM,
  HEADER_LEDGER_ID,
  HEARTBEAT_SUBJECT,
  STATE_STREAM,
  customerSubject,
} from "../../src/replication/subjects.js";
import { NatsServer } from "../harness/nats.js";
import { tempDir } from "../harness/tmp.js";
import { EventFactory, allState, connectNats, demoCatalog, lastState, startTestWriter, streamLastSeq, waitFor, type TestWriter } from "../harness/writer.js";

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

async function natsServer(): Promise<{ nats: NatsServer; nc: NatsConnection }> {
  const nats = await NatsServer.start();
  const nc = await connectNats(nats.url);
  cleanup.push(() => nats.dispose(), () => nc.close());
  return { nats, nc };
}

async function writer(natsUrl: string, extra: Partial<Parameters<typeof startTestWriter>[0]> = {}): Promise<TestWriter> {
  const w = await startTestWriter({ natsUrl, ...extra });
  cleanup.push(() => w.dispose());
  return w;
}

const readyz = async (w: TestWriter): Promise<number> => (await fetch(`http://${w.writer.httpAddress}/readyz`)).status;

test("starts against an empty NATS: creates the three streams, becomes ready and announces its head", async () => {
  const { nats, nc } = await natsServer();
  const jsm = await nc.jetstreamManager();
  const sub = nc.subscribe(HEARTBEAT_SUBJECT);
  const w = await writer(nats.url, { options: { writerId: "writer-eu-1" } });
  await waitFor(() => w.writer.ready(), "readiness");
  expect(await readyz(w)).toBe(200);
  const state = await jsm.streams.info(STATE_STREAM);
  expect(state.config.max_msgs_per_subject).toBe(1);
  expect(state.config.storage).toBe(StorageType.File);
  expect((await jsm.streams.info(BILLING_STREAM)).config.subjects).toEqual(["proofgate.billing.>"]);
  expect((await jsm.streams.info(DEADLETTER_STREAM)).config.subjects).toEqual(["proofgate.deadletter"]);

  // Without a catalog events cannot be validated: gRPC refuses them, NATS keeps them waiting.
  const early = new EventFactory("cus_early", "early").subscribe("premium");
  await expect(w.client.publish([early])).rejects.toMatchObject({ code: status.FAILED_PRECONDITION });
  await nc.jetstream().publish("proofgate.billing.early", BillingEvent.encode(early).finish());

  const revision = await w.client.applyCatalog();
  const doc = await waitFor(() => lastState(jsm, customerSubject("cus_early")), "the early event, applied once the catalog exists");
  const catalogSeq = (await lastState(jsm, CATALOG_SUBJECT))?.seq ?? 0;
  expect(catalogSeq).toBeLessThanOrEqual(revision);
  expect(doc.seq).toBe(catalogSeq + 1);
  // Heartbeats carry the head revision once it includes the catalog and the early event.
  for await (const m of sub) {
    const hb = Heartbeat.decode(m.data);
    expect(hb.writerId).toBe("writer-eu-1");
    if (hb.headRevision === doc.seq) break;
    expect(hb.headRevision).toBeLessThan(doc.seq);
  }
});

test("starts against existing streams holding another ledger's state, and continues their sequence", async () => {
  const { nats, nc } = await natsServer();
  const jsm = await nc.jetstreamManager();
  const old = await writer(nats.url);
  await old.client.applyCatalog();
  await old.client.publish([new EventFactory("cus_old", "old").subscribe()]);
  const lastOld = await streamLastSeq(jsm);
  await old.close();

  const fresh = await writer(nats.url);
  await waitFor(() => fresh.writer.ready() && fresh.writer.role() === "leader", "leadership on existing streams");
  expect(fresh.writer.ledgerId).not.toBe(old.writer.ledgerId);
  // It folded the same inputs into its own ledger: the same catalog, nothing new to publish but
  // its fence (the catalog again, under its epoch), right after the old ledger's last message.
  const revision = await fresh.client.applyCatalog();
  expect(revision).toBe(lastOld + 1);
  const catalog = await lastState(jsm, CATALOG_SUBJECT);
  expect(catalog?.headers.get(HEADER_LEDGER_ID)).toBe(fresh.writer.ledgerId);
  // Nothing was purged: the old ledger's document is still there.
  expect((await lastState(jsm, customerSubject("cus_old")))?.record.record?.$case).toBe("document");
});

test("answers UNAVAILABLE with nothing applied while NATS is away, keeps answering reads, and takes the retry once NATS is back", async () => {
  const { nats } = await natsServer();
  const w = await writer(nats.url, { options: { publishTimeout: 300 } });
  await waitFor(() => w.writer.role() === "leader", "leadership");
  await w.client.applyCatalog();
  await nats.stop();
  await waitFor(async () => (await readyz(w)) === 503, "not ready while NATS is down");

  const f = new EventFactory("cus_offline", "offline");
  const event = f.subscribe("premium");
  // Every change goes through the input stream (what keeps standbys in agreement): without NATS,
  // nothing is applied, and the caller is told to retry.
  await expect(w.client.publish([event])).rejects.toMatchObject({ code: status.UNAVAILABLE });
  await expect(w.client.getCustomer("cus_offline")).rejects.toMatchObject({ code: status.NOT_FOUND });
  expect((await w.client.getCatalog()).catalog).toEqual(demoCatalog());

  await nats.start();
  await waitFor(() => w.writer.ready(), "readiness after NATS is back");
  // A fresh connection for the test's own reads (requests of the old one may be lost in the restart).
  const nc2 = await connectNats(nats.url);
  cleanup.push(() => nc2.close());
  const jsm2 = await nc2.jetstreamManager();
  const retry = await waitFor(() => w.client.publish([event]), "the retry, once NATS is back");
  expect(retry.results[0]?.result).toBe(IngestResult.INGEST_RESULT_ACCEPTED);
  const doc = await waitFor(() => lastState(jsm2, customerSubject("cus_offline")), "the change on the stream");
  expect(retry.revision).toBeGreaterThanOrEqual(doc.seq);
  expect((await w.client.publish([event])).results[0]?.result).toBe(IngestResult.INGEST_RESULT_DUPLICATE);

  // The billing consumer survived the server restart.
  await nc2.jetstream().publish("proofgate.billing.after", BillingEvent.encode(f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)).finish());
  await waitFor(async () => {
    const m = await lastState(jsm2, customerSubject("cus_offline"));
    return m?.record.record?.$case === "document" && m.record.record.value.factCount === 2;
  }, "an event consumed from NATS after the restart");
});

test("starts while NATS is not running at all, and catches up when it appears", async () => {
  const { nats, nc } = await natsServer();
  await nats.stop();
  const w = await writer(nats.url, { options: { publishTimeout: 200 } });
  expect(w.writer.ready()).toBe(false);
  await expect(w.client.getCatalog()).rejects.toMatchObject({ code: status.NOT_FOUND });
  await expect(w.client.applyCatalog()).rejects.toMatchObject({ code: status.UNAVAILABLE });
  await expect(w.client.getCatalog()).rejects.toMatchObject({ code: status.NOT_FOUND });

  await nats.start();
  await waitFor(() => w.writer.ready() && w.writer.role() === "leader", "readiness and leadership once NATS appears");
  await w.client.applyCatalog();
  const jsm = await waitFor(async () => {
    try {
      return await nc.jetstreamManager();
    } catch {
      return undefined;
    }
  }, "the test's own connection");
  const catalog = await waitFor(() => lastState(jsm, CATALOG_SUBJECT), "the catalog on the stream");
  expect(catalog.record.record?.$case).toBe("catalog");
});

test("a lost state stream is recreated and refilled with a full snapshot", async () => {
  const { nats, nc } = await natsServer();
  const jsm = await nc.jetstreamManager();
  const w = await writer(nats.url);
  await w.client.applyCatalog();
  for (const id of ["cus_s1", "cus_s2", "cus_s3"]) {
    const f = new EventFactory(id, `snap_${id}`);
    // One call per event: the old stream ends up longer than the rebuilt one will be.
    await w.client.publish([f.subscribe("premium")]);
    await w.client.publish([f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)]);
  }
  expect(await streamLastSeq(jsm)).toBe(7);
  await jsm.streams.delete(STATE_STREAM);

  const res = await w.client.publish([new EventFactory("cus_s4", "snap4").subscribe("basic")]);
  expect(res.results[0]?.result).toBe(IngestResult.INGEST_RESULT_ACCEPTED);
  const state = await allState(jsm);
  expect(state.map((m) => m.subject).sort()).toEqual([CATALOG_SUBJECT, ...["cus_s1", "cus_s2", "cus_s3", "cus_s4"].map(customerSubject)].sort());
  expect(res.revision).toBe(await streamLastSeq(jsm));
  expect(state.every((m) => m.headers.get(HEADER_LEDGER_ID) === w.writer.ledgerId)).toBe(true);

  // Once is enough: a restart on the rebuilt stream republishes nothing.
  await w.close();
  const again = await writer(nats.url, { ledgerPath: w.ledgerPath });
  await waitFor(() => again.writer.ready(), "readiness after the restart");
  expect(await streamLastSeq(jsm)).toBe(res.revision);
  expect((await again.client.publish([new EventFactory("cus_s5", "snap5").subscribe("basic")])).revision).toBe(res.revision + 1);
  const metrics = await (await fetch(`http://${again.writer.httpAddress}/metrics`)).text();
  expect(metrics).toContain('proofgate_writer_snapshots_total 0');
});

test("a ledger restored from an older copy catches up from the input stream and publishes nothing twice", async () => {
  const { nats, nc } = await natsServer();
  const jsm = await nc.jetstreamManager();
  const dir = tempDir("proofgate-restore-");
  cleanup.push(() => dir.dispose());
  const ledgerPath = join(dir.path, "ledger.db");
  const backup = join(dir.path, "backup.db");

  const w1 = await writer(nats.url, { ledgerPath });
  await w1.client.applyCatalog();
  await w1.client.publish([new EventFactory("cus_r1", "r1").subscribe("premium")]);
  const oldId = w1.writer.ledgerId;
  await w1.close();
  copyFileSync(ledgerPath, backup);

  const w2 = await writer(nats.url, { ledgerPath });
  await w2.client.publish([new EventFactory("cus_r2", "r2").subscribe("premium")]);
  await w2.close();
  copyFileSync(backup, ledgerPath);

  const before = await streamLastSeq(jsm);
  const w3 = await writer(nats.url, { ledgerPath });
  await waitFor(() => w3.writer.ready(), "readiness of the restored ledger");
  expect(w3.writer.ledgerId).toBe(oldId);
  // It folded what it had missed (cus_r2) from the input stream: the same rows as before, which
  // are on the stream already, so nothing is published again.
  expect((await w3.client.getCustomer("cus_r2")).facts).toHaveLength(1);
  expect(await streamLastSeq(jsm)).toBe(before);
  const res = await w3.client.publish([new EventFactory("cus_r3", "r3").subscribe("premium")]);
  expect(res.revision).toBe(before + 1);
  const m = await lastState(jsm, customerSubject("cus_r3"));
  expect(m?.seq).toBe(res.revision);
  expect(m?.headers.get(HEADER_LEDGER_ID)).toBe(w3.writer.ledgerId);
});

test("one writer per ledger: a second writer on the same file refuses to start", async () => {
  const { nats } = await natsServer();
  const w = await writer(nats.url);
  await expect(startTestWriter({ natsUrl: nats.url, ledgerPath: w.ledgerPath })).rejects.toThrow(/locked/);
  // The first one is unaffected.
  expect(await w.client.applyCatalog()).toBeGreaterThan(0);
});
