import { createHash } from "node:crypto";
import { join } from "node:path";
import { expect, test } from "vitest";
import { headers } from "nats";
import { BillingEvent, PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { AccessDocument, DeadLetter } from "../../src/gen/proofgate/v1/document.js";
import { encodeEventJson } from "../../src/billing/index.js";
import { BILLING_STREAM, DEADLETTER_STREAM, customerSubject } from "../../src/replication/subjects.js";
import { cleanupAfterAll } from "../harness/tmp.js";
import { EventFactory, lastState } from "../harness/writer.js";
import { startWriterSystem } from "../harness/demo.js";
import { waitFor } from "../harness/wait.js";
import { metric, startSidecarProcess } from "../harness/system.js";

/**
 * Inputs that once stopped replication for everyone (an oversized field, a document grown past
 * NATS's max_payload, a poison date, a dead letter larger than max_payload), sent to a real
 * writer over a real nats-server with a sidecar following: each is refused or set aside with a
 * reason, and every valid event published after it still reaches the sidecar.
 */
const cleanup = cleanupAfterAll();

const json = (e: BillingEvent): Uint8Array => Buffer.from(encodeEventJson(e));
const jsonHeaders = (): ReturnType<typeof headers> => {
  const h = headers();
  h.set("Content-Type", "application/json");
  return h;
};

async function system(opts: { maxPayload?: number; writerArgs?: string[] } = {}) {
  const s = await startWriterSystem("bad-input", opts);
  cleanup.push(() => s.close());
  const sidecar = await startSidecarProcess("bad-input", s.nats.url, join(s.dir, "replica.db"));
  cleanup.push(() => sidecar.stop("SIGKILL"));
  return { ...s, js: s.nc.jetstream(), sidecar };
}

async function deadLetters(s: Awaited<ReturnType<typeof system>>): Promise<DeadLetter[]> {
  const info = await s.jsm.streams.info(DEADLETTER_STREAM);
  const out: DeadLetter[] = [];
  for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
    const m = await s.jsm.streams.getMessage(DEADLETTER_STREAM, { seq }).catch(() => undefined);
    if (m) out.push(DeadLetter.decode(m.data));
  }
  return out;
}

