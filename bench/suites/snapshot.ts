/**
 * Replica snapshots: the writer's snapshot producer builds its replica from a seeded stream and
 * puts one snapshot; then a cold sidecar replays the stream and another restores the snapshot
 * (time to ready, replica bytes per customer, RSS). Every role is its own process, against one
 * nats-server. Many sidecars starting at once are the herd suite's (bytes measured, not estimated).
 */
import { join } from "node:path";
import { connect } from "nats";
import { NatsServer } from "#proofgate/dev/nats-server.js";
import { listSnapshots } from "#proofgate/snapshot/store.js";
import type { Config } from "../config.js";
import { rssOf, round, sleep } from "../util.js";
import { fileSize, roles, type Env } from "./sidecar.js";

export interface ColdStart {
  readonly readyMs: number;
  readonly replicaBytes: number;
  readonly walBytes: number;
  readonly bytesPerCustomer: number;
  readonly rssAtRestBytes: number;
}

export interface SnapshotResults {
  readonly customers: number;
  readonly stream: { readonly bytes: number; readonly bytesPerRecord: number };
  readonly snapshot: { readonly revision: number; readonly bytes: number; readonly bytesPerCustomer: number; readonly producerReadyMs: number; readonly writeMs: number };
  readonly replay: ColdStart;
  readonly restore: ColdStart;
}

export async function snapshotSuite(cfg: Config, env: Env): Promise<SnapshotResults> {
  const { log } = env;
  const { fork, killAll } = roles(env);
  const nats = await NatsServer.start();
  try {
    const seed = await fork("seed");
    await seed.call("connect", { url: nats.url });
    await seed.call("templates", { count: cfg.templates, seed: 42, now: Date.now() });
    await seed.call("catalog");
    log(`snapshots: seeding ${cfg.customers.toLocaleString("en")} customer documents`);
    await seed.call("documents", { count: cfg.customers, window: cfg.seedWindow });
    const info = await seed.call<{ messages: number; bytes: number; lastSeq: number }>("streamInfo");

    log("  the snapshot producer builds its replica and writes one snapshot");
    const producer = await fork("snapshotter");
    const written = await producer.call<{ revision: number; replicaReadyMs: number; writeMs: number }>("snapshot", { replica: join(env.dir, "snapshotter.db"), natsUrl: nats.url });
    const nc = await connect({ servers: nats.url });
    const stored = (await listSnapshots(await nc.jetstreamManager(), nc.jetstream()))[0];
    await nc.close();
    if (!stored) throw new Error("no snapshot was written");
    await producer.stop();
    log(`  snapshot at revision ${written.revision}: ${(stored.meta.size / 2 ** 20).toFixed(1)} MiB, written in ${(written.writeMs / 1000).toFixed(2)} s`);

    const cold = async (name: string, snapshotBootstrap: boolean): Promise<ColdStart> => {
      const replica = join(env.dir, `${name}.db`);
      const sc = await fork("sidecar");
      await sc.call("start", { replica, natsUrl: nats.url, snapshotBootstrap });
      const ready = await sc.call<{ readyMs: number }>("ready");
      await sleep(cfg.restMs);
      const rss = (await rssOf(sc.pid))?.rss ?? NaN;
      await sc.stop();
      const replicaBytes = fileSize(replica);
      log(`  cold start, ${name}: ready in ${(ready.readyMs / 1000).toFixed(2)} s; replica ${round(replicaBytes / cfg.customers, 0)} B per customer`);
      return { readyMs: round(ready.readyMs, 0), replicaBytes, walBytes: fileSize(`${replica}-wal`), bytesPerCustomer: round(replicaBytes / cfg.customers, 0), rssAtRestBytes: rss };
    };
    const replay = await cold("replay", false);
    const restore = await cold("restore", true);

    return {
      customers: cfg.customers,
      stream: { bytes: info.bytes, bytesPerRecord: round(info.bytes / info.messages, 0) },
      snapshot: { revision: stored.meta.revision, bytes: stored.meta.size, bytesPerCustomer: round(stored.meta.size / cfg.customers, 0), producerReadyMs: round(written.replicaReadyMs, 0), writeMs: round(written.writeMs, 0) },
      replay,
      restore,
    };
  } finally {
    killAll();
    await nats.dispose();
  }
}
