import { performance } from "node:perf_hooks";
import type { StreamInfo } from "nats";
import type { Logger } from "../../observability/logger.js";
import type { SidecarMetrics } from "../metrics.js";

const PROGRESS_LOG_MS = 2_000;

/**
 * How far a sync (a cold bootstrap, a warm catch-up or a rebuild) has come, from the start of
 * following to the first time the replica caught up: the progress gauges and a log line every
 * PROGRESS_LOG_MS.
 */
export class BootstrapProgress {
  private readonly startedAt = performance.now();
  private lastLogAt = this.startedAt;
  private readonly target: number;
  private readonly total: number;
  private remaining: number;

  constructor(
    info: StreamInfo,
    from: number,
    private readonly metrics: SidecarMetrics,
    private readonly logger: Logger,
  ) {
    this.target = info.state.last_seq;
    this.total = info.state.messages;
    this.remaining = info.state.messages;
    metrics.bootstrapRemaining.set(this.total);
    metrics.bootstrapProgress.set(0);
    logger.info(
      { from, streamLastSeq: this.target, streamMessages: this.total, warm: from > 0 },
      from > 0 ? "catching up with the state stream" : "bootstrapping the replica from the state stream",
    );
  }

  /** A message arrived with `pending` more behind it on the consumer. */
  received(pending: number): void {
    this.remaining = pending;
  }

  /** A batch committed at `revision`. */
  committed(revision: number): void {
    const progress = this.total > 0 ? Math.min(1, Math.max(0, 1 - this.remaining / this.total)) : 1;
    this.metrics.bootstrapRemaining.set(this.remaining);
    this.metrics.bootstrapProgress.set(progress);
    const now = performance.now();
    if (now - this.lastLogAt < PROGRESS_LOG_MS) return;
    this.lastLogAt = now;
    this.logger.info({ revision, target: this.target, remaining: this.remaining, percent: Math.floor(progress * 100) }, "initial sync in progress");
  }

  /** Caught up: ready. */
  complete(revision: number): void {
    const seconds = (performance.now() - this.startedAt) / 1000;
    this.logger.info({ revision, seconds: Math.round(seconds * 10) / 10 }, "initial sync complete; ready");
    this.metrics.bootstrapRemaining.set(0);
    this.metrics.bootstrapProgress.set(1);
  }
}
