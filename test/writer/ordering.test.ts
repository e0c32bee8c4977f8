import { afterAll, beforeAll, expect, test } from "vitest";
import type { JetStreamManager, NatsConnection } from "nats";
import { BillingEvent, PaymentResult, RecoveryResult } from "../../src/gen/proofgate/v1/billing.js";
import { AuditKind } from "../../src/gen/proofgate/v1/admin.js";
import { IngestResult } from "../../src/gen/proofgate/v1/ingest.js";
import { customerSubject } from "../../src/replication/subjects.js";
import { NatsServer } from "../harness/nats.js";
import { DAY, EventFactory, connectNats, lastState, startTestWriter, waitFor, type TestWriter } from "../harness/writer.js";

const NOW = Date.UTC(2026, 10, 15, 12);

/** Two independent systems: A gets each story in order over gRPC, B shuffled and duplicated over NATS. */
let natsA: NatsServer;
let natsB: NatsServer;
let a: TestWriter;
let b: TestWriter;
let ncA: NatsConnection;
let ncB: NatsConnection;
let jsmA: JetStreamManager;
let jsmB: JetStreamManager;

beforeAll(async () => {
  [natsA, natsB] = await Promise.all([NatsServer.start(), NatsServer.start()]);
  [a, b] = await Promise.all([startTestWriter({ natsUrl: natsA.url, now: () => NOW }), startTestWriter({ natsUrl: natsB.url, now: () => NOW })]);
  await Promise.all([a.client.applyCatalog(), b.client.applyCatalog()]);
  [ncA, ncB] = await Promise.all([connectNats(natsA.url), connectNats(natsB.url)]);
  [jsmA, jsmB] = await Promise.all([ncA.jetstreamManager(), ncB.jetstreamManager()]);
});

afterAll(async () => {
  await Promise.all([ncA.close(), ncB.close()]);
  await Promise.all([a.dispose(), b.dispose()]);
  await Promise.all([natsA.dispose(), natsB.dispose()]);
});

/** An upgrade held by 3-D Secure, a failed renewal in dunning, a dispute: order-sensitive if folded naively. */
function story(customerId: string): BillingEvent[] {
  const f = new EventFactory(customerId, `ord_${customerId}`, NOW - 40 * DAY);
  return [
    f.subscribe("premium"),
    f.pay(PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION, "in_1"),
    f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, "in_1", {}, 1_000),
    f.subscribe("enterprise", { addonIds: ["ai-assistant"] }, 2 * DAY),
    f.pay(PaymentResult.PAYMENT_RESULT_PROCESSING, "in_2", { planId: "enterprise", periodStart: new Date(NOW - 38 * DAY), periodEnd: new Date(NOW - 8 * DAY) }, 2 * DAY),
    f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, "in_2", { planId: "enterprise", periodStart: new Date(NOW - 38 * DAY), periodEnd: new Date(NOW - 8 * DAY) }, 3 * DAY),
    f.pay(PaymentResult.PAYMENT_RESULT_FAILED, "in_3", { planId: "enterprise", periodStart: new Date(NOW - 8 * DAY), periodEnd: new Date(NOW + 22 * DAY) }, 32 * DAY),
    f.recover(RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED, "in_3", new Date(NOW + DAY), 33 * DAY),
    f.pay(PaymentResult.PAYMENT_RESULT_DISPUTE_OPENED, "in_1", { periodStart: undefined, periodEnd: undefined, planId: "" }, 34 * DAY),
    f.pay(PaymentResult.PAYMENT_RESULT_DISPUTE_WON, "in_1", { periodStart: undefined, periodEnd: undefined, planId: "" }, 36 * DAY),
  ];
}

/** Deterministic shuffle (mulberry32), so a failure is reproducible. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  let s = seed >>> 0;
  const rand = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

async function documentBytes(jsm: JetStreamManager, customerId: string): Promise<{ bytes: Buffer; factCount: number } | undefined> {
  const m = await lastState(jsm, customerSubject(customerId));
  if (m?.record.record?.$case !== "document") return undefined;
  return { bytes: Buffer.from(m.data), factCount: m.record.record.value.factCount };
}

test("any arrival order with any duplicates gives byte-identical replicated documents", async () => {
  const customers = [1, 2, 3, 4, 5].map((i) => `cus_order_${i}`);
  for (const c of customers) {
    const res = await a.client.publish(story(c));
    expect(res.results.every((r) => r.result === IngestResult.INGEST_RESULT_ACCEPTED)).toBe(true);
  }
  const js = ncB.jetstream();
  for (const [i, c] of customers.entries()) {
    const events = story(c);
    // Each customer gets its own order, with a third of its events sent twice.
    const sends = shuffled([...events, ...events.filter((_, k) => k % 3 === i % 3)], 1000 + i);
    for (const e of sends) await js.publish(`proofgate.billing.c${i}`, BillingEvent.encode(e).finish());
  }
  for (const c of customers) {
    const expected = await documentBytes(jsmA, c);
    expect(expected?.factCount).toBe(story(c).length);
    const actual = await waitFor(async () => {
      const d = await documentBytes(jsmB, c);
      return d?.factCount === story(c).length ? d : undefined;
    }, `${c}'s complete document on B`);
    expect(actual.bytes.equals(expected?.bytes ?? Buffer.alloc(0))).toBe(true);
  }
  // B folded each customer's document once per distinct event at most, never for a duplicate.
  const bCustomer = await b.client.getCustomer("cus_order_1");
  expect(bCustomer.facts).toHaveLength(story("cus_order_1").length);
  expect(bCustomer.timeline.filter((e) => e.kind === AuditKind.AUDIT_KIND_EVENT_APPLIED)).toHaveLength(story("cus_order_1").length);
});
