import { createHash, createHmac } from "node:crypto";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, test } from "vitest";
import { PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { CUSTOMER_SUBJECT_PREFIX, DEV_CUSTOMER_TOKEN_KEY, STATE_STREAM, customerToken, customerTokens, useCustomerTokenKey } from "../../src/replication/subjects.js";
import { NatsServer } from "../harness/nats.js";
import { startSidecarProcess } from "../harness/system.js";
import { tempDir } from "../harness/tmp.js";
import { waitFor } from "../harness/wait.js";
import { EventFactory, WriterClient, WriterProcess, connectNats, lastState } from "../harness/writer.js";

/**
 * Customer tokens are keyed (HMAC-SHA-256 with --customer-token-key): subjects cannot be tested
 * against a guessed id without the key; a sidecar with another key than the writer's refuses the
 * stream instead of answering UNKNOWN_CUSTOMER to everyone; a key rotation rebuilds the stream
 * under the new key and keeps the audit findable. Real writer, sidecars and nats-server.
 */
const hmac = (key: string, id: string): string => createHmac("sha256", key).update(id, "utf8").digest("base64url");
const sha256 = (id: string): string => createHash("sha256").update(id, "utf8").digest("base64url");

describe("the token function", () => {
  afterEach(() => useCustomerTokenKey(DEV_CUSTOMER_TOKEN_KEY));

  test("is HMAC-SHA-256 under the configured key, not a bare hash of the id", () => {
    expect(customerToken("alice@example.com")).toBe(hmac(DEV_CUSTOMER_TOKEN_KEY, "alice@example.com"));
    expect(customerToken("alice@example.com")).not.toBe(sha256("alice@example.com"));
    useCustomerTokenKey("k-new");
    expect(customerToken("alice@example.com")).toBe(hmac("k-new", "alice@example.com"));
  });

  test("lookups cover the current key, previous keys and the old unkeyed digest", () => {
    useCustomerTokenKey("k-new, k-old");
    expect(customerTokens("cus_1")).toEqual([hmac("k-new", "cus_1"), hmac("k-old", "cus_1"), sha256("cus_1")]);
    expect(() => useCustomerTokenKey("k-new,,k-old")).toThrow(/^customer_token_key: must not be empty/);
  });
});

const cleanup: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

test("a sidecar with another key refuses the stream; a rotation republishes under the new key and keeps the audit", async () => {
  const K1 = "first-key-0123456789abcdef0123456789";
  const K2 = "second-key-0123456789abcdef012345678";
  const nats = await NatsServer.start();
  cleanup.push(() => nats.dispose());
  const dir = tempDir("proofgate-token-key-");
  cleanup.push(() => dir.dispose());
  const ledgerPath = join(dir.path, "ledger.db");
  let writer = await WriterProcess.start({ natsUrl: nats.url, ledgerPath, args: ["--customer-token-key", K1] });
  cleanup.push(() => writer.stop("SIGKILL"));
  let client = new WriterClient(writer.grpcAddress);
  cleanup.push(() => client.close());
  await waitFor(async () => (await writer.http("/readyz")).status === 200, "writer ready");
  await client.applyCatalog();
  const f = new EventFactory("alice@example.com");
  await client.publish([f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)]);
  const nc = await connectNats(nats.url);
  cleanup.push(() => nc.close());
  const jsm = await nc.jetstreamManager();

  // On the wire: the keyed token, and nothing under the unkeyed digest.
  expect((await lastState(jsm, CUSTOMER_SUBJECT_PREFIX + hmac(K1, "alice@example.com")))?.record.record?.$case).toBe("document");
  expect(await lastState(jsm, CUSTOMER_SUBJECT_PREFIX + sha256("alice@example.com"))).toBeUndefined();

  // A sidecar with the writer's key answers; one with another key refuses, saying why.
  const good = await startSidecarProcess("k1", nats.url, join(dir.path, "k1.db"), ["--customer-token-key", K1]);
  cleanup.push(() => good.stop("SIGKILL"));
  await waitFor(async () => (await good.client.check({ customerId: "alice@example.com", feature: "api-access" })).status === AccessStatus.ACCESS_STATUS_GRANTED, "granted with the writer's key");
  const wrong = await startSidecarProcess("k2", nats.url, join(dir.path, "k2.db"), ["--customer-token-key", K2]);
  cleanup.push(() => wrong.stop("SIGKILL"));
  await waitFor(() => /was written with customer token key k1:\S+, this process has k1:/.test(wrong.proc.output()), "the wrong-key sidecar says why it does not follow", 30_000);
  expect((await fetch(`http://${wrong.httpAddress}/readyz`)).status).not.toBe(200);
  await wrong.stop("SIGKILL");

  // Rotation: the writer with K2 (K1 kept for the audit) refuses the K1 stream until it is deleted.
  client.close();
  await writer.stop("SIGTERM");
  writer = await WriterProcess.start({ natsUrl: nats.url, ledgerPath, args: ["--customer-token-key", `${K2},${K1}`] });
  client = new WriterClient(writer.grpcAddress);
  await waitFor(() => /holds subjects made with customer token key k1:\S+, this writer's key is k1:/.test(writer.output()), "the writer refuses the stream made with the old key", 30_000);
  await jsm.streams.delete(STATE_STREAM);
  await waitFor(async () => (await lastState(jsm, CUSTOMER_SUBJECT_PREFIX + hmac(K2, "alice@example.com")))?.record.record?.$case === "document", "republished under the new key", 30_000).catch(
    (err: unknown) => {
      // Say what the writer and nats-server were doing meanwhile; a crash of the server from its first line.
      const log = nats.log();
      const crash = log.search(/^(panic|fatal error):/m);
      throw new Error(
        `${err instanceof Error ? err.message : String(err)}\nwriter output (last 4,000 characters):\n${writer.output().slice(-4_000)}\n` +
          (crash >= 0 ? `nats-server crashed:\n${log.slice(crash, crash + 3_000)}` : `nats-server log (last 2,000 characters):\n${log.slice(-2_000)}`),
      );
    },
  );
  expect(await lastState(jsm, CUSTOMER_SUBJECT_PREFIX + hmac(K1, "alice@example.com"))).toBeUndefined();

  // A sidecar with the new key serves the customer; the audit written under K1 is still found.
  const rotated = await startSidecarProcess("k2-after", nats.url, join(dir.path, "k2-after.db"), ["--customer-token-key", K2]);
  cleanup.push(() => rotated.stop("SIGKILL"));
  await waitFor(async () => (await rotated.client.check({ customerId: "alice@example.com", feature: "api-access" })).status === AccessStatus.ACCESS_STATUS_GRANTED, "granted after the rotation");
  const timeline = (await client.getCustomer("alice@example.com")).timeline;
  expect(timeline.filter((e) => e.eventId.startsWith(f.prefix)).length).toBeGreaterThanOrEqual(2);

  // The old sidecar (K1) now refuses the new stream rather than serve from it.
  await waitFor(() => /was written with customer token key k1:\S+, this process has k1:/.test(good.proc.output()), "the K1 sidecar refuses the K2 stream", 30_000);
});
