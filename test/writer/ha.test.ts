import { afterAll, beforeAll, expect, test } from "vitest";
import { status } from "@grpc/grpc-js";
import type { JetStreamManager, NatsConnection } from "nats";
import { AccessDocument, Override, OverrideEffect } from "../../src/gen/proofgate/v1/document.js";
import { PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { IngestResult } from "../../src/gen/proofgate/v1/ingest.js";
import { HEADER_INPUT_POSITION, HEADER_LEADER_EPOCH, HEADER_LEDGER_ID, customerSubject } from "../../src/replication/subjects.js";
import { INPUT_STREAM } from "../../src/writer/ha/inputs.js";
import { NatsServer } from "../harness/nats.js";
import { runCli } from "../harness/system.js";
import { EventFactory, connectNats, lastState, startTestWriter, streamLastSeq, waitFor, type TestWriter } from "../harness/writer.js";

/**
 * Two writers in this process on one NATS, each with its own ledger: every input reaches both
 * through the input stream, whichever writer receives it; only the leader publishes; a graceful
 * stop hands the lease over at once.
 */
let nats: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
const writers: TestWriter[] = [];

beforeAll(async () => {
  nats = await NatsServer.start();
  nc = await connectNats(nats.url);
  jsm = await nc.jetstreamManager();
});

afterAll(async () => {
  for (const w of writers) await w.dispose();
  await nc.close();
  await nats.dispose();
});

const start = async (id: string): Promise<TestWriter> => {
  const w = await startTestWriter({ natsUrl: nats.url, options: { writerId: id, leaseTtl: 1_000 } });
  writers.push(w);
  return w;
};

const docBytes = async (w: TestWriter, customerId: string): Promise<Buffer> => {
  const c = await w.client.getCustomer(customerId);
  return Buffer.from(AccessDocument.encode(c.document ?? AccessDocument.fromPartial({})).finish());
};

test("a standby applies every input, answers calls at the revision where they are visible, and takes over on a graceful stop", async () => {
  const a = await start("a");
  await waitFor(() => a.writer.role() === "leader" && a.writer.ready(), "a to lead");
  await a.client.applyCatalog();
  const b = await start("b");
  await waitFor(() => b.writer.role() === "standby" && b.writer.ready(), "b to stand by");

  // Events over gRPC to the standby: applied by both, published by the leader, answered by b
  // with a revision at which they are on the stream.
  const f = new EventFactory("cus_ha", "ha");
  const res = await b.client.publish([f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)]);
  expect(res.results.map((r) => r.result)).toEqual([IngestResult.INGEST_RESULT_ACCEPTED, IngestResult.INGEST_RESULT_ACCEPTED]);
  const onStream = await lastState(jsm, customerSubject("cus_ha"));
  expect(onStream?.seq).toBeLessThanOrEqual(res.revision);
  expect(onStream?.headers.get(HEADER_LEDGER_ID)).toBe(a.writer.ledgerId);
  expect(Number(onStream?.headers.get(HEADER_LEADER_EPOCH))).toBeGreaterThan(0);
  expect(onStream?.headers.get(HEADER_INPUT_POSITION)).toMatch(/^\d+\.\d+$/);
  expect(await docBytes(b, "cus_ha")).toEqual(await docBytes(a, "cus_ha"));
  // The standby knows where its copy of the document is on the stream.
  expect((await b.client.getCustomer("cus_ha")).revision).toBe(onStream?.seq);
  // `proofgate explain` tells the same story on either writer; only the audit entries' times are
  // each writer's own (when it applied the input).
  const explained = await Promise.all([a, b].map((w) => runCli(["explain", "--customer", "cus_ha", "--writer", w.writer.grpcAddress, "--json"])));
  expect(explained.map((r) => r.code)).toEqual([0, 0]);
  const story = (out = ""): unknown => JSON.parse(out, (key, value: unknown) => (key === "at" ? undefined : value));
  expect(story(explained[1]?.stdout)).toEqual(story(explained[0]?.stdout));
  const told = story(explained[1]?.stdout) as { document: { customerId: string }; timeline: { eventId?: string }[] };
  expect(told.document.customerId).toBe("cus_ha");
  expect(told.timeline.some((e) => e.eventId === "ha_1")).toBe(true);

  // Admin on the standby: an override with its id and time decided once, the same on both.
  const put = await b.client.putOverride({
    customerId: "cus_ha",
    override: Override.fromPartial({ feature: "ai-assistant", effect: OverrideEffect.OVERRIDE_EFFECT_GRANT, value: { kind: { $case: "enabled", value: true } } }),
    actor: "ops",
    reason: "goodwill",
  });
  expect(put.overrideId).toMatch(/^ovr_/);
  await waitFor(async () => (await a.client.getCustomer("cus_ha")).document?.overrides.length === 1, "the override on the leader");
  expect(await docBytes(b, "cus_ha")).toEqual(await docBytes(a, "cus_ha"));
  // A refusal that depends on the ledger is decided when applied, and reaches the caller.
  await expect(b.client.deleteOverride({ customerId: "cus_ha", overrideId: "ovr_missing", actor: "ops", reason: "cleanup" })).rejects.toMatchObject({
    code: status.NOT_FOUND,
  });

  // Every input is on the input stream, in one order.
  expect((await jsm.streams.info(INPUT_STREAM)).state.messages).toBeGreaterThanOrEqual(4);

  // A graceful stop releases the lease: b leads at once and fences the stream under its epoch.
  const before = await streamLastSeq(jsm);
  await a.close();
  await waitFor(() => b.writer.role() === "leader", "b to take over");
  const fence = await waitFor(async () => ((await streamLastSeq(jsm)) > before ? lastState(jsm, "proofgate.state.catalog") : undefined), "b's fence");
  expect(fence.headers.get(HEADER_LEDGER_ID)).toBe(b.writer.ledgerId);
  const after = await b.client.publish([f.pay(PaymentResult.PAYMENT_RESULT_REFUNDED)]);
  const m = await lastState(jsm, customerSubject("cus_ha"));
  expect(m?.seq).toBe(after.revision);
  expect(m?.headers.get(HEADER_LEDGER_ID)).toBe(b.writer.ledgerId);
});
