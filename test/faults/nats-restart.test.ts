import { join } from "node:path";
import { status, type ServiceError } from "@grpc/grpc-js";
import { expect, test } from "vitest";
import { BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { IngestResult } from "../../src/gen/proofgate/v1/ingest.js";
import { cleanupAfterAll } from "../harness/tmp.js";
import { startWriterSystem } from "../harness/demo.js";
import { waitFor } from "../harness/wait.js";
import { BillingTraffic, expectConverged, metricValue, scrape, startSidecarProcess, testRng } from "../harness/system.js";

/**
 * nats-server itself stopped and started again (same port, same store) while billing events
 * flow through a writer and a sidecar running as real processes. Events published before the
 * stop, events the billing system retries through the outage, and events the writer accepted
 * over gRPC while NATS was away must all end up in the replica, once.
 */
const cleanup = cleanupAfterAll();

test("nats-server stopped and restarted mid-stream: writer and sidecar reconnect and converge with nothing lost or doubled", async () => {
  const rng = testRng();
  const system = await startWriterSystem("nats-restart", { writerArgs: ["--publish-timeout", "300ms"] });
  cleanup.push(() => system.close());
  const { nats, nc, dir, writer, client } = system;
  // Acks the writer sends while NATS is going down are lost; the messages come back after this.
  // Short timeouts: a publish lost in the outage fails fast and is retried.
  const jsm = await nc.jetstreamManager({ timeout: 1_000 });
  const js = nc.jetstream({ timeout: 1_000 });
  const sidecar = await startSidecarProcess("follower", nats.url, join(dir, "replica.db"));
  cleanup.push(() => sidecar.stop("SIGKILL"));

  const customers = Array.from({ length: 30 }, (_, i) => `cus_nats_${i}`);
  const traffic = new BillingTraffic(rng, customers, `n${rng.seed}`);
  const total = rng.int(300, 450);
  const stopAt = rng.int(20, total - 100);
  let published = 0;
  let retried = 0;
  let stopping: Promise<void> | undefined;
  // The billing system: publishes one event after another and retries each until JetStream acks
  // it. At a random point in its stream, nats-server is stopped under it.
  const publishing = (async () => {
    for (let i = 0; i < total; i++) {
      if (i === stopAt) stopping = nats.stop();
      const data = BillingEvent.encode(traffic.next()).finish();
      for (;;) {
        try {
          await js.publish("proofgate.billing.faults", data);
          break;
        } catch {
          retried++;
          await waitFor(() => nats.running, "nats-server to be back", 60_000);
        }
      }
      published++;
    }
  })();

  const revisionBeforeOutage = (await sidecar.client.check({ customerId: customers[0] ?? "", feature: "api-access" })).revision;
  // (wrapped: waitFor would await the promise itself)
  await (await waitFor(() => stopping && { stopping }, "the publisher to reach the stop point")).stopping;
  const acceptedAtStop = metricValue(await scrape(writer.httpAddress), "proofgate_writer_events_total", { source: "nats", result: "accepted" }) ?? 0;

  // NATS is down. Changes go through the input stream, so gRPC calls answer UNAVAILABLE with
  // nothing applied; the caller retries later.
  const duringOutage = traffic.burst(5);
  for (const e of duringOutage) {
    const err = await client.publish([e]).then(
      () => undefined,
      (e: unknown) => e as ServiceError,
    );
    expect(err?.code, err?.details).toBe(status.UNAVAILABLE);
  }
  // The sidecar keeps answering from its replica.
  const offline = await sidecar.client.check({ customerId: customers[0] ?? "", feature: "api-access" });
  expect(offline.revision).toBeGreaterThanOrEqual(revisionBeforeOutage);
  await waitFor(async () => metricValue(await scrape(writer.httpAddress), "proofgate_writer_nats_connected") === 0, "the writer to notice NATS is gone");

  const publishedDuringOutage = published;
  await nats.start();
  await publishing;
  // Retried after the outage, each is applied once: accepted now, or a duplicate if the client
  // delivered the unconfirmed append when it reconnected.
  const retry = await waitFor(async () => client.publish(duringOutage), "gRPC publish after NATS returned");
  for (const r of retry.results) expect([IngestResult.INGEST_RESULT_ACCEPTED, IngestResult.INGEST_RESULT_DUPLICATE]).toContain(r.result);

  const converged = await expectConverged({ nc, jsm, writer: { client, httpAddress: writer.httpAddress }, sidecars: [sidecar], expected: traffic.expected });
  expect(converged.revision).toBeGreaterThan(revisionBeforeOutage);
  expect(retry.revision).toBeLessThanOrEqual(converged.revision);
  const after = await sidecar.client.check({ customerId: customers[0] ?? "", feature: "api-access" });
  expect(after.stale).toBe(false);
  process.stdout.write(
    `nats restart (seed ${rng.seed}): ${traffic.distinctEvents} events, NATS stopped at event ${stopAt}, the writer had accepted ${acceptedAtStop}, ${publishedDuringOutage} published when it was down, ${retried} publish retries\n`,
  );
});
