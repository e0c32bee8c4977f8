import { Client, credentials, type ServiceError } from "@grpc/grpc-js";
import fc from "fast-check";
import { headers, type JetStreamClient, type JetStreamManager, type NatsConnection } from "nats";
import { afterAll, beforeAll, expect, test } from "vitest";
import { BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { DeadLetter } from "../../src/gen/proofgate/v1/document.js";
import { IngestResult, PublishResponse } from "../../src/gen/proofgate/v1/ingest.js";
import { DEADLETTER_STREAM, DEADLETTER_SUBJECT } from "../../src/replication/subjects.js";
import { FIELD_REASON, mutatedBytes, mutatedJson } from "../billing/arbitraries.js";
import { startWriterSystem, type WriterSystem } from "../harness/demo.js";
import { metric } from "../harness/system.js";
import { waitFor } from "../harness/wait.js";
import { EventFactory, connectNats } from "../harness/writer.js";

/**
 * The decoders' property with real delivery: arbitrary input published to a real nats-server
 * (protobuf or JSON) or sent in a gRPC Publish to a real writer process is applied or rejected
 * with a reason naming the field, once, and a valid event published right after
 * it is always applied. A modest number of runs: each is a round trip through the processes.
 */
let s: WriterSystem;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
let raw: Client;
beforeAll(async () => {
  s = await startWriterSystem("decode-delivery");
  nc = await connectNats(s.nats.url);
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
  raw = new Client(s.writer.grpcAddress, credentials.createInsecure());
});
afterAll(async () => {
  raw.close();
  await nc.close();
  await s.close();
});

const input = fc.oneof(
  fc.uint8Array({ maxLength: 200 }).map((data) => ({ data, json: false })),
  mutatedBytes.map((data) => ({ data, json: false })),
  fc.jsonValue({ maxDepth: 3 }).map((v) => ({ data: Buffer.from(JSON.stringify(v)), json: true })),
  mutatedJson.map((j) => ({ data: Buffer.from(j), json: true })),
);

async function counts(): Promise<{ accepted: number; duplicate: number; rejected: number }> {
  const m = (result: string): Promise<number> => metric(s.writer.httpAddress, "proofgate_writer_events_total", { source: "nats", result }).then((v) => v ?? 0);
  return { accepted: await m("accepted"), duplicate: await m("duplicate"), rejected: await m("rejected") };
}

async function lastDeadLetter(): Promise<{ seq: number; letter: DeadLetter } | undefined> {
  try {
    const m = await jsm.streams.getMessage(DEADLETTER_STREAM, { last_by_subj: DEADLETTER_SUBJECT });
    return { seq: m.seq, letter: DeadLetter.decode(m.data) };
  } catch {
    return undefined;
  }
}

test("over NATS: arbitrary input is applied or dead-lettered naming the field on its first delivery, and the valid event behind it applies", async () => {
  let run = 0;
  const start = await counts();
  await fc.assert(
    fc.asyncProperty(input, async ({ data, json }) => {
      const n = ++run;
      const before = await counts();
      const letterBefore = (await lastDeadLetter())?.seq ?? 0;
      const h = headers();
      if (json) h.set("Content-Type", "application/json");
      await js.publish("proofgate.billing.property", data, { headers: h });
      const valid = new EventFactory(`cus_after_nats_${n}`);
      await js.publish("proofgate.billing.property", BillingEvent.encode(valid.subscribe("premium")).finish());

      // The input stream is folded in order: once the valid event is applied, the input before it was settled.
      await waitFor(async () => (await s.client.getCustomer(valid.customerId)).facts.length === 1, "the valid event behind it applied");
      const after = await counts();
      expect(after.accepted + after.duplicate + after.rejected - (before.accepted + before.duplicate + before.rejected)).toBe(2);
      if (after.rejected > before.rejected) {
        const letter = await waitFor(async () => {
          const l = await lastDeadLetter();
          return l && l.seq > letterBefore ? l.letter : undefined;
        }, "its dead letter");
        expect(letter.reason).toMatch(FIELD_REASON);
      }
    }),
    { numRuns: 25 },
  );
  // Every message was settled once: two per run, none counted twice.
  const end = await counts();
  expect(end.accepted + end.duplicate + end.rejected - (start.accepted + start.duplicate + start.rejected)).toBe(2 * run);
});

test("over gRPC Publish: an arbitrary event is accepted or rejected naming its index and field, and the valid event after it applies", async () => {
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 200 }), mutatedBytes), async (bytes) => {
      const n = ++run;
      const valid = BillingEvent.encode(new EventFactory(`cus_after_grpc_${n}`).subscribe("premium")).finish();
      const request = Buffer.concat([field1(bytes), field1(valid)]);
      const res = await new Promise<PublishResponse>((resolve, reject) => {
        raw.makeUnaryRequest(
          "/proofgate.v1.IngestService/Publish",
          (b: Buffer) => b,
          (b: Buffer) => PublishResponse.decode(b),
          request,
          { deadline: Date.now() + 20_000 },
          (err: ServiceError | null, r?: PublishResponse) => (err || !r ? reject(err ?? new Error("no response")) : resolve(r)),
        );
      });
      expect(res.results).toHaveLength(2);
      const [first, second] = res.results;
      expect([IngestResult.INGEST_RESULT_ACCEPTED, IngestResult.INGEST_RESULT_DUPLICATE, IngestResult.INGEST_RESULT_REJECTED]).toContain(first?.result);
      if (first?.result === IngestResult.INGEST_RESULT_REJECTED) expect(first.reason).toMatch(/^events\[0\](\.[a-z_.]+(\[\d+\])?)?: \S/);
      expect(second?.result).toBe(IngestResult.INGEST_RESULT_ACCEPTED);
    }),
    { numRuns: 25 },
  );
});

/** `bytes` as field 1 (length-delimited) of a message: PublishRequest.events. */
function field1(bytes: Uint8Array): Buffer {
  const len: number[] = [];
  let n = bytes.length;
  while (n > 0x7f) {
    len.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  len.push(n);
  return Buffer.concat([Uint8Array.of(0x0a, ...len), bytes]);
}
