import { join } from "node:path";
import { expect, test } from "vitest";
import type { NatsConnection } from "nats";
import { BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { DEADLETTER_STREAM } from "../../src/replication/subjects.js";
import { NatsServer } from "../harness/nats.js";
import { cleanupAfterAll, tempDir } from "../harness/tmp.js";
import { WriterClient, WriterProcess, connectNats } from "../harness/writer.js";
import { waitFor } from "../harness/wait.js";
import { BillingTraffic, expectConverged, metricValue, scrape, startSidecarProcess, testRng, type Rng, type SidecarUnderTest } from "../harness/system.js";

/**
 * The writer as a real process, SIGKILLed at random points while a billing system publishes a
 * burst of events to PROOFGATE_BILLING (durable while the writer is dead), restarted, several
 * rounds; a sidecar follows throughout. In the end the replica must be the writer's state
 * exactly: same revision, and every document the fold of exactly the events sent.
 */
const cleanup = cleanupAfterAll();

function shuffle<T>(rng: Rng, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

test("a writer SIGKILLed at random points during bursts loses no event, applies none twice, and the replica converges", async () => {
  const rng = testRng();
  const nats = await NatsServer.start();
  cleanup.push(() => nats.dispose());
  const dir = tempDir("proofgate-faults-");
  cleanup.push(() => dir.dispose());
  let nc: NatsConnection | undefined = await connectNats(nats.url);
  cleanup.push(() => nc?.close());
  const jsm = await nc.jetstreamManager();
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
  const handledBy = async (w: WriterProcess): Promise<number> => {
    const text = await scrape(w.httpAddress);
    const n = (result: string): number => metricValue(text, "proofgate_writer_events_total", { source: "nats", result }) ?? 0;
    return n("accepted") + n("duplicate");
  };

  // Three rounds. Each kills the writer at a random point of a burst: when the billing system has
  // published a random number of its events, or when the writer has handled a random number of
  // messages. Two rounds then also restart it with a test-only fault hook that SIGKILLs it at one
  // of the two dangerous moments (after a ledger commit before its publish, after a publish before
  // recording it) while it works through what piled up.
  const hooks = shuffle(rng, ["", "PROOFGATE_TEST_CRASH_AFTER_COMMIT", "PROOFGATE_TEST_CRASH_AFTER_PUBLISH"]);
  const kills: Record<string, unknown>[] = [];
  for (let round = 1; round <= 3; round++) {
    const burst = rng.int(150, 300);
    const trigger = rng.pick(["published", "handled"] as const);
    const threshold = rng.int(1, burst - 1);
    let published = 0;
    let publishedAtKill = 0;
    let killing: Promise<unknown> | undefined;
    const victim = writer;
    const publishing = (async () => {
      for (let i = 0; i < burst; i++) {
        if (trigger === "published" && i === threshold) {
          publishedAtKill = published;
          killing = victim.stop("SIGKILL");
        }
        // Now and then the billing system sends an event again (it must count once).
        const again = rng.next() < 0.05 ? traffic.again() : undefined;
        if (again) redelivered++;
        await send(again ?? traffic.next());
        published++;
      }
    })();
    if (trigger === "handled") {
      await waitFor(async () => (await handledBy(victim)) >= threshold, `round ${round}: the writer to handle ${threshold} messages`);
      publishedAtKill = published;
      killing = victim.stop("SIGKILL");
    }
    await (await waitFor(() => killing && { killing }, "the kill")).killing;
    expect((await victim.exited).signal, victim.output()).toBe("SIGKILL");
    // The rest of the burst reaches the stream while no writer runs.
    await publishing;
    const hook = hooks[round - 1] ?? "";
    kills.push({ round, burst, trigger, threshold, publishedAtKill, hook });
    if (hook) {
      // A writer that kills itself at the hook, given work to do.
      const crashing = await WriterProcess.start({ natsUrl: nats.url, ledgerPath, env: { [hook]: "1" } }).catch((err: unknown) => {
        // It may die before its start-up line is out.
        expect(String(err)).toMatch(/exited \(SIGKILL\) before it started/);
        return undefined;
      });
      if (crashing) {
        writers.push(crashing);
        for (const e of traffic.burst(5)) await send(e);
        expect((await crashing.exited).signal, crashing.output()).toBe("SIGKILL");
      }
    }
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
    expect(kills).toHaveLength(3);
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
