import { join } from "node:path";
import { expect, test } from "vitest";
import { PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { NatsServer } from "../harness/nats.js";
import { cleanupAfterAll, tempDir } from "../harness/tmp.js";
import { testCatalog } from "../harness/sidecar.js";
import { EventFactory, WriterClient, WriterProcess } from "../harness/writer.js";
import { waitFor } from "../harness/wait.js";
import { metric, startSidecarProcess } from "../harness/system.js";

/**
 * Freshness comes from the writer's heartbeats, not from "the consumer has nothing pending": a
 * SIGKILLed writer publishes nothing, so a stream with nothing pending proves nothing. With the
 * writer dead past the coherency window, answers are stale and stale_policy: deny denies.
 */
const cleanup = cleanupAfterAll();

test("a SIGKILLed writer turns the sidecar's answers stale after the coherency window (and stale_policy: deny denies); a restarted one makes them fresh again", async () => {
  const nats = await NatsServer.start();
  cleanup.push(() => nats.dispose());
  const dir = tempDir("proofgate-freshness-");
  cleanup.push(() => dir.dispose());
  const ledgerPath = join(dir.path, "ledger.db");
  let writer = await WriterProcess.start({ natsUrl: nats.url, ledgerPath });
  cleanup.push(() => writer.stop("SIGKILL"));
  const client = new WriterClient(writer.grpcAddress);
  await waitFor(async () => (await writer.http("/readyz")).status === 200, "writer ready");
  await client.applyCatalog(testCatalog({ coherencyWindowMs: 2_000, stalePolicy: "deny" }));
  const f = new EventFactory("cus_fresh");
  const { revision } = await client.publish([f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)]);
  client.close();

  const sidecar = await startSidecarProcess("freshness", nats.url, join(dir.path, "replica.db"));
  cleanup.push(() => sidecar.stop("SIGKILL"));
  // A sidecar is fresh once a heartbeat of the live writer confirms what it applied.
  const fresh = await waitFor(async () => {
    const r = await sidecar.client.check({ customerId: "cus_fresh", feature: "api-access", minRevision: revision });
    return r.stale ? undefined : r;
  }, "a fresh answer while the writer lives");
  expect(fresh).toMatchObject({ allowed: true, stale: false, status: AccessStatus.ACCESS_STATUS_GRANTED });

  await writer.stop("SIGKILL");
  // NATS stays up and the consumer has nothing pending; only the heartbeats stopped.
  const stale = await waitFor(async () => {
    const r = await sidecar.client.check({ customerId: "cus_fresh", feature: "api-access" });
    return r.stale ? r : undefined;
  }, "answers stale with the writer dead");
  expect(stale.allowed).toBe(false);
  expect(stale.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
  expect(await metric(sidecar.httpAddress, "proofgate_sidecar_stale")).toBe(1);
  expect(await metric(sidecar.httpAddress, "proofgate_sidecar_heartbeat_age_seconds")).toBeGreaterThan(2);
  // Still serving (ready): staleness is reported, not an outage.
  expect(await sidecar.client.healthStatus()).toBe("SERVING");

  writer = await WriterProcess.start({ natsUrl: nats.url, ledgerPath });
  await waitFor(async () => {
    const r = await sidecar.client.check({ customerId: "cus_fresh", feature: "api-access" });
    return !r.stale && r.allowed;
  }, "fresh again once the writer is back");
  expect(await metric(sidecar.httpAddress, "proofgate_sidecar_stale")).toBe(0);
});
