import type { NatsConnection } from "nats";
import { customerToken } from "../../replication/subjects.js";
import { statusName } from "../../policy/decision.js";
import type { CheckResponse } from "../../gen/proofgate/v1/check.js";
import type { Logger } from "../../observability/logger.js";
import type { SidecarMetrics } from "../metrics.js";

/** Core NATS subject of sampled decisions (JSON, one decision per message). */
export const DECISIONS_SUBJECT = "proofgate.decisions";

const MAX_QUEUED = 10_000;
const FLUSH_MS = 250;

interface Entry {
  readonly at: number;
  readonly customerId: string;
  readonly feature: string;
  readonly quantity: number | undefined;
  readonly response: CheckResponse;
}

/**
 * Sampled decisions, published asynchronously: `offer` only pushes onto a bounded queue, a timer
 * publishes. Entries are dropped (and counted) when the queue is full or NATS is not connected:
 * a decision log must never slow or fail a check. Customer ids are published as their token.
 */
export class DecisionLog {
  private queue: Entry[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly encoder = new TextEncoder();

  constructor(
    private readonly sample: number,
    private readonly connection: () => { nc: NatsConnection; connected: boolean } | undefined,
    private readonly metrics: SidecarMetrics,
    private readonly logger: Logger,
  ) {
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  /** `response` is only called for the sampled few. */
  offer(at: number, customerId: string, feature: string, quantity: number | undefined, response: () => CheckResponse): void {
    if (Math.random() >= this.sample) return;
    if (this.queue.length >= MAX_QUEUED) {
      this.metrics.decisionLog.labels("dropped").inc();
      return;
    }
    this.queue.push({ at, customerId, feature, quantity, response: response() });
  }

  flush(): void {
    if (this.queue.length === 0) return;
    const entries = this.queue;
    this.queue = [];
    const conn = this.connection();
    if (!conn?.connected || conn.nc.isClosed()) {
      this.metrics.decisionLog.labels("dropped").inc(entries.length);
      return;
    }
    try {
      for (const e of entries) {
        const r = e.response;
        const body = {
          at: new Date(e.at).toISOString(),
          customer_token: customerToken(e.customerId),
          feature: e.feature,
          ...(e.quantity === undefined ? {} : { quantity: e.quantity }),
          allowed: r.allowed,
          status: statusName(r.status),
          reason: r.reason,
          revision: r.revision,
          stale: r.stale,
        };
        conn.nc.publish(DECISIONS_SUBJECT, this.encoder.encode(JSON.stringify(body)));
      }
      this.metrics.decisionLog.labels("published").inc(entries.length);
    } catch (err) {
      this.metrics.decisionLog.labels("dropped").inc(entries.length);
      this.logger.debug({ err }, "decision log publish failed");
    }
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
