import { Client, credentials, status, type ServiceError } from "@grpc/grpc-js";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { afterAll, beforeAll, expect, test } from "vitest";
import { demoCatalog } from "../../src/catalog/index.js";
import { BillingEvent, PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { IngestResult, PublishResponse } from "../../src/gen/proofgate/v1/ingest.js";
import { startWriterSystem, type WriterSystem } from "../harness/demo.js";
import { EventFactory } from "../harness/writer.js";

/**
 * Malformed requests to a real writer process over real gRPC: a bad event in a Publish rejects
 * only itself, naming its index and field; garbage never reaches the ledger; a catalog change
 * needs a reason and cannot silently take away what customers use; a 1 MB invalid key is not
 * echoed back.
 */
let s: WriterSystem;
let raw: Client;
beforeAll(async () => {
  s = await startWriterSystem("malformed-input");
  raw = new Client(s.writer.grpcAddress, credentials.createInsecure());
});
afterAll(async () => {
  raw.close();
  await s.close();
});

/** A unary call with the request as raw bytes, as a buggy or hostile client could send. */
function rawCall<Res>(path: string, bytes: Uint8Array, decode: (b: Buffer) => Res): Promise<Res> {
  return new Promise((resolve, reject) => {
    raw.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      decode,
      Buffer.from(bytes),
      { deadline: Date.now() + 20_000 },
      (err: ServiceError | null, res?: Res) => (err ? reject(err) : resolve(res as Res)),
    );
  });
}

const publishRaw = (events: readonly Uint8Array[]): Promise<PublishResponse> => {
  const w = new BinaryWriter();
  for (const e of events) w.uint32((1 << 3) | 2).bytes(e);
  return rawCall("/proofgate.v1.IngestService/Publish", w.finish(), (b) => PublishResponse.decode(b));
};

const encode = (e: BillingEvent): Uint8Array => BillingEvent.encode(e).finish();
/** `event` with a field appended; protobuf's last-one-wins makes it the value the writer sees. */
const withField = (event: Uint8Array, field: (w: BinaryWriter) => BinaryWriter): Uint8Array => {
  const tail = field(new BinaryWriter()).finish();
  return Buffer.concat([event, tail]);
};

test("a Publish of many events with a bad timestamp, an int64 beyond 2^53 and a field of the wrong type rejects only those, naming index and field", async () => {
  const good1 = new EventFactory("cus_mixed_1");
  const good2 = new EventFactory("cus_mixed_2");
  const bad = new EventFactory("cus_mixed_bad");
  const badTime = withField(encode(bad.subscribe("premium")), (w) => w.uint32((2 << 3) | 2).fork().uint32(1 << 3).int64(9_999_999_999_999n).join());
  const badNanos = withField(encode(bad.subscribe("premium")), (w) => w.uint32((2 << 3) | 2).fork().uint32(1 << 3).int64(1_700_000_000).uint32(2 << 3).int32(-1).join());
  const bigVersion = withField(encode(bad.subscribe("premium")), (w) => w.uint32((10 << 3) | 2).fork().uint32(9 << 3).uint64(2n ** 53n + 1n).join());
  const bigAmount = withField(encode(bad.pay(PaymentResult.PAYMENT_RESULT_FAILED)), (w) => w.uint32((11 << 3) | 2).fork().uint32(9 << 3).int64(-(2n ** 60n)).join());
  const wrongType = withField(encode(bad.pay(PaymentResult.PAYMENT_RESULT_FAILED)), (w) => w.uint32(3 << 3).uint32(7));
  const badUtf8 = withField(encode(bad.pay(PaymentResult.PAYMENT_RESULT_FAILED)), (w) => w.uint32((4 << 3) | 2).bytes(Uint8Array.of(0x73, 0xff, 0x62)));
  const truncated = encode(bad.subscribe("premium")).slice(0, 20);
  const events = [
    encode(good1.subscribe("premium")),
    badTime,
    badNanos,
    bigVersion,
    bigAmount,
    wrongType,
    badUtf8,
    truncated,
    encode(good1.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)),
    encode(good2.subscribe("premium")),
  ];
  const res = await publishRaw(events);
  expect(res.results.map((r) => r.result)).toEqual([
    IngestResult.INGEST_RESULT_ACCEPTED,
    ...Array<IngestResult>(7).fill(IngestResult.INGEST_RESULT_REJECTED),
    IngestResult.INGEST_RESULT_ACCEPTED,
    IngestResult.INGEST_RESULT_ACCEPTED,
  ]);
  const reasons = res.results.map((r) => r.reason);
  expect(reasons[1]).toMatch(/^events\[1\]\.occurred_at: 9999999999999 seconds is outside 0001-01-01\.\.9999-12-31$/);
  expect(reasons[2]).toMatch(/^events\[2\]\.occurred_at: nanos must be from 0 to 999999999, got -1$/);
  expect(reasons[3]).toMatch(/^events\[3\]\.subscription\.version: must be an integer within ±2\^53, got 9007199254740993$/);
  expect(reasons[4]).toMatch(/^events\[4\]\.payment\.amount_minor: must be an integer within ±2\^53/);
  expect(reasons[5]).toMatch(/^events\[5\]\.customer_id: wrong protobuf wire type 0/);
  expect(reasons[6]).toMatch(/^events\[6\]\.subscription_id: not valid UTF-8$/);
  expect(reasons[7]).toMatch(/^events\[7\]: not a protobuf BillingEvent|^events\[7\]\.\w+: truncated/);
  // The rejected events are named by their event_id where it could be read.
  expect(res.results[1]?.eventId).toMatch(/^evt_/);
  expect(res.results[3]?.eventId).toMatch(/^evt_/);

  // The valid ones applied, the rejected customer has nothing.
  const c1 = await s.client.getCustomer("cus_mixed_1");
  expect(c1.facts.length).toBe(2);
  expect((await s.client.getCustomer("cus_mixed_2")).facts.length).toBe(1);
  await expect(s.client.getCustomer("cus_mixed_bad")).rejects.toMatchObject({ code: status.NOT_FOUND });
});

