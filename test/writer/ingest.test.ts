import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { headers, type JetStreamManager, type NatsConnection } from "nats";
import { encodeEventJson } from "../../src/billing/index.js";
import { BillingEvent, PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { AccessDocument, DeadLetter, StateRecord } from "../../src/gen/proofgate/v1/document.js";
import { IngestResult } from "../../src/gen/proofgate/v1/ingest.js";
import {
  CATALOG_SUBJECT,
  DEADLETTER_STREAM,
  HEADER_LEDGER_ID,
  HEADER_MSG_ID,
  HEADER_OUTBOX_ID,
  customerSubject,
} from "../../src/replication/subjects.js";
import { NatsServer } from "../harness/nats.js";
import { EventFactory, connectNats, demoCatalog, lastState, startTestWriter, streamLastSeq, waitFor, type TestWriter } from "../harness/writer.js";
import { promtoolProblems } from "../harness/system.js";

const NOW = Date.UTC(2026, 10, 15, 12);
const { ACCEPTED, DUPLICATE, REJECTED } = {
  ACCEPTED: IngestResult.INGEST_RESULT_ACCEPTED,
  DUPLICATE: IngestResult.INGEST_RESULT_DUPLICATE,
  REJECTED: IngestResult.INGEST_RESULT_REJECTED,
};

let nats: NatsServer;
let w: TestWriter;
let nc: NatsConnection;
let jsm: JetStreamManager;
let catalogRevision: number;

beforeAll(async () => {
  nats = await NatsServer.start();
  w = await startTestWriter({ natsUrl: nats.url, now: () => NOW });
  nc = await connectNats(nats.url);
  jsm = await nc.jetstreamManager();
  catalogRevision = await w.client.applyCatalog(demoCatalog(), "alice", "initial catalog");
});

afterAll(async () => {
  await nc.close();
  await w.dispose();
  await nats.dispose();
});

async function documentOf(customerId: string): Promise<{ seq: number; doc: AccessDocument; bytes: Uint8Array } | undefined> {
  const m = await lastState(jsm, customerSubject(customerId));
  if (m?.record.record?.$case !== "document") return undefined;
  return { seq: m.seq, doc: m.record.record.value, bytes: AccessDocument.encode(m.record.record.value).finish() };
}

describe("replication to PROOFGATE_STATE", () => {
  test("the catalog is one StateRecord on proofgate.state.catalog at the returned revision", async () => {
    const m = await lastState(jsm, CATALOG_SUBJECT);
    expect(m?.seq).toBe(catalogRevision);
    expect(m?.record.record?.$case).toBe("catalog");
    expect(m?.record.record?.value).toEqual(demoCatalog());
    expect((await w.client.getCatalog()).catalog).toEqual(demoCatalog());
  });

  test("events from gRPC are applied and replicated at the revision Publish returns", async () => {
    // Customer ids are arbitrary strings: dots, wildcards and spaces never reach a subject raw.
    const id = "cus grpc.*>/ü 1";
    const f = new EventFactory(id, "grpc1", NOW);
    const res = await w.client.publish([f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)]);
    expect(res.results.map((r) => r.result)).toEqual([ACCEPTED, ACCEPTED]);
    expect(res.revision).toBeGreaterThan(catalogRevision);

    const m = await lastState(jsm, customerSubject(id));
    expect(m?.seq).toBe(res.revision);
    if (m?.record.record?.$case !== "document") throw new Error(`expected a document, got ${m?.record.record?.$case}`);
    const doc = m.record.record.value;
    expect(doc.customerId).toBe(id);
    expect(doc.factCount).toBe(2);
    expect(m.headers.get(HEADER_LEDGER_ID)).toBe(w.writer.ledgerId);
    expect(m.headers.get(HEADER_MSG_ID)).toBe(`${w.writer.ledgerId}:${m.headers.get(HEADER_OUTBOX_ID)}`);

    const c = await w.client.getCustomer(id);
    // The replicated bytes are exactly the ledger's document.
    const stored = StateRecord.encode({ record: { $case: "document", value: c.document ?? AccessDocument.create() } }).finish();
    expect(Buffer.from(stored)).toEqual(Buffer.from(m.data));
    expect(c.revision).toBe(res.revision);
    expect(c.facts.map((e) => e.eventId)).toEqual(["grpc1_1", "grpc1_2"]);
    const api = c.entitlements.find((e) => e.feature === "api-access");
    expect(api?.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
  });

  test("events from NATS, protobuf and proto3 JSON, are applied and replicated", async () => {
    const id = "cus_nats_1";
    const f = new EventFactory(id, "nats1", NOW);
    const js = nc.jetstream();
    await js.publish("proofgate.billing.stripe", BillingEvent.encode(f.subscribe("basic")).finish());
    const h = headers();
    h.set("Content-Type", "application/json");
    await js.publish("proofgate.billing.other", new TextEncoder().encode(encodeEventJson(f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, "in_1", { planId: "basic" }))), { headers: h });
    const d = await waitFor(async () => {
      const x = await documentOf(id);
      return x?.doc.factCount === 2 ? x : undefined;
    }, "both NATS events in the replicated document");
    expect(d.doc.customerId).toBe(id);
    const c = await w.client.getCustomer(id);
    expect(c.entitlements.find((e) => e.feature === "advanced-filtering")?.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
    expect(c.entitlements.find((e) => e.feature === "api-access")?.status).toBe(AccessStatus.ACCESS_STATUS_NOT_ENTITLED);
  });

  test("duplicates, over gRPC or NATS, change nothing", async () => {
    const id = "cus_dup";
    const f = new EventFactory(id, "dup", NOW);
    const events = [f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)];
    const first = await w.client.publish(events);
    const before = await documentOf(id);
    expect(before?.seq).toBe(first.revision);

    const again = await w.client.publish([...events].reverse());
    expect(again.results.map((r) => r.result)).toEqual([DUPLICATE, DUPLICATE, DUPLICATE]);
    expect(again.revision).toBeGreaterThanOrEqual(first.revision);

    // The same events on NATS, then a sentinel for another customer: once the sentinel is
    // replicated, the duplicates before it have been consumed.
    const js = nc.jetstream();
    for (const e of events) await js.publish("proofgate.billing.replay", BillingEvent.encode(e).finish());
    const sentinel = new EventFactory("cus_dup_sentinel", "dups", NOW);
    await js.publish("proofgate.billing.replay", BillingEvent.encode(sentinel.subscribe()).finish());
    await waitFor(() => documentOf("cus_dup_sentinel"), "the sentinel document");

    const after = await documentOf(id);
    expect(after?.seq).toBe(before?.seq);
    expect(Buffer.from(after?.bytes ?? [])).toEqual(Buffer.from(before?.bytes ?? []));
    expect((await w.client.getCustomer(id)).facts).toHaveLength(3);
  });

  test("a poison event is dead-lettered and acked; the good event behind it still applies", async () => {
    const js = nc.jetstream();
    const garbage = new Uint8Array([0xff, 0xff, 0xff, 0x01, 0x02]);
    await js.publish("proofgate.billing.bad", garbage);
    const f = new EventFactory("cus_poison", "poison", NOW);
    const unknownPlan = f.subscribe("platinum");
    const h = headers();
    h.set("Content-Type", "application/json");
    const unknownPlanJson = new TextEncoder().encode(encodeEventJson(unknownPlan));
    await js.publish("proofgate.billing.bad", unknownPlanJson, { headers: h });
    const good = f.subscribe("basic");
    await js.publish("proofgate.billing.bad", BillingEvent.encode(good).finish());

    const d = await waitFor(() => documentOf("cus_poison"), "the good event behind the poison ones");
    expect(d.doc.factCount).toBe(1);

    const letters = await waitFor(async () => {
      const info = await jsm.streams.info(DEADLETTER_STREAM);
      if (info.state.messages < 2) return undefined;
      const out: DeadLetter[] = [];
      for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++)
        out.push(DeadLetter.decode((await jsm.streams.getMessage(DEADLETTER_STREAM, { seq })).data));
      return out.filter((l) => l.origin === "proofgate.billing.bad");
    }, "two dead letters");
    expect(letters).toHaveLength(2);
    const [undecodable, invalid] = letters;
    expect(undecodable?.reason).toMatch(/^payload: /);
    expect(Buffer.from(undecodable?.payload ?? [])).toEqual(Buffer.from(garbage));
    expect(invalid?.reason).toMatch(/subscription\.plan_id: unknown plan "platinum"/);
    expect(invalid?.eventId).toBe(unknownPlan.eventId);
    expect(invalid?.contentType).toBe("application/json");
    expect(Buffer.from(invalid?.payload ?? [])).toEqual(Buffer.from(unknownPlanJson));

    // The rejection is part of the customer's story.
    const c = await w.client.getCustomer("cus_poison");
    expect(c.timeline.some((a) => a.eventId === unknownPlan.eventId && a.reason.includes("platinum"))).toBe(true);
  });

  test("gRPC Publish applies each event on its own: a rejected one names the field and stops nothing", async () => {
    const f = new EventFactory("cus_mixed", "mixed", NOW);
    const bad = { ...f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED), occurredAt: undefined };
    const res = await w.client.publish([f.subscribe("premium"), bad, f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, "in_2")]);
    expect(res.results.map((r) => r.result)).toEqual([ACCEPTED, REJECTED, ACCEPTED]);
    expect(res.results[1]?.reason).toMatch(/^events\[1\]\.occurred_at: required/);
    expect(res.results[1]?.eventId).toBe(bad.eventId);
    const d = await documentOf("cus_mixed");
    expect(d?.doc.factCount).toBe(2);
    expect(d?.seq).toBe(res.revision);
    await waitFor(async () => {
      const info = await jsm.streams.info(DEADLETTER_STREAM);
      for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
        const l = DeadLetter.decode((await jsm.streams.getMessage(DEADLETTER_STREAM, { seq })).data);
        if (l.origin === "grpc" && l.eventId === bad.eventId) return l;
      }
      return undefined;
    }, "the gRPC rejection on the dead-letter stream");
  });

  test("a Publish that changes nothing answers the current head revision", async () => {
    const head = await streamLastSeq(jsm);
    const res = await w.client.publish([]);
    expect(res.results).toEqual([]);
    expect(res.revision).toBe(head);
  });

  test("metrics count events by source and result, and show the outbox drained", async () => {
    const res = await fetch(`http://${w.writer.httpAddress}/metrics`);
    const text = await res.text();
    expect(text).toMatch(/proofgate_writer_events_total\{source="grpc",result="accepted"\} [1-9]/);
    expect(text).toMatch(/proofgate_writer_events_total\{source="nats",result="rejected"\} [1-9]/);
    expect(text).toMatch(/proofgate_writer_events_total\{source="grpc",result="duplicate"\} [1-9]/);
    expect(text).toMatch(/proofgate_writer_apply_seconds_count [1-9]/);
    expect(text).toMatch(/proofgate_writer_outbox_depth 0/);
    expect(text).toContain(`proofgate_writer_head_revision ${w.writer.headRevision()}`);
    expect(await promtoolProblems(text)).toBe("");
    expect((await fetch(`http://${w.writer.httpAddress}/readyz`)).status).toBe(200);
  });
});
