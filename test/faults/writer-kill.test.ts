import { join } from "node:path";
import { afterAll, expect, test } from "vitest";
import type { NatsConnection } from "nats";
import { BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { DEADLETTER_STREAM } from "../../src/replication/subjects.js";
import { NatsServer } from "../harness/nats.js";
import { tempDir } from "../harness/tmp.js";
import { WriterClient, WriterProcess, connectNats, waitFor } from "../harness/writer.js";
import { BillingTraffic, expectConverged, metricValue, prepareBillingConsumer, scrape, startSidecarProcess, testRng, type SidecarUnderTest } from "../harness/system.js";

/**
 * The writer as a real process, SIGKILLed at random points while a billing system publishes a
 * burst of events to PROOFGATE_BILLING (durable while the writer is dead), restarted, several
 * rounds; a sidecar follows throughout. In the end the replica must be the writer's state
 * exactly: same revision, and every document the fold of exactly the events sent.
 */
const cleanup: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

test("a writer SIGKILLed at random points during bursts loses no event, applies none twice, and the replica converges", async () => {
  const rng = testRng();
  const nats = await NatsServer.start();
  cleanup.push(() => nats.dispose());
  const dir = tempDir("proofgate-faults-");
  cleanup.push(() => dir.dispose());
  let nc: NatsConnection | undefined = await connectNats(nats.url);
  cleanup.push(() => nc?.close());
  const jsm = await nc.jetstreamManager();
  await prepareBillingConsumer(jsm, 1_000);
  const js = nc.jetstream();

  const ledgerPath = join(dir.path, "ledger.db");
  const writers: WriterProcess[] = [];
  cleanup.push(async () => {
    for (const w of writers) await w.stop("SIGKILL");
  });
  const startWriter = async (): Promise<WriterProcess> => {
    const w = await WriterProcess.start({ natsUrl: nats.url, ledgerPath });
    writers.push(w);
    return w;
  };
  let writer = await startWriter();
  const admin = new WriterClient(writer.grpcAddress);
  await waitFor(async () => (await writer.http("/readyz")).status === 200, "writer ready");
  await admin.applyCatalog();
  admin.close();

  const sidecar: SidecarUnderTest = await startSidecarProcess("follower", nats.url, join(dir.path, "replica.db"));
  cleanup.push(() => sidecar.stop("SIGKILL"));

  const customers = Array.from({ length: 40 }, (_, i) => `cus_kill_${i}`);
  const traffic = new BillingTraffic(rng, customers, `r${rng.seed}`);
  let redelivered = 0;
  const send = async (e: BillingEvent): Promise<void> => {
    await js.publish(`proofgate.billing.faults.${e.customerId}`, BillingEvent.encode(e).finish());
  };
  const processedBy = async (w: WriterProcess): Promise<number> => {
    const text = await scrape(w.httpAddress);
    const n = (result: string): number => metricValue(text, "proofgate_writer_events_total", { source: "nats", result }) ?? 0;
    return n("accepted") + n("duplicate");
  };

  const kills: { round: number; burst: number; threshold: number; processedAtKill: number; publishedAtKill: number }[] = [];
  for (let round = 1; round <= 3; round++) {
    const burst = rng.int(150, 300);
    // The kill comes when this writer process has handled `threshold` billing messages: a random
    // point in its stream of commits, acks and publishes.
    const threshold = rng.int(1, burst - 1);
    let published = 0;
    const publishing = (async () => {
      for (let i = 0; i < burst; i++) {
        // Now and then the billing system sends an event again (it must count once).
        const again = rng.next() < 0.05 ? traffic.again() : undefined;
        if (again) redelivered++;
        await send(again ?? traffic.next());
        published++;
      }
    })();
    const processedAtKill = await waitFor(async () => {
      const n = await processedBy(writer);
      return n >= threshold ? n : undefined;
    }, `round ${round}: the writer to handle ${threshold} messages`);
    const publishedAtKill = published;
    const exit = await writer.stop("SIGKILL");
    expect(exit.signal, writer.output()).toBe("SIGKILL");
    kills.push({ round, burst, threshold, processedAtKill, publishedAtKill });
    // The rest of the burst reaches the stream while no writer runs.
    await publishing;
    writer = await startWriter();
  }

  const client = new WriterClient(writer.grpcAddress);
  try {
    // One more burst with the last writer alive, then everything must settle.
    for (const e of traffic.burst(rng.int(50, 100))) await send(e);
    const converged = await expectConverged({ nc, jsm, writer: { client, httpAddress: writer.httpAddress }, sidecars: [sidecar], expected: traffic.expected });
    expect(converged.revision).toBeGreaterThan(customers.length);
    expect(traffic.expected.size).toBe(customers.length);
    // Every event was valid: none was dead-lettered.
    expect((await jsm.streams.info(DEADLETTER_STREAM)).state.messages).toBe(0);
    expect(kills.map((k) => k.round)).toEqual([1, 2, 3]);
    // The sidecar answers from the converged replica, fresh.
    const answer = await sidecar.client.check({ customerId: customers[0] ?? "", feature: "advanced-filtering" });
    expect(answer.revision).toBe(converged.revision);
    expect(answer.stale).toBe(false);
    process.stdout.write(`writer kills (seed ${rng.seed}, ${traffic.distinctEvents} events, ${redelivered} sent twice): ${JSON.stringify(kills)}\n`);
  } finally {
    client.close();
  }
  await nc.close();
  nc = undefined;
});