test("a request that is not protobuf at all answers INVALID_ARGUMENT, not INTERNAL, and changes nothing", async () => {
  const before = await s.client.getCatalog();
  const garbage = Buffer.from("0affff0300", "hex");
  await expect(rawCall("/proofgate.v1.IngestService/Publish", garbage, (b) => PublishResponse.decode(b))).rejects.toMatchObject({
    code: status.INVALID_ARGUMENT,
    details: "request: not a protobuf request of /proofgate.v1.IngestService/Publish: premature EOF",
  });
  await expect(rawCall("/proofgate.v1.AdminService/ApplyCatalog", garbage, (b) => b)).rejects.toMatchObject({
    code: status.INVALID_ARGUMENT,
    details: "request: not a protobuf request of /proofgate.v1.AdminService/ApplyCatalog: premature EOF",
  });
  expect(await s.client.getCatalog()).toEqual(before);
});

test("an empty catalog is never applied without a reason, nor over customers who use what it removes", async () => {
  const f = new EventFactory("cus_catalog_user");
  await s.client.publish([f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)]);
  const before = await s.client.getCatalog();
  const empty = { features: [], plans: [], addons: [], policy: undefined };
  await expect(s.client.applyCatalogRequest({ catalog: empty, actor: "", reason: "", allowRemovals: false })).rejects.toMatchObject({
    code: status.INVALID_ARGUMENT,
    details: "reason: required",
  });
  await expect(s.client.applyCatalogRequest({ catalog: empty, actor: "", reason: "   ", allowRemovals: true })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
  await expect(s.client.applyCatalogRequest({ catalog: empty, actor: "ops", reason: "cleanup", allowRemovals: false })).rejects.toMatchObject({
    code: status.FAILED_PRECONDITION,
    details: expect.stringMatching(/removes what customers still use: .*plan premium \(\d+ customers?\)/) as unknown,
  });
  await expect(s.client.applyCatalogRequest({ catalog: undefined, actor: "ops", reason: "cleanup", allowRemovals: true })).rejects.toMatchObject({
    code: status.INVALID_ARGUMENT,
    details: "catalog: required",
  });
  expect(await s.client.getCatalog()).toEqual(before);
});

test("a 1 MB invalid catalog key is answered at once, quoted by its first bytes", async () => {
  const catalog = demoCatalog();
  const first = catalog.features[0];
  if (!first) throw new Error("demo catalog has no features");
  const bad = { ...catalog, features: [{ ...first, key: "K".repeat(1_000_000) }, ...catalog.features.slice(1)] };
  const err = await s.client.applyCatalogRequest({ catalog: bad, actor: "ops", reason: "test", allowRemovals: false }).then(
    () => undefined,
    (e: unknown) => e as ServiceError,
  );
  expect(err?.code).toBe(status.INVALID_ARGUMENT);
  expect(err?.details).toMatch(/^catalog\.features\[0\]\.key: "K{64}"… \(1000000 bytes\) must be 1-64/);
  expect(err?.details.length).toBeLessThan(300);
});
