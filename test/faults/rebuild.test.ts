import { join } from "node:path";
import { expect, test } from "vitest";
import { PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { STATE_STREAM } from "../../src/replication/subjects.js";
import { NatsServer } from "../harness/nats.js";
import { cleanupAfterAll, tempDir } from "../harness/tmp.js";
import { startWriterSystem } from "../harness/demo.js";
import { StatePublisher, paidCustomer, testCatalog } from "../harness/sidecar.js";
import { EventFactory, connectNats } from "../harness/writer.js";
import { waitFor } from "../harness/wait.js";
import { metric, startSidecarProcess } from "../harness/system.js";

/** Rebuilds and bootstraps never pass an empty or partial replica off as current. */
const cleanup = cleanupAfterAll();

test("state stream deleted and recreated: while the sidecar rebuilds, no answer from an empty replica claims to be fresh", async () => {
  const system = await startWriterSystem("rebuild");
  cleanup.push(() => system.close());
  const { nats, dir, client } = system;
  const customers = Array.from({ length: 300 }, (_, i) => `cus_rb_${i}`);
  const { revision } = await client.publish(
    customers.flatMap((c) => {
      const f = new EventFactory(c);
      return [f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)];
    }),
  );
  const sidecar = await startSidecarProcess("rebuild", nats.url, join(dir, "replica.db"));
  cleanup.push(() => sidecar.stop("SIGKILL"));
  await sidecar.client.check({ customerId: "cus_rb_0", feature: "api-access", minRevision: revision });
  await waitFor(async () => !(await sidecar.client.check({ customerId: "cus_rb_0", feature: "api-access" })).stale, "fresh");

  const nc = await connectNats(nats.url);
  cleanup.push(() => nc.close());
  await (await nc.jetstreamManager()).streams.delete(STATE_STREAM);
  // The next change makes the writer notice, recreate the stream and republish everything.
  const late = new EventFactory("cus_rb_late");
  const after = await waitFor(async () => {
    try {
      return (await client.publish([late.subscribe("premium"), late.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)])).revision;
    } catch {
      return undefined;
    }
  }, "publish onto the recreated stream", 30_000);

  // Poll every customer until the sidecar has rebuilt; an empty answer must never be fresh.
  const liesSeen: string[] = [];
  await waitFor(async () => {
    let done = true;
    for (const c of [...customers, late.customerId]) {
      const r = await sidecar.client.check({ customerId: c, feature: "api-access" });
      if (r.status === AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER && !r.stale) liesSeen.push(`${c} at revision ${r.revision}`);
      if (r.status !== AccessStatus.ACCESS_STATUS_GRANTED || r.stale || r.revision < after) done = false;
    }
    return done;
  }, "every customer granted and fresh after the rebuild", 60_000);
  expect(liesSeen).toEqual([]);
  expect(await metric(sidecar.httpAddress, "proofgate_sidecar_replica_rebuilds_total", { reason: "stream recreated" })).toBe(1);
});

test("a sidecar killed mid-bootstrap and restarted without NATS is not ready: an interrupted bootstrap is never a warm replica", async () => {
  const nats = await NatsServer.start();
  cleanup.push(() => nats.dispose());
  const dir = tempDir("proofgate-bootstrap-");
  cleanup.push(() => dir.dispose());
  const pub = await StatePublisher.connect(nats.url);
  cleanup.push(() => pub.close());
  await pub.catalog(testCatalog());
  const now = Date.now();
  const last = await pub.documents(Array.from({ length: 20_000 }, (_, i) => paidCustomer(`cus_boot_${i}`, "basic", now)));
  const replicaPath = join(dir.path, "replica.db");
  const first = await startSidecarProcess("bootstrap", nats.url, replicaPath);
  await waitFor(async () => ((await metric(first.httpAddress, "proofgate_sidecar_applied_revision")) ?? 0) > 0, { what: "bootstrap under way", intervalMs: 5 });
  await first.stop("SIGKILL");

  await nats.stop();
  const second = await startSidecarProcess("bootstrap-again", nats.url, replicaPath);
  cleanup.push(() => second.stop("SIGKILL"));
  const applied = (await metric(second.httpAddress, "proofgate_sidecar_applied_revision")) ?? 0;
  expect(applied).toBeLessThan(last);
  await waitFor(() => /interrupted bootstrap, not a complete state/.test(second.proc.output()), "the sidecar saw the replica is incomplete");
  expect(await second.client.healthStatus()).toBe("NOT_SERVING");
  expect(await metric(second.httpAddress, "proofgate_sidecar_ready")).toBe(0);

  // NATS back: it syncs from the stream and only then is ready, with every document.
  await nats.start();
  await waitFor(async () => (await second.client.healthStatus()) === "SERVING", "ready after syncing", 60_000);
  expect((await second.client.check({ customerId: "cus_boot_19999", feature: "advanced-filtering" })).allowed).toBe(true);
});