test("oversized fields, a document past its limit, poison dates and a 1 MB garbage message are dead-lettered at once, and never hold back the events behind them", async () => {
  const s = await system({ writerArgs: ["--max-document-bytes", "16384"] });
  const sent: Promise<unknown>[] = [];
  const pub = (subject: string, data: Uint8Array, isJson: boolean): void => {
    sent.push(s.js.publish(subject, data, isJson ? { headers: jsonHeaders() } : {}));
  };

  // 1. A failure_reason of 900 KB (the message itself fits NATS's max_payload).
  const big = new EventFactory("cus_bad_field");
  pub("proofgate.billing.test", json(big.pay(PaymentResult.PAYMENT_RESULT_FAILED, "in_big", { failureReason: "x".repeat(900_000) })), true);
  // 2. A poison date in a JSON event.
  const poison = new EventFactory("cus_poison");
  const poisonJson = JSON.parse(encodeEventJson(poison.subscribe("premium"))) as { subscription: Record<string, unknown> };
  poisonJson.subscription["cancelAt"] = "end of month";
  pub("proofgate.billing.test", Buffer.from(JSON.stringify(poisonJson)), true);
  // 3. 1,000,000 bytes of garbage: its dead letter would not fit max_payload if carried whole.
  const garbage = Buffer.alloc(1_000_000, 0xff);
  pub("proofgate.billing.test", garbage, false);
  // 4. One customer's failed renewals, 1000-byte reasons each: its document grows past 16 KiB.
  const grower = new EventFactory("cus_grower");
  pub("proofgate.billing.test", BillingEvent.encode(grower.subscribe("premium")).finish(), false);
  for (let i = 0; i < 25; i++) pub("proofgate.billing.test", BillingEvent.encode(grower.pay(PaymentResult.PAYMENT_RESULT_FAILED, `in_grow_${i}`, { failureReason: `r${i}`.padEnd(1000, ".") })).finish(), false);
  // 5. 200 valid paying customers behind all of it.
  const customers = Array.from({ length: 200 }, (_, i) => `cus_valid_${i}`);
  for (const c of customers) {
    const f = new EventFactory(c);
    pub(`proofgate.billing.test.${c}`, BillingEvent.encode(f.subscribe("premium")).finish(), false);
    pub(`proofgate.billing.test.${c}`, BillingEvent.encode(f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)).finish(), false);
  }
  await Promise.all(sent);

  // Every valid customer reaches the sidecar.
  await waitFor(async () => {
    for (const c of customers) {
      const r = await s.sidecar.client.check({ customerId: c, feature: "api-access" });
      if (r.status !== AccessStatus.ACCESS_STATUS_GRANTED) return false;
    }
    return true;
  }, "every valid customer granted at the sidecar", 60_000);

  // Nothing is left behind: the writer has folded the whole input stream (it sources the billing stream).
  await waitFor(async () => {
    const billing = (await s.jsm.streams.info(BILLING_STREAM)).state.messages;
    return billing > 0 && (await metric(s.writer.httpAddress, "proofgate_writer_input_lag_messages")) === 0;
  }, "the input stream folded")

  // Every rejection reached the dead-letter stream (none is stuck in the ledger behind a big one).
  const letters = await waitFor(async () => {
    const l = await deadLetters(s);
    const rejected = await metric(s.writer.httpAddress, "proofgate_writer_events_total", { source: "nats", result: "rejected" });
    return l.length > 3 && l.length === rejected ? l : undefined;
  }, "every rejection dead-lettered");
  const reasons = letters.map((l) => l.reason);
  expect(reasons).toContainEqual(expect.stringMatching(/^payment\.failure_reason: 900000 bytes, above the limit of 1024 bytes$/));
  expect(reasons).toContainEqual(expect.stringMatching(/^subscription\.cancel_at: must be an RFC 3339 timestamp/));
  const garbageLetter = letters.find((l) => l.payloadSize === garbage.length);
  expect(garbageLetter?.payloadTruncated).toBe(true);
  expect(garbageLetter?.payloadSha256).toBe(createHash("sha256").update(garbage).digest("hex"));
  expect(garbageLetter?.payload.length).toBeLessThan(10_000);
  expect(garbageLetter?.reason).toMatch(/^payload: not a protobuf BillingEvent/);
  const tooLarge = letters.filter((l) => /access document \d+ bytes, above the limit of 16384/.test(l.reason));
  expect(tooLarge.length).toBeGreaterThan(0);

  // The grown customer's document stays within the limit, and is on the stream and at the sidecar.
  const grown = await lastState(s.jsm, customerSubject("cus_grower"));
  expect(grown?.record.record?.$case).toBe("document");
  const doc = grown?.record.record?.$case === "document" ? grown.record.record.value : undefined;
  expect(AccessDocument.encode(doc ?? AccessDocument.fromPartial({})).finish().length).toBeLessThanOrEqual(16_384);
  const r = await s.sidecar.client.check({ customerId: "cus_grower", feature: "api-access" });
  expect(r.status).not.toBe(AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER);
});

test("an outbox row larger than the NATS server's max_payload is set aside, and every row behind it replicates", async () => {
  // A server with a 16 KiB max_payload under a writer left at its 512 KiB document limit; the
  // customer below grows a document of about 25 KB.
  const s = await system({ maxPayload: 16_384 });
  const huge = new EventFactory("cus_huge");
  const events = [huge.subscribe("premium")];
  for (let i = 0; i < 90; i++) events.push(huge.pay(PaymentResult.PAYMENT_RESULT_FAILED, `in_huge_${i}`, { failureReason: `r${i}`.padEnd(1000, ".") }));
  const first = await s.client.publish(events);
  expect(first.results.every((r) => r.reason === "")).toBe(true);

  const customers = Array.from({ length: 20 }, (_, i) => `cus_after_${i}`);
  const after: BillingEvent[] = [];
  for (const c of customers) {
    const f = new EventFactory(c);
    after.push(f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED));
  }
  const second = await s.client.publish(after);
  for (const c of customers) {
    const res = await s.sidecar.client.check({ customerId: c, feature: "api-access", minRevision: second.revision });
    expect(res.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
  }
  expect(await metric(s.writer.httpAddress, "proofgate_writer_unpublishable_total")).toBeGreaterThan(0);
  expect(s.writer.output()).toMatch(/exceeds the NATS server's max_payload and can never be published/);
  expect(s.writer.output()).toMatch(/--max-document-bytes is above what the NATS server accepts/);
});
