import { performance } from "node:perf_hooks";
import { errorMessage } from "../../errors/index.js";
import type { Logger } from "../../observability/logger.js";
import { decodeStateRecord, type StateRecordView } from "../../replication/state-record.js";
import type { ApplyCounts, Replica } from "../replica/replica.js";

/** Records per transaction, at most. */
const BATCH = 128;
/** Batches handed to the writer thread and not yet committed, at most. */
const MAX_IN_FLIGHT = 4;
/** The backlog at or below which more messages are fetched. */
export const LOW_WATER = 1_000;

/** A received message waiting to be applied. */
interface Queued {
  readonly seq: number;
  readonly subject: string;
  readonly data: Uint8Array;
  /** Messages the consumer still had pending when this one was delivered. */
  readonly pending: number;
  readonly at: number;
}

export interface PipelineEvents {
  /** A batch committed; `caughtUpAt` when its last message came with nothing pending behind it. */
  committed(revision: number, counts: ApplyCounts, caughtUpAt: number | undefined): void;
  /** A batch could not be committed: what was queued is dropped, read again from `replica.revision`. */
  failed(err: unknown): void;
}

/**
 * Received messages into one replica, in order: parses queued records into batches of at most
 * BATCH and hands them to the replica's writer thread, at most MAX_IN_FLIGHT at a time (the next
 * goes out as one commits). The event loop only parses; SQLite's inserts, commits and
 * checkpoints happen on the thread. A pipeline serves one replica incarnation: a rebuild stops it
 * and starts another, and commits of a stopped pipeline are ignored.
 */
export class ApplyPipeline {
  private queue: Queued[] = [];
  private head = 0;
  private drainScheduled = false;
  private roomWaiters: (() => void)[] = [];
  /** Batches sent to the writer thread, not yet committed. */
  private applying = 0;
  private stopped = false;
  /** Highest stream sequence received (applied or queued). */
  private received: number;
  private receivedAt = 0;
  /** NATS confirmed at `at` that nothing was pending beyond `seq`: reported once `seq` is applied. */
  private confirmation: { readonly seq: number; readonly at: number } | undefined;

  constructor(
    readonly replica: Replica,
    private readonly logger: Logger,
    private readonly events: PipelineEvents,
  ) {
    this.received = replica.revision;
  }

  get lastReceived(): number {
    return this.received;
  }

  /** When (monotonic ms) the last new message arrived; 0 if none. */
  get lastReceiveAt(): number {
    return this.receivedAt;
  }

  get backlog(): number {
    return this.queue.length - this.head;
  }

  /** Queues a message; redeliveries (at or below what was received) are ignored. */
  receive(seq: number, subject: string, data: Uint8Array, pending: number): boolean {
    if (this.stopped || seq <= this.received) return false;
    this.received = seq;
    const at = performance.now();
    this.receivedAt = at;
    this.queue.push({ seq, subject, data, pending, at });
    this.scheduleDrain();
    return true;
  }

  /** Reports `at` as a caught-up moment with the commit that applies `seq`. */
  confirmWhenApplied(seq: number, at: number): void {
    this.confirmation = { seq, at };
  }

  /** Resolves once the backlog is at most LOW_WATER, or the pipeline stops, or `signal` aborts. */
  async room(signal: AbortSignal): Promise<void> {
    if (this.backlog <= LOW_WATER || this.stopped || signal.aborted) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        signal.removeEventListener("abort", done);
        resolve();
      };
      this.roomWaiters.push(done);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  /** Ends this pipeline: nothing more is applied and later commits are not reported. */
  stop(): void {
    this.stopped = true;
    this.dropQueued();
  }

  private dropQueued(): void {
    this.confirmation = undefined;
    this.queue = [];
    this.head = 0;
    this.releaseRoom();
  }

  private releaseRoom(): void {
    for (const resolve of this.roomWaiters.splice(0)) resolve();
  }

  private scheduleDrain(): void {
    if (this.drainScheduled || this.applying >= MAX_IN_FLIGHT || this.backlog === 0) return;
    this.drainScheduled = true;
    setImmediate(this.drain);
  }

  private readonly drain = (): void => {
    this.drainScheduled = false;
    if (this.stopped) return;
    const queue = this.queue;
    while (this.head < queue.length && this.applying < MAX_IN_FLIGHT) {
      const batch: { seq: number; record: StateRecordView }[] = [];
      let caughtUpAt: number | undefined;
      let last = 0;
      while (this.head < queue.length && batch.length < BATCH) {
        const q = queue[this.head++];
        if (!q) break;
        const record = decodeStateRecord(q.subject, q.data);
        if (record.kind === "invalid") this.logger.error({ seq: q.seq, problem: record.problem }, "skipping an invalid state record");
        batch.push({ seq: q.seq, record });
        last = q.seq;
        caughtUpAt = q.pending === 0 ? q.at : undefined;
      }
      this.applying++;
      this.replica.apply(batch, last).then(
        (counts) => this.committed(counts, caughtUpAt),
        (err: unknown) => this.failed(err),
      );
    }
    if (this.head >= queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 4096) {
      this.queue = queue.slice(this.head);
      this.head = 0;
    }
    if (this.backlog <= LOW_WATER) this.releaseRoom();
  };

  private committed(counts: ApplyCounts, caughtUpAt: number | undefined): void {
    this.applying--;
    if (this.stopped) return;
    const revision = this.replica.revision;
    const confirmed = this.confirmation;
    if (confirmed && revision >= confirmed.seq) {
      this.confirmation = undefined;
      caughtUpAt = Math.max(caughtUpAt ?? 0, confirmed.at);
    }
    this.events.committed(revision, counts, caughtUpAt);
    this.scheduleDrain();
    if (this.backlog <= LOW_WATER) this.releaseRoom();
  }

  /**
   * Disk full, an I/O error: nothing after the failed batch is applied either. Drop what is
   * queued; the consumer restarts from the replica's revision.
   */
  private failed(err: unknown): void {
    this.applying--;
    if (this.stopped) return;
    this.logger.error({ err: errorMessage(err), revision: this.replica.revision }, "cannot write the replica; will retry from its revision");
    this.dropQueued();
    this.received = this.replica.revision;
    this.events.failed(err);
  }
}
