import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export type EventOrigin = "nats" | "grpc" | "webhook";
export type EventOutcome = "accepted" | "duplicate" | "rejected";

/** The writer's metrics, on the service registry. Gauges that need the ledger are read at scrape time. */
export interface WriterMetrics {
  readonly events: Counter<"source" | "result">;
  readonly applySeconds: Histogram;
  readonly published: Counter;
  readonly deadLetters: Counter;
  readonly snapshots: Counter;
  readonly unpublishable: Counter;
}

export interface MetricSources {
  readonly outbox: () => { count: number; oldestAtMs: number | undefined };
  readonly headRevision: () => number;
  readonly natsConnected: () => boolean;
  readonly now: () => number;
  /** With several writers: this writer's role and how far its fold of the input stream lags. */
  readonly role?: () => WriterRole;
  readonly inputLag?: () => number;
}

/** leader: publishes; standby: folds and follows, ready to take over; catching_up: folding its way to the input stream's head. */
export type WriterRole = "leader" | "standby" | "catching_up";
const ROLES: readonly WriterRole[] = ["leader", "standby", "catching_up"];

export function createWriterMetrics(registry: Registry, sources: MetricSources): WriterMetrics {
  new Gauge({
    name: "proofgate_writer_outbox_depth",
    help: "Outbox rows committed but not yet published to PROOFGATE_STATE",
    registers: [registry],
    collect() {
      this.set(sources.outbox().count);
    },
  });
  new Gauge({
    name: "proofgate_writer_publish_lag_seconds",
    help: "Age of the oldest unpublished outbox row (0 when the outbox is empty)",
    registers: [registry],
    collect() {
      const oldest = sources.outbox().oldestAtMs;
      this.set(oldest === undefined ? 0 : Math.max(0, sources.now() - oldest) / 1000);
    },
  });
  new Gauge({
    name: "proofgate_writer_head_revision",
    help: "The latest PROOFGATE_STATE sequence this writer knows is published",
    registers: [registry],
    collect() {
      this.set(sources.headRevision());
    },
  });
  new Gauge({
    name: "proofgate_writer_nats_connected",
    help: "1 when the writer is connected to NATS with its streams in place",
    registers: [registry],
    collect() {
      this.set(sources.natsConnected() ? 1 : 0);
    },
  });
  const role = sources.role;
  if (role)
    new Gauge({
      name: "proofgate_writer_role",
      help: "1 for this writer's current role (leader, standby, catching_up), 0 for the others",
      labelNames: ["role"] as const,
      registers: [registry],
      collect() {
        const now = role();
        for (const r of ROLES) this.set({ role: r }, r === now ? 1 : 0);
      },
    });
  const inputLag = sources.inputLag;
  if (inputLag)
    new Gauge({
      name: "proofgate_writer_input_lag_messages",
      help: "Input stream messages known to exist that this writer has not folded into its ledger yet",
      registers: [registry],
      collect() {
        this.set(inputLag());
      },
    });
  return {
    events: new Counter({
      name: "proofgate_writer_events_total",
      help: "Billing events received, by source (nats, grpc, webhook) and result (accepted, duplicate, rejected)",
      labelNames: ["source", "result"] as const,
      registers: [registry],
    }),
    applySeconds: new Histogram({
      name: "proofgate_writer_apply_seconds",
      help: "Time to apply one billing event to the ledger (fold, compare, audit, outbox), before the commit",
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      registers: [registry],
    }),
    published: new Counter({
      name: "proofgate_writer_published_total",
      help: "Messages published to PROOFGATE_STATE",
      registers: [registry],
    }),
    deadLetters: new Counter({
      name: "proofgate_writer_dead_letters_total",
      help: "Events sent to the dead-letter stream",
      registers: [registry],
    }),
    snapshots: new Counter({
      name: "proofgate_writer_snapshots_total",
      help: "Full snapshots republished because the state stream was empty, recreated or written by another ledger",
      registers: [registry],
    }),
    unpublishable: new Counter({
      name: "proofgate_writer_unpublishable_total",
      help: "Outbox rows set aside because they exceed the NATS server's max_payload (their customer's sidecars keep the previous document; lower --max-document-bytes)",
      registers: [registry],
    }),
  };
}
