import { rm } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { Counter, Gauge, type Registry } from "prom-client";
import { errorMessage } from "../errors/index.js";
import { createRegistry } from "../observability/metrics.js";
import type { Logger } from "../observability/logger.js";
import type { NatsOptions } from "../replication/connection.js";
import { Follower } from "../sidecar/follow/follower.js";
import { Freshness } from "../sidecar/follow/freshness.js";
import { SidecarMetrics } from "../sidecar/metrics.js";
import { Replica, SCHEMA_VERSION } from "../sidecar/replica/replica.js";
import { SnapshotRestorer } from "./restore.js";
import { fileDigest, putSnapshot } from "./store.js";

export interface SnapshotProducerOptions extends NatsOptions {
  /** The producer's own replica file. */
  readonly replica: string;
  /** How often a snapshot is written, if the replica moved since the last one. */
  readonly intervalMs: number;
  /** Snapshots kept in the bucket. */
  readonly keep: number;
  /** Replicas of the bucket's stream (3 in a NATS cluster). */
  readonly streamReplicas: number;
}

/**
 * Writes replica snapshots into the Object Store. It keeps a replica of its own, built exactly as
 * a sidecar builds one (the same follower and replica code, restored from the newest snapshot
 * when cold), so a snapshot is a replica a sidecar could have built, at that replica's applied
 * revision; at each interval, if that revision moved and the replica is current, it copies the
 * replica (`VACUUM INTO`, on the replica's writer thread) and puts the copy.
 */
export class SnapshotProducer {
  private readonly replica: Replica;
  private readonly follower: Follower;
  private timer: NodeJS.Timeout | undefined;
  private lastRevision = 0;
  private running: Promise<void> | undefined;
  private readonly written: Counter<"result">;
  private readonly revisionGauge: Gauge;

  constructor(
    private readonly options: SnapshotProducerOptions,
    registry: Registry,
    private readonly logger: Logger,
  ) {
    this.replica = Replica.open(options.replica, logger.child({ component: "snapshot-replica" }));
    const freshness = new Freshness();
    // The follower's own metrics are a sidecar's; they stay out of the writer's registry.
    const own = createRegistry();
    const metrics = new SidecarMetrics(own, {
      revision: () => this.replica.revision,
      head: () => freshness.head,
      ageSeconds: () => freshness.ageMs(performance.now()) / 1000,
      heartbeatAgeSeconds: () => freshness.heartbeatAgeMs(performance.now()) / 1000,
      stale: () => freshness.isStale(performance.now(), this.replica.catalog.coherencyWindowMs),
      ready: () => this.follower.ready,
      connected: () => this.follower.connected,
    });
    const restorer = new SnapshotRestorer(this.replica, own, logger.child({ component: "snapshot-restore" }));
    this.follower = new Follower(this.replica, freshness, metrics, logger.child({ component: "snapshot-follower" }), {
      natsUrl: options.natsUrl,
      natsCreds: options.natsCreds,
      natsUser: options.natsUser,
      natsPassword: options.natsPassword,
      natsToken: options.natsToken,
      offlineReadyAfterMs: 2_000,
      coherencyWindowMs: () => this.replica.catalog.coherencyWindowMs,
      onRevision: () => undefined,
      onReady: () => undefined,
      bootstrap: (nc, info) => restorer.restore(nc, info),
    });
    this.written = new Counter({
      name: "proofgate_writer_replica_snapshots_total",
      help: "Replica snapshots put into the Object Store, by result (written, failed)",
      labelNames: ["result"],
      registers: [registry],
    });
    this.revisionGauge = new Gauge({ name: "proofgate_writer_replica_snapshot_revision", help: "Revision of the last replica snapshot written", registers: [registry] });
  }

  start(): void {
    this.follower.start();
    const tick = (): void => {
      this.timer = setTimeout(() => {
        void this.snapshotNow().finally(tick);
      }, this.options.intervalMs);
      this.timer.unref();
    };
    tick();
  }

  /** True once its replica caught up with the stream (snapshots are written only then). */
  get ready(): boolean {
    return this.follower.ready;
  }

  /** The producer's replica revision (what the next snapshot would hold). */
  get revision(): number {
    return this.replica.revision;
  }

  /**
   * Writes a snapshot now if the replica is current and moved since the last one; resolves with
   * its revision, or undefined if none was written.
   */
  snapshotNow(): Promise<number | undefined> {
    this.running ??= this.write().finally(() => (this.running = undefined));
    return this.running.then(() => (this.lastRevision > 0 ? this.lastRevision : undefined));
  }

  private async write(): Promise<void> {
    const nc = this.follower.connection;
    if (!this.follower.ready || !this.follower.connected || !nc || this.replica.revision <= this.lastRevision) return;
    const file = `${this.options.replica}.snapshot-out`;
    const started = performance.now();
    try {
      await rm(file, { force: true });
      const state = await this.replica.snapshotTo(file);
      if (state.streamCreated === undefined) return;
      const { sha256, size } = await fileDigest(file);
      await putSnapshot(nc.jetstream(), file, { revision: state.revision, streamCreated: state.streamCreated, schemaVersion: SCHEMA_VERSION, sha256, size }, this.options.keep, this.options.streamReplicas);
      this.lastRevision = state.revision;
      this.revisionGauge.set(state.revision);
      this.written.labels("written").inc();
      this.logger.info({ revision: state.revision, bytes: size, seconds: Math.round(performance.now() - started) / 1000 }, "replica snapshot written");
    } catch (err) {
      this.written.labels("failed").inc();
      this.logger.warn({ err: errorMessage(err) }, "cannot write a replica snapshot; trying again at the next interval");
    } finally {
      await rm(file, { force: true });
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    await this.follower.close();
    await this.replica.close();
  }
}
