import { join } from "node:path";
import { afterAll, expect, test } from "vitest";
import { BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { DEADLETTER_STREAM } from "../../src/replication/subjects.js";
import { WriterSlots } from "../harness/ha.js";
import { waitFor } from "../harness/wait.js";
import { BillingTraffic, startSidecarProcess, testRng, type SidecarUnderTest, startNatsBed } from "../harness/system.js";

/**
 * Failover with real processes: two writers (a leader and a hot standby, each with its own
 * ledger), one nats-server, a sidecar, and a paced stream of events, half published to NATS and
 * half sent over gRPC to either writer. The leader is SIGKILLed at random moments, 20 times, and
 * each killed writer is restarted on its ledger as a standby. In the end the sidecar's replica must
 * be the fold of exactly the events sent (none lost, none applied twice). The largest
 * event→enforcement delay (a gRPC event sent → the sidecar answers at its revision) is reported.
 */
const cleanup: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

const KILLS = 20;

const pace = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test("the leader SIGKILLed 20 times under paced traffic: a standby takes over each time, nothing is lost or applied twice", async () => {
  const rng = testRng();
  const { nats, dir, nc, jsm, js } = await startNatsBed(cleanup, "proofgate-ha-");

  const writers = await WriterSlots.start(cleanup, nats.url, dir.path, ["--lease-ttl", "1s"]);
  const { slots } = writers;
  await (await writers.leader()).client.applyCatalog();
  await writers.settled();

  const sidecar: SidecarUnderTest = await startSidecarProcess("follower", nats.url, join(dir.path, "replica.db"));
  cleanup.push(() => sidecar.stop("SIGKILL"));

  const customers = Array.from({ length: 40 }, (_, i) => `cus_ha_${i}`);
  const traffic = new BillingTraffic(rng, customers, `h${rng.seed}`);
  const delays: number[] = [];
  let grpcRetries = 0;
  let natsSent = 0;
  let grpcSent = 0;

  // A gRPC event goes to a random live writer; on failure (it was just killed, or the change was
  // not visible in time) it is sent again, to whichever writer is up: the event id makes it count
  // once. Its delay runs from the first attempt to the sidecar answering at its revision.
  const sendGrpc = async (e: BillingEvent): Promise<void> => {
    const t0 = performance.now();
    const res = await waitFor(async () => {
      const live = slots.filter((s) => s.alive);
      const s = live[rng.int(0, live.length - 1)];
      if (!s) return undefined;
      try {
        return await s.client.publish([e]);
      } catch {
        grpcRetries++;
        return undefined;
      }
    }, `event ${e.eventId} accepted by a writer`, 60_000);
    await waitFor(async () => {
      const answer = await sidecar.client.check({ customerId: e.customerId, feature: "api-access", minRevision: res.revision });
      return answer.stale ? undefined : answer;
    }, `the sidecar at revision ${res.revision}`);
    delays.push(performance.now() - t0);
  };

  const run = { stop: false };
  const inFlight = new Set<Promise<void>>();
  const sending = (async () => {
    // About 40 events a second, alternating NATS and gRPC; at most 32 gRPC calls outstanding.
    for (let i = 0; !run.stop && i < 20_000; i++) {
      const e = traffic.next();
      if (i % 2 === 0) {
        await js.publish(`proofgate.billing.ha.${i % 7}`, BillingEvent.encode(e).finish());
        natsSent++;
      } else {
        if (inFlight.size >= 32) await Promise.race(inFlight);
        const p: Promise<void> = sendGrpc(e).finally(() => inFlight.delete(p));
        inFlight.add(p);
        grpcSent++;
      }
      await pace(25);
    }
    await Promise.all(inFlight);
  })();

  const takeovers: number[] = [];
  for (let k = 0; k < KILLS; k++) {
    await pace(rng.int(200, 1_500));
    const victim = await writers.leader();
    const other = slots.find((s) => s !== victim);
    if (!other) throw new Error("two slots");
    const killedAt = performance.now();
    await writers.kill(victim);
    await waitFor(async () => (await writers.role(other)) === "ready: leader", `kill ${k + 1}: ${other.name} to take over`);
    takeovers.push(Math.round(performance.now() - killedAt));
    // Restarted on its own ledger: it catches up on what it missed and stands by.
    await writers.restart(victim);
  }
  run.stop = true;
  await sending;

  const converged = await writers.converged({ nc, jsm, sidecars: [sidecar], expected: traffic.expected, timeoutMs: 60_000 });
  expect(takeovers).toHaveLength(KILLS);
  expect(traffic.expected.size).toBe(customers.length);
  expect((await jsm.streams.info(DEADLETTER_STREAM)).state.messages).toBe(0);
  expect(delays.length).toBe(grpcSent);
  process.stdout.write(
    `writer failover (seed ${rng.seed}): ${KILLS} leader kills, ${traffic.distinctEvents} events (${natsSent} NATS, ${grpcSent} gRPC, ${grpcRetries} gRPC retries), revision ${converged.revision}; ` +
      `kill → new leader ready (ms): max ${Math.max(...takeovers)}, all ${JSON.stringify(takeovers)}; ` +
      `largest event→enforcement delay ${Math.round(Math.max(...delays))} ms, p50 ${Math.round([...delays].sort((x, y) => x - y)[Math.floor(delays.length / 2)] ?? 0)} ms\n`,
  );
}, 600_000);
