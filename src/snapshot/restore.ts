import { rm } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { Counter, type Registry } from "prom-client";
import type { NatsConnection, StreamInfo } from "nats";
import { errorMessage } from "../errors/index.js";
import type { Logger } from "../observability/logger.js";
import { CpuGovernor } from "../sidecar/cpu-quota.js";
import { SCHEMA_VERSION, type Replica } from "../sidecar/replica/replica.js";
import { downloadSnapshot, listSnapshots, type StoredSnapshot } from "./store.js";
import { streamIdentity } from "../replication/streams.js";

/**
 * A cold replica's first step: restore the newest usable snapshot, so the follower resumes the
 * state stream from the snapshot's revision instead of replaying it all. Anything wrong with a
 * snapshot (another stream incarnation or schema, a revision the stream has not reached, a size
 * or checksum that does not match, a file SQLite cannot read) refuses it, with the reason
 * logged; with none left, the follower replays the stream as it would without snapshots.
 * Readiness is untouched: the follower still has to reach the stream's head.
 */
export class SnapshotRestorer {
  private readonly results: Counter<"result">;
  /** Under a CPU quota the download waits for room, as the follower's fetches do. */
  private readonly governor = CpuGovernor.forThisProcess();
  /** Snapshots refused once are not downloaded again by this process. */
  private readonly refused = new Set<string>();

  constructor(
    private readonly replica: Replica,
    registry: Registry,
    private readonly logger: Logger,
  ) {
    this.results = new Counter({
      name: "proofgate_sidecar_snapshot_restores_total",
      help: "Snapshot restores of a cold replica, by result (restored, refused, none)",
      labelNames: ["result"],
      registers: [registry],
    });
  }

  /** Restores into the replica if it is empty and a usable snapshot exists; true if it did. */
  async restore(nc: NatsConnection, stream: StreamInfo): Promise<boolean> {
    if (this.replica.revision > 0) return false;
    let candidates: StoredSnapshot[];
    try {
      candidates = await listSnapshots(await nc.jetstreamManager({ checkAPI: false }), nc.jetstream());
    } catch (err) {
      this.logger.warn({ err: errorMessage(err) }, "cannot list replica snapshots; replaying the state stream");
      return false;
    }
    for (const s of candidates) {
      if (this.refused.has(s.info.nuid)) continue;
      const problem =
        s.meta.streamCreated !== streamIdentity(stream)
          ? "it is of another state stream incarnation"
          : s.meta.schemaVersion !== SCHEMA_VERSION
            ? `it has replica schema ${s.meta.schemaVersion}, this sidecar ${SCHEMA_VERSION}`
            : s.meta.revision > stream.state.last_seq
              ? `its revision ${s.meta.revision} is ahead of the stream (${stream.state.last_seq})`
              : undefined;
      if (problem) {
        this.refuse(s, problem);
        continue;
      }
      const file = `${this.replica.path}.snapshot`;
      const started = performance.now();
      try {
        await rm(file, { force: true });
        const governor = this.governor;
        const { bytes } = await downloadSnapshot(nc.jetstream(), s, file, governor && (() => governor.admit()));
        const downloaded = performance.now();
        const state = await this.replica.restore(file);
        if (state.revision !== s.meta.revision || state.streamCreated !== s.meta.streamCreated) {
          await this.replica.reset();
          throw new Error(`its file says revision ${state.revision} of stream ${state.streamCreated ?? "(none)"}, its metadata revision ${s.meta.revision}`);
        }
        this.results.labels("restored").inc();
        this.logger.info(
          {
            snapshot: s.name,
            revision: state.revision,
            bytes,
            downloadSeconds: round((downloaded - started) / 1000),
            restoreSeconds: round((performance.now() - downloaded) / 1000),
          },
          "restored the replica from a snapshot; following the state stream from its revision",
        );
        return true;
      } catch (err) {
        this.refuse(s, errorMessage(err));
      } finally {
        await rm(file, { force: true });
      }
    }
    if (candidates.length === 0) this.results.labels("none").inc();
    return false;
  }

  private refuse(s: StoredSnapshot, why: string): void {
    this.refused.add(s.info.nuid);
    this.results.labels("refused").inc();
    this.logger.warn({ snapshot: s.name, revision: s.meta.revision, reason: why }, "replica snapshot refused; trying an older one or replaying the state stream");
  }
}

const round = (x: number): number => Math.round(x * 100) / 100;
