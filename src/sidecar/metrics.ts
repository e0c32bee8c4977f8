import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { AccessStatus } from "../gen/proofgate/v1/check.js";
import { statusName } from "../policy/decision.js";

export interface SidecarMetricsSource {
  readonly revision: () => number;
  readonly head: () => number;
  readonly ageSeconds: () => number;
  readonly heartbeatAgeSeconds: () => number;
  readonly stale: () => boolean;
  readonly ready: () => boolean;
  readonly connected: () => boolean;
}

/**
 * The sidecar's Prometheus metrics. Decisions by status are counted in a plain array and handed to
 * prom-client when it collects (a labelled counter's inc validates and hashes its labels every
 * time: measurable at one per answer).
 */
export class SidecarMetrics {
  readonly checkDuration: Histogram<"method">;
  private readonly decisionsByStatus: Counter.Internal[] = [];
  /** Decisions by status since the last collection. */
  private readonly decidedSince = new Float64Array(32);
  readonly decisions: Counter<"status">;
  readonly staleAnswers: Counter;
  readonly minRevisionTimeouts: Counter;
  readonly records: Counter<"kind">;
  readonly rebuilds: Counter<"reason">;
  readonly consumerRestarts: Counter<"reason">;
  readonly bootstrapRemaining: Gauge;
  readonly bootstrapProgress: Gauge;
  readonly decisionLog: Counter<"outcome">;
  private readonly observeCheck: (v: number) => void;
  private readonly observeBatch: (v: number) => void;
  private readonly observeList: (v: number) => void;

  constructor(registry: Registry, source: SidecarMetricsSource) {
    const registers = [registry];
    this.checkDuration = new Histogram({
      name: "proofgate_sidecar_check_duration_seconds",
      help: "Time to answer a CheckService call inside the sidecar (excludes gRPC transport and min_revision waits).",
      labelNames: ["method"],
      buckets: [0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1],
      registers,
    });
    const check = this.checkDuration.labels("Check");
    const batch = this.checkDuration.labels("CheckBatch");
    const list = this.checkDuration.labels("ListEntitlements");
    this.observeCheck = (v) => check.observe(v);
    this.observeBatch = (v) => batch.observe(v);
    this.observeList = (v) => list.observe(v);
    const since = this.decidedSince;
    const byStatus = this.decisionsByStatus;
    this.decisions = new Counter({
      name: "proofgate_sidecar_decisions_total",
      help: "Decisions answered, by status.",
      labelNames: ["status"],
      registers,
      collect: () => {
        for (let s = 0; s < since.length; s++) {
          const n = since[s] as number;
          if (n === 0) continue;
          since[s] = 0;
          byStatus[s]?.inc(n);
        }
      },
    });
    for (const value of Object.values(AccessStatus)) {
      if (typeof value === "number" && value !== AccessStatus.UNRECOGNIZED) this.decisionsByStatus[value] = this.decisions.labels(statusName(value));
    }
    this.staleAnswers = new Counter({ name: "proofgate_sidecar_stale_answers_total", help: "Answers marked stale = true.", registers });
    this.minRevisionTimeouts = new Counter({
      name: "proofgate_sidecar_min_revision_timeouts_total",
      help: "Checks whose min_revision was not reached within min-revision-wait.",
      registers,
    });
    this.records = new Counter({ name: "proofgate_sidecar_records_applied_total", help: "State records applied, by kind (document, erased, catalog, invalid).", labelNames: ["kind"], registers });
    this.rebuilds = new Counter({ name: "proofgate_sidecar_replica_rebuilds_total", help: "Replica rebuilds from scratch, by reason.", labelNames: ["reason"], registers });
    this.consumerRestarts = new Counter({ name: "proofgate_sidecar_consumer_restarts_total", help: "Stream consumer restarts by the sidecar's watchdog, by reason.", labelNames: ["reason"], registers });
    this.bootstrapRemaining = new Gauge({ name: "proofgate_sidecar_bootstrap_remaining_messages", help: "Messages left to read before the initial sync completes (0 once done).", registers });
    this.bootstrapProgress = new Gauge({ name: "proofgate_sidecar_bootstrap_progress_ratio", help: "Initial sync progress, 0 to 1.", registers });
    this.decisionLog = new Counter({ name: "proofgate_sidecar_decision_log_total", help: "Sampled decisions: published or dropped.", labelNames: ["outcome"], registers });
    const gauge = (name: string, help: string, read: () => number): void => {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    };
    gauge("proofgate_sidecar_applied_revision", "The replica's applied revision (PROOFGATE_STATE sequence).", source.revision);
    gauge("proofgate_sidecar_head_revision", "The writer's head revision from its latest heartbeat.", source.head);
    gauge("proofgate_sidecar_lag_revisions", "Revisions the replica is behind the latest heartbeat.", () => Math.max(0, source.head() - source.revision()));
    gauge("proofgate_sidecar_lag_seconds", "Seconds since the replica was last known current (-1 if never).", () => finiteOr(source.ageSeconds(), -1));
    gauge("proofgate_sidecar_heartbeat_age_seconds", "Seconds since the last writer heartbeat (-1 if none).", () => finiteOr(source.heartbeatAgeSeconds(), -1));
    gauge("proofgate_sidecar_stale", "1 when answers are currently marked stale.", () => (source.stale() ? 1 : 0));
    gauge("proofgate_sidecar_ready", "1 once the initial sync has caught up.", () => (source.ready() ? 1 : 0));
    gauge("proofgate_sidecar_nats_connected", "1 while connected to NATS.", () => (source.connected() ? 1 : 0));
  }

  decided(status: AccessStatus): void {
    const i: number = status;
    if (i >= 0 && i < this.decidedSince.length) this.decidedSince[i] = (this.decidedSince[i] as number) + 1;
  }

  checkTook(seconds: number): void {
    this.observeCheck(seconds);
  }

  batchTook(seconds: number): void {
    this.observeBatch(seconds);
  }

  listTook(seconds: number): void {
    this.observeList(seconds);
  }
}

function finiteOr(v: number, fallback: number): number {
  return Number.isFinite(v) ? v : fallback;
}
