import { performance } from "node:perf_hooks";
import type { JetStreamManager } from "nats";
import { isConsumerNotFound, isStreamNotFound } from "../../replication/connection.js";
import { streamIdentity } from "../../replication/streams.js";
import { STATE_STREAM } from "../../replication/subjects.js";
import type { Logger } from "../../observability/logger.js";
import type { ApplyPipeline } from "./apply-pipeline.js";

/** How often, at most, the stream's identity is re-checked while all looks well. */
const STREAM_CHECK_MS = 5_000;

/** What the watchdog watches: one consumer session, cancelled when it ends. */
export interface WatchedSession {
  readonly signal: AbortSignal;
  /** The server-side consumer the ordered consumer runs now. */
  consumerName(): string | undefined;
  /** The pipeline the session feeds. */
  readonly pipeline: ApplyPipeline;
  /** The stream identity the replica follows. */
  readonly stream: string;
}

export interface WatchdogActions {
  /** Restart the consumer (from the replica's revision). */
  restart(reason: string): void;
  /** NATS confirmed at `at` that nothing was pending. */
  settle(at: number): void;
  /** As `settle`, once the replica has applied `seq`. */
  settleOnceApplied(seq: number, at: number): void;
  /** The stream is gone. */
  streamMissing(): void;
}

/** Probe state over one stretch of connectivity: a disconnect starts a new one. */
interface Probes {
  readonly cancel: AbortController;
  running: boolean;
  lastAt: number;
  stalled: number;
  missing: number;
}

/**
 * Ordered consumers recreate themselves after reconnects, but client bugs around server
 * restarts are common, so this watchdog verifies progress through the JetStream API: it asks
 * about the consumer (nothing pending and everything delivered received means the replica is
 * current as of the question; pending with no progress, or a lost consumer, restarts it) and
 * re-checks the stream's identity (a recreated or rewound stream restarts the session).
 * One per connection; `watch` points it at the current session.
 */
export class StreamWatchdog {
  private session: WatchedSession | undefined;
  private probes: Probes = newProbes();
  private checkingStream = false;
  private lastStreamCheckAt = 0;
  private streamCheckWanted = false;

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly actions: WatchdogActions,
    private readonly logger: Logger,
  ) {}

  /** A session started; its stream was checked at `checkedAt`. */
  watch(session: WatchedSession, checkedAt: number): void {
    this.session = session;
    this.lastStreamCheckAt = checkedAt;
    this.forgetProbes();
  }

  /** Across a disconnect, probe answers (or their absence) say nothing about the new connection. */
  forgetProbes(): void {
    this.probes.cancel.abort();
    this.probes = newProbes();
  }

  /** Re-check the stream at the next tick rather than within STREAM_CHECK_MS. */
  wantStreamCheck(): void {
    this.streamCheckWanted = true;
  }

  /** One round; `probe` says whether the consumer should be asked about this time. */
  tick(probe: boolean): void {
    const session = this.session;
    if (!session || session.signal.aborted) return;
    const now = performance.now();
    if (!this.checkingStream && (this.streamCheckWanted || now - this.lastStreamCheckAt > STREAM_CHECK_MS)) void this.checkStream(session);
    if (probe && !this.probes.running) void this.probe(session, this.probes);
  }

  /** Detects a recreated or rewound stream while following it. */
  private async checkStream(session: WatchedSession): Promise<void> {
    this.checkingStream = true;
    this.streamCheckWanted = false;
    try {
      const info = await this.jsm.streams.info(STATE_STREAM);
      this.lastStreamCheckAt = performance.now();
      if (session.signal.aborted) return;
      if (streamIdentity(info) !== session.stream || info.state.last_seq < session.pipeline.replica.revision) this.actions.restart("stream changed");
    } catch (err) {
      if (isStreamNotFound(err) && !session.signal.aborted) {
        this.actions.streamMissing();
        this.actions.restart("stream not found");
      }
    } finally {
      this.checkingStream = false;
    }
  }

  private async probe(session: WatchedSession, probes: Probes): Promise<void> {
    const name = session.consumerName();
    if (!name) return;
    probes.running = true;
    const { pipeline } = session;
    const at = performance.now();
    const receivedBefore = pipeline.lastReceiveAt;
    const stale = (): boolean => session.signal.aborted || probes.cancel.signal.aborted;
    try {
      const ci = await this.jsm.consumers.info(STATE_STREAM, name);
      if (stale()) return;
      probes.missing = 0;
      const received = pipeline.lastReceived;
      const quiet = probes.lastAt > 0 && pipeline.lastReceiveAt === receivedBefore && pipeline.lastReceiveAt < probes.lastAt;
      // The server delivered messages this client never received (in flight, or dropped by the
      // client around a reconnect: with no acks they are not redelivered).
      const missing = ci.delivered.consumer_seq > 0 && ci.delivered.stream_seq > received;
      if (ci.num_pending === 0 && !missing) {
        probes.stalled = 0;
        if (pipeline.replica.revision >= received) this.actions.settle(at);
        else this.actions.settleOnceApplied(received, at);
      } else if (quiet && (missing || ci.num_pending > 0)) {
        this.logger.debug({ pending: ci.num_pending, delivered: ci.delivered.stream_seq, received, probes: probes.stalled + 1 }, "state consumer makes no progress");
        if (++probes.stalled >= 2) this.actions.restart(missing ? "lost messages" : "stalled");
      } else {
        probes.stalled = 0;
      }
      probes.lastAt = at;
    } catch (err) {
      if (stale()) return;
      if (isStreamNotFound(err)) this.actions.restart("stream not found");
      else if (isConsumerNotFound(err)) {
        this.logger.debug({ consumer: name, probes: probes.missing + 1 }, "state consumer not found");
        // Perhaps the stream was recreated (which deletes its consumers): check now, not in 5 s.
        if (!this.checkingStream) void this.checkStream(session);
        if (++probes.missing >= 3) this.actions.restart("consumer lost");
      }
    } finally {
      probes.running = false;
    }
  }
}

function newProbes(): Probes {
  return { cancel: new AbortController(), running: false, lastAt: 0, stalled: 0, missing: 0 };
}
