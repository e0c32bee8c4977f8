import { join } from "node:path";
import { afterEach, expect, test } from "vitest";
import { BillingEvent, PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { AccessDocument, DeadLetter } from "../../src/gen/proofgate/v1/document.js";
import { INPUT_STREAM } from "../../src/writer/ha/inputs.js";
import { DEADLETTER_STREAM, customerSubject } from "../../src/replication/subjects.js";
import { NatsServer } from "../harness/nats.js";
import { tempDir } from "../harness/tmp.js";
import { EventFactory, connectNats, lastState, startTestWriter, streamLastSeq, waitFor } from "../harness/writer.js";

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

const CUSTOMERS = 300;

/**
 * The fold takes a backlog in several transactions (each bounded in messages and in time, see
 * docs/writer.md, "Batching"): whatever a transaction leaves goes back to the front of the queue.
 * Unreadable and invalid events in the middle of the backlog are rejected alone; every other
 * event is applied exactly once, in order.
 */
test("a backlog with bad inputs in it is folded completely, in order, each good event once and only the bad ones dead-lettered", async () => {
  const nats = await NatsServer.start();
  cleanup.push(() => nats.dispose());
  const nc = await connectNats(nats.url);
  cleanup.push(() => nc.close());
  const jsm = await nc.jetstreamManager();
  const js = nc.jetstream();
  const dir = tempDir("proofgate-backlog-");
  cleanup.push(() => dir.dispose());
  const ledgerPath = join(dir.path, "ledger.db");

  const w1 = await startTestWriter({ natsUrl: nats.url, ledgerPath });
  cleanup.push(() => w1.dispose());
  await w1.client.applyCatalog();
  await w1.close();

  // While no writer runs: each customer subscribes, then pays; between them, garbage and events
  // naming a plan the catalog does not have.
  const payloads: Uint8Array[] = [];
  const bad = new Set<number>();
  const expected: string[][] = [];
  for (let i = 0; i < CUSTOMERS; i++) {
    const f = new EventFactory(`cus_backlog_${i}`, `bl${i}`);
    const sub = f.subscribe("premium");
    const pay = f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED);
    expected.push([sub.eventId, pay.eventId]);
    payloads.push(BillingEvent.encode(sub).finish());
    if (i % 50 === 7) {
      bad.add(payloads.length);
      payloads.push(Buffer.from(`not an event ${i}`));
    }
    if (i % 50 === 23) {
      bad.add(payloads.length);
      payloads.push(BillingEvent.encode(new EventFactory(`cus_backlog_${i}`, `bl${i}_bad`).subscribe("no-such-plan")).finish());
    }
    payloads.push(BillingEvent.encode(pay).finish());
  }
  for (let i = 0; i < payloads.length; i += 200) await Promise.all(payloads.slice(i, i + 200).map((p) => js.publish("proofgate.billing.backlog", p)));
  await waitFor(async () => (await jsm.streams.info(INPUT_STREAM)).state.messages >= payloads.length + 1, "the backlog sourced into the input stream");

  const w2 = await startTestWriter({ natsUrl: nats.url, ledgerPath });
  cleanup.push(() => w2.dispose());
  const last = `cus_backlog_${CUSTOMERS - 1}`;
  await waitFor(async () => (await w2.client.getCustomer(last)).facts.length === 2, "the last customer's payment applied", 60_000);
  // The outbox publishes in order: once the last customer's paid document is on the stream, every earlier row is too.
  await waitFor(async () => {
    const r = (await lastState(jsm, customerSubject(last)))?.record.record;
    return r?.$case === "document" && (r.value.subscriptions[0]?.invoices.length ?? 0) > 0;
  }, "the last customer's paid document on the state stream", 60_000);

  for (let i = 0; i < CUSTOMERS; i++) {
    const id = `cus_backlog_${i}`;
    const c = await w2.client.getCustomer(id);
    // Exactly once and in order: the subscription, then the payment; never the invalid event.
    expect(c.facts.map((e) => e.eventId)).toEqual(expected[i]);
    const m = await lastState(jsm, customerSubject(id));
    expect(m, id).toBeDefined();
  }
  // The replicated document of a customer whose bad inputs sat right before its payment holds the payment.
  const doc = await lastState(jsm, customerSubject("cus_backlog_7"));
  const record = doc?.record.record;
  expect(record?.$case).toBe("document");
  const document: AccessDocument | undefined = record?.$case === "document" ? record.value : undefined;
  expect(document?.subscriptions[0]?.invoices.map((v) => v.invoiceId)).toEqual(["in_1"]);

  // Each bad input dead-lettered once, nothing else.
  await waitFor(async () => (await jsm.streams.info(DEADLETTER_STREAM)).state.messages >= bad.size, "every bad input dead-lettered");
  const info = await jsm.streams.info(DEADLETTER_STREAM);
  expect(info.state.messages).toBe(bad.size);
  const reasons: string[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) reasons.push(DeadLetter.decode((await jsm.streams.getMessage(DEADLETTER_STREAM, { seq })).data).reason);
  expect(reasons.filter((r) => /no-such-plan/.test(r))).toHaveLength(CUSTOMERS / 50);
  expect(await streamLastSeq(jsm)).toBeGreaterThan(CUSTOMERS);
});
