/**
 * A herd: `herd` cold sidecars (empty replicas) started at once against one nats-server, as a
 * rollout does, replaying the state stream and then restoring the newest snapshot. Measured: time
 * from the start calls until every one is ready, and the bytes nats-server sent, from its own
 * monitoring endpoint on an ephemeral loopback port: `/varz` out_bytes over the herd (everything
 * the server sent) and `/connz` out_bytes of each sidecar connection (what each one read).
 */
import { join } from "node:path";
import { NatsServer } from "#proofgate/dev/nats-server.js";
import type { Config } from "../config.js";
import { round } from "../util.js";
import { roles, type Env } from "./sidecar.js";

export interface HerdRun {
  readonly allReadyMs: number;
  readonly medianReadyMs: number;
  /** nats-server's out_bytes over the whole herd (/varz), all clients. */
  readonly serverOutBytes: number;
  /** Each sidecar connection's out_bytes (/connz): mean and max. */
  readonly perSidecarBytes: { readonly mean: number; readonly max: number };
}

export interface HerdResults {
  readonly customers: number;
  readonly size: number;
  readonly streamBytes: number;
  readonly snapshotBytes: number;
  readonly replay: HerdRun;
  readonly snapshot: HerdRun;
}

interface Varz {
  readonly out_bytes: number;
}
interface Connz {
  readonly connections: readonly { readonly name?: string; readonly out_bytes: number }[];
}

export async function herdSuite(cfg: Config, env: Env): Promise<HerdResults | undefined> {
  const { log } = env;
  if (cfg.herd <= 0) {
    log("herd skipped (--herd 0)");
    return undefined;
  }
  const { fork, killAll } = roles(env);
  const nats = await NatsServer.start({ monitor: true });
  const monitor = async <T>(path: string): Promise<T> => {
    const res = await fetch(`http://127.0.0.1:${nats.monitorPort}${path}`);
    if (!res.ok) throw new Error(`nats-server monitoring ${path}: HTTP ${res.status}`);
    return (await res.json()) as T;
  };
  try {
    if (nats.monitorPort < 0) throw new Error("nats-server did not report its monitoring port");
    const seed = await fork("seed");
    await seed.call("connect", { url: nats.url });
    await seed.call("templates", { count: cfg.templates, seed: 42, now: Date.now() });
    await seed.call("catalog");
    log(`herd of ${cfg.herd}: seeding ${cfg.customers.toLocaleString("en")} customer documents`);
    await seed.call("documents", { count: cfg.customers, window: cfg.seedWindow });
    const info = await seed.call<{ bytes: number }>("streamInfo");
    const producer = await fork("snapshotter");
    await producer.call("snapshot", { replica: join(env.dir, "herd-snapshotter.db"), natsUrl: nats.url });
    await producer.stop();
    // The snapshot's size as stored: the object store stream holds its chunks.
    const objects = await monitor<{ account_details?: { stream_detail?: { name: string; state: { bytes: number } }[] }[] }>("/jsz?streams=true");
    const snapshotBytes = objects.account_details?.flatMap((a) => a.stream_detail ?? []).find((s) => s.name === "OBJ_PROOFGATE_SNAPSHOTS")?.state.bytes ?? NaN;

    const run = async (snapshotBootstrap: boolean): Promise<HerdRun> => {
      const name = snapshotBootstrap ? "snapshot" : "replay";
      const sidecars = await Promise.all(Array.from({ length: cfg.herd }, () => fork("sidecar")));
      const before = await monitor<Varz>("/varz");
      const t = performance.now();
      const readyAt: number[] = [];
      await Promise.all(
        sidecars.map(async (sc, i) => {
          await sc.call("start", { replica: join(env.dir, `herd-${name}-${i}.db`), natsUrl: nats.url, snapshotBootstrap });
          await sc.call("ready");
          readyAt.push(performance.now() - t);
        }),
      );
      const allReadyMs = performance.now() - t;
      const after = await monitor<Varz>("/varz");
      const conns = (await monitor<Connz>("/connz?limit=4096")).connections.filter((c) => c.name === "proofgate-sidecar");
      if (conns.length < cfg.herd) throw new Error(`nats-server lists ${conns.length} sidecar connections, expected ${cfg.herd}`);
      await Promise.all(sidecars.map((sc) => sc.stop()));
      const each = conns.map((c) => c.out_bytes);
      const sorted = [...readyAt].sort((a, b) => a - b);
      const r: HerdRun = {
        allReadyMs: round(allReadyMs, 0),
        medianReadyMs: round(sorted[Math.floor(sorted.length / 2)] ?? NaN, 0),
        serverOutBytes: after.out_bytes - before.out_bytes,
        perSidecarBytes: { mean: Math.round(each.reduce((s, x) => s + x, 0) / each.length), max: Math.max(...each) },
      };
      log(`  ${name}: all ${cfg.herd} ready in ${(allReadyMs / 1000).toFixed(2)} s (median ${(r.medianReadyMs / 1000).toFixed(2)} s); nats-server sent ${(r.serverOutBytes / 2 ** 20).toFixed(1)} MiB, ${(r.perSidecarBytes.mean / 2 ** 20).toFixed(2)} MiB per sidecar`);
      return r;
    };
    const replay = await run(false);
    const snapshot = await run(true);
    return { customers: cfg.customers, size: cfg.herd, streamBytes: info.bytes, snapshotBytes, replay, snapshot };
  } finally {
    killAll();
    await nats.dispose();
  }
}
