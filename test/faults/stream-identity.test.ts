import { join } from "node:path";
import { expect, test } from "vitest";
import { PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { startWriterSystem } from "../harness/demo.js";
import { EventFactory } from "../harness/writer.js";
import { waitFor } from "../harness/wait.js";
import { metric, scrape, startSidecarProcess } from "../harness/system.js";
import { cleanupAfterAll } from "../harness/tmp.js";

/**
 * A clean nats-server restart keeps PROOFGATE_STATE's sequences, but may report a new `created`
 * time for it. Sidecars recognise the stream by the incarnation id the writer gave it, so three
 * restarts in a row rebuild nothing and never answer UNKNOWN_CUSTOMER for a known customer.
 */
const cleanup = cleanupAfterAll();

test("nats-server restarted three times: the sidecar keeps its replica (no rebuild) and keeps answering from it", async () => {
  const system = await startWriterSystem("identity");
  cleanup.push(() => system.close());
  const { nats, dir, client } = system;
  const customers = Array.from({ length: 20 }, (_, i) => `cus_id_${i}`);
  const events = customers.flatMap((c) => {
    const f = new EventFactory(c);
    return [f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)];
  });
  let { revision } = await client.publish(events);
  const sidecar = await startSidecarProcess("identity", nats.url, join(dir, "replica.db"));
  cleanup.push(() => sidecar.stop("SIGKILL"));
  await sidecar.client.check({ customerId: "cus_id_0", feature: "api-access", minRevision: revision });

  for (let round = 1; round <= 3; round++) {
    await nats.restart();
    // A change after each restart, so the sidecar must follow the same stream on.
    const f = new EventFactory(`cus_after_restart_${round}`);
    revision = await waitFor(async () => {
      try {
        return (await client.publish([f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)])).revision;
      } catch {
        return undefined;
      }
    }, `publish after restart ${round}`, 30_000);
    const r = await sidecar.client.check({ customerId: f.customerId, feature: "api-access", minRevision: revision });
    expect(r.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
    for (const c of customers) {
      expect((await sidecar.client.check({ customerId: c, feature: "api-access" })).status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
    }
  }
  const rebuilds = (await scrape(sidecar.httpAddress)).split("\n").filter((l) => l.startsWith("proofgate_sidecar_replica_rebuilds_total{"));
  expect(rebuilds).toEqual([]);
  // Fresh again once a heartbeat confirms the replica after the last restart. In between, answers
  // may be marked stale: across three restarts no heartbeat may have confirmed it within the
  // coherency window.
  await waitFor(async () => (await metric(sidecar.httpAddress, "proofgate_sidecar_stale")) === 0, "the sidecar's answers fresh again after the last restart", 15_000);
});
