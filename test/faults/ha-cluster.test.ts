import { join } from "node:path";
import { afterAll, expect, test } from "vitest";
import type { JetStreamManager } from "nats";
import { BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { AUDIT_STREAM, BILLING_STREAM, DEADLETTER_STREAM, STATE_STREAM } from "../../src/replication/subjects.js";
import { INPUT_STREAM } from "../../src/writer/ha/inputs.js";
import { LEASE_BUCKET } from "../../src/writer/ha/lease.js";
import { NatsCluster } from "../harness/nats.js";
import { tempDir } from "../harness/tmp.js";
import { connectNats } from "../harness/writer.js";
import { WriterSlots } from "../harness/ha.js";
import { waitFor } from "../harness/wait.js";
import { BillingTraffic, startSidecarProcess, testRng, type SidecarUnderTest } from "../harness/system.js";

/**
 * Production's shape on loopback: three nats-server nodes in one JetStream cluster, every stream
 * and the lease bucket at three replicas, two writers and a sidecar given all three addresses.
 * Three times, one NATS node (the leader of a stream that matters) and the leading writer are
 * SIGKILLed together, under paced traffic (NATS and gRPC mixed); the standby takes over on the two
 * nodes left, and both come back. In the end the sidecar's replica is the fold of exactly the
 * events sent.
 */
const cleanup: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

const LEASE_STREAM = `KV_${LEASE_BUCKET}`;
/** One round each: the server leading it is killed with the leading writer. */
const STREAMS = [STATE_STREAM, INPUT_STREAM, LEASE_STREAM] as const;
const ALL_STREAMS = [...STREAMS, BILLING_STREAM, DEADLETTER_STREAM, AUDIT_STREAM];

const pace = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Who leads each stream and the input stream's consumers, and which replicas lag: said when a takeover does not come. */
async function clusterState(jsm: JetStreamManager): Promise<string> {
  const lines: string[] = [];
  for (const name of ALL_STREAMS) {
    const c = await jsm.streams
      .info(name)
      .then((i) => i.cluster)
      .catch((err: unknown) => String(err));
    lines.push(typeof c === "string" || !c ? `${name}: ${c ?? "no cluster info"}` : `${name}: leader ${c.leader ?? "none"}, replicas ${(c.replicas ?? []).map((r) => `${r.name}${r.offline ? " offline" : r.current ? "" : " lagging"}`).join(", ")}`);
  }
  const consumers = await jsm.consumers
    .list(INPUT_STREAM)
    .next()
    .catch(() => []);
  for (const ci of consumers) lines.push(`${INPUT_STREAM} consumer ${ci.name}: leader ${ci.cluster?.leader ?? "none"}, delivered ${ci.delivered.stream_seq}, pending ${ci.num_pending}`);
  return lines.join("\n");
}

/** Every replica of every stream that matters is on line and current (a node can be lost again). */
async function fullyReplicated(jsm: JetStreamManager): Promise<boolean> {
  for (const name of ALL_STREAMS) {
    const info = await jsm.streams.info(name).catch(() => undefined);
    const c = info?.cluster;
    if (!c?.leader || c.replicas?.length !== 2 || !c.replicas.every((r) => r.current && !r.offline)) return false;
  }
  return true;
}

test("one NATS node and the leading writer killed together, three times: the standby leads on the nodes left, nothing is lost or applied twice", async () => {
  const rng = testRng();
  const cluster = await NatsCluster.start();
  cleanup.push(() => cluster.dispose());
  const dir = tempDir("proofgate-ha-cluster-");
  cleanup.push(() => dir.dispose());
  const nc = await connectNats(cluster.url);
  cleanup.push(() => nc.close());
  const jsm = await nc.jetstreamManager();
  const js = nc.jetstream();

  const writers = await WriterSlots.start(cleanup, cluster.url, dir.path, ["--lease-ttl", "1s", "--stream-replicas", "3"]);
  const { slots } = writers;
  await (await writers.leader()).client.applyCatalog();
  await writers.settled();
  await waitFor(() => fullyReplicated(jsm), "every stream at three current replicas", 30_000);
  for (const name of ALL_STREAMS) expect((await jsm.streams.info(name)).config.num_replicas, name).toBe(3);

  const sidecar: SidecarUnderTest = await startSidecarProcess("cluster", cluster.url, join(dir.path, "replica.db"));
  cleanup.push(() => sidecar.stop("SIGKILL"));

  const customers = Array.from({ length: 24 }, (_, i) => `cus_cl_${i}`);
  const traffic = new BillingTraffic(rng, customers, `c${rng.seed}`);
  let natsSent = 0;
  let grpcSent = 0;
  let retries = 0;
  // An event goes out until it is taken: NATS publishes retry while the stream elects a new leader,
  // gRPC calls go to either live writer; event ids make a repeat count once.
  const send = async (e: BillingEvent, viaNats: boolean): Promise<void> => {
    await waitFor(async () => {
      try {
        if (viaNats) return await js.publish(`proofgate.billing.cluster.${e.customerId}`, BillingEvent.encode(e).finish(), { msgID: e.eventId, timeout: 2_000 });
        const live = slots.filter((s) => s.alive);
        const s = live[rng.int(0, live.length - 1)];
        return s ? await s.client.publish([e]) : undefined;
      } catch {
        retries++;
        return undefined;
      }
    }, `event ${e.eventId} taken`, 60_000);
  };

  const run = { stop: false };
  const inFlight = new Set<Promise<void>>();
  const sending = (async () => {
    // About 30 events a second, at most 16 outstanding.
    for (let i = 0; !run.stop && i < 10_000; i++) {
      const e = traffic.next();
      const viaNats = i % 2 === 0;
      if (inFlight.size >= 16) await Promise.race(inFlight);
      const p: Promise<void> = send(e, viaNats).finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (viaNats) natsSent++;
      else grpcSent++;
      await pace(33);
    }
    await Promise.all(inFlight);
  })();

  const takeovers: number[] = [];
  const killedNodes: string[] = [];
  for (const [k, stream] of STREAMS.entries()) {
    await pace(rng.int(500, 1_500));
    // The node leading this stream goes down with the leading writer.
    const nodeName = (await jsm.streams.info(stream)).cluster?.leader ?? "";
    const node = cluster.nodes.find((n) => n.serverName === nodeName);
    if (!node) throw new Error(`no node named ${nodeName} leads ${stream}`);
    const victim = await writers.leader();
    const other = slots.find((s) => s !== victim);
    if (!other) throw new Error("two slots");
    const killedAt = performance.now();
    await Promise.all([node.stop("SIGKILL"), writers.kill(victim)]);
    killedNodes.push(`${nodeName} (${stream} leader)`);
    await waitFor(async () => (await writers.role(other)) === "ready: leader", `round ${k + 1}: ${other.name} to take over with ${nodeName} down`, 60_000).catch(async (err: unknown) => {
      const state = await clusterState(jsm).catch((e: unknown) => `cluster state unavailable: ${String(e)}`);
      throw new Error(`${String(err)}\nthe cluster as the test's connection sees it:\n${state}\n${other.name}'s log:\n${other.proc.output().slice(-6000)}`);
    });
    takeovers.push(Math.round(performance.now() - killedAt));
    // Both come back: the node catches its replicas up, the writer stands by on its own ledger.
    await node.start();
    await writers.restart(victim, 60_000);
    await waitFor(async () => (await cluster.healthy()) && (await fullyReplicated(jsm)), `round ${k + 1}: ${nodeName} current again`, 60_000);
  }
  run.stop = true;
  await sending;

  const converged = await writers.converged({ nc, jsm, sidecars: [sidecar], expected: traffic.expected, timeoutMs: 60_000 });
  expect(takeovers).toHaveLength(STREAMS.length);
  expect(traffic.expected.size).toBe(customers.length);
  expect((await jsm.streams.info(DEADLETTER_STREAM)).state.messages).toBe(0);
  process.stdout.write(
    `NATS cluster failover (seed ${rng.seed}): killed ${killedNodes.join(", ")} each with the leading writer; ${traffic.distinctEvents} events ` +
      `(${natsSent} NATS, ${grpcSent} gRPC, ${retries} retries), revision ${converged.revision}; kill → new leader ready (ms): ${JSON.stringify(takeovers)}\n`,
  );
}, 600_000);
