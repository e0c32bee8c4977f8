/**
 * How current the replica is. The replica is *caught up* at time t when, at t, it had applied
 * everything the stream held: confirmed by a writer heartbeat whose head revision the replica
 * has reached, or by NATS itself (the consumer had nothing pending). That decides readiness.
 *
 * It is *current* only as of the writer's word: a stream with nothing pending says nothing about
 * changes a dead or partitioned writer could not publish. So currency is never dated later than
 * the last writer heartbeat received; answers are stale when it is older than the catalog's
 * coherency window (a SIGKILLed writer turns every answer stale after the window), or when there
 * never was one since the replica was (re)built.
 *
 * Times here are monotonic milliseconds (`performance.now()`), never the wall clock: a clock
 * step must not make a replica look fresh or stale.
 */
export class Freshness {
  /** The last moment the replica was known current (never after the last heartbeat); undefined until the first. */
  private lastCurrentAt: number | undefined;
  /** The last moment the replica was known caught up with the stream (for readiness). */
  private lastCaughtUpAt: number | undefined;
  private headRevision = 0;
  private lastHeartbeatAt: number | undefined;
  /** Heartbeats not yet reached, oldest first: when the replica applies `head`, it was current as of `at`. */
  private pending: { head: number; at: number }[] = [];

  get head(): number {
    return this.headRevision;
  }

  /** Caught up with the stream at least once since the replica was (re)built. */
  get everCaughtUp(): boolean {
    return this.lastCaughtUpAt !== undefined;
  }

  /**
   * The writer is republishing a full snapshot (the stream was recreated or replaced): reaching
   * its head does not make a replica complete, so nothing is confirmed until it is through.
   */
  private writerSnapshotting = false;

  get snapshotInProgress(): boolean {
    return this.writerSnapshotting;
  }

  /** A writer heartbeat received at `at`. */
  heartbeat(head: number, at: number, applied: number, snapshotInProgress = false): void {
    this.lastHeartbeatAt = at;
    this.headRevision = head;
    this.writerSnapshotting = snapshotInProgress;
    if (snapshotInProgress) {
      this.pending = [];
      return;
    }
    // A writer behind the replica speaks of another stream (recreated): it confirms nothing.
    if (head < applied) return;
    this.expect(head, at, applied);
  }

  /** At `at`, the stream's head was `head`: once the replica reaches it, it was current as of `at`. */
  expect(head: number, at: number, applied: number): void {
    if (head <= applied) {
      this.confirm(at);
      return;
    }
    this.pending.push({ head, at });
    // Bounded: when far behind, only the newest matter.
    if (this.pending.length > 64) this.pending.splice(0, this.pending.length - 64);
  }

  /** The replica applied up to `applied`: heartbeats it has now reached date its currency. */
  applied(applied: number): void {
    if (this.pending.length === 0) return;
    let reachedAt: number | undefined;
    this.pending = this.pending.filter((p) => {
      if (p.head > applied) return true;
      if (reachedAt === undefined || p.at > reachedAt) reachedAt = p.at;
      return false;
    });
    if (reachedAt !== undefined) this.confirm(reachedAt);
  }

  /**
   * NATS confirmed, for a question asked at `at`, that nothing more was pending. Heartbeats
   * received before `at` are settled too (their missing revisions were purged). Returns the
   * highest such head, so the caller can move the revision up to it.
   */
  confirmedAt(at: number): number {
    let settled = 0;
    this.pending = this.pending.filter((p) => {
      if (p.at > at) return true;
      if (p.head > settled) settled = p.head;
      return false;
    });
    this.confirm(at);
    return settled;
  }

  /**
   * The replica was rebuilt from scratch (or not yet checked against the stream): nothing about
   * it is known current, and only heartbeats from now on can make it so.
   */
  reset(): void {
    this.lastCurrentAt = undefined;
    this.lastCaughtUpAt = undefined;
    this.lastHeartbeatAt = undefined;
    this.pending = [];
  }

  /** Known current, by the writer's word, at least once since the last reset. */
  get everCurrent(): boolean {
    return this.lastCurrentAt !== undefined;
  }

  /**
   * While on, the replica answering is a previous one, kept serving while a new one is rebuilt
   * beside it: what is confirmed here is the new one's progress, and every answer is stale.
   */
  servePrevious(on: boolean): void {
    this.previous = on;
  }

  private previous = false;

  /**
   * While on, the replica file has not passed its structural check since the sidecar opened it:
   * a lookup through a damaged page can find nothing without SQLite noticing, so no answer from it
   * is fresh (a warm start still answers at once, stale).
   */
  verifying(on: boolean): void {
    this.unverified = on;
  }

  private unverified = false;

  /** Hot path: one subtraction. */
  isStale(now: number, windowMs: number): boolean {
    return this.previous || this.unverified || this.lastCurrentAt === undefined || now - this.lastCurrentAt > windowMs;
  }

  /** Milliseconds since the replica answering was last known current (Infinity if never). */
  ageMs(now: number): number {
    return this.previous || this.unverified || this.lastCurrentAt === undefined ? Infinity : Math.max(0, now - this.lastCurrentAt);
  }

  /** Milliseconds since the replica was last known caught up with the stream (Infinity if never). */
  caughtUpAgeMs(now: number): number {
    return this.lastCaughtUpAt === undefined ? Infinity : Math.max(0, now - this.lastCaughtUpAt);
  }

  /** Milliseconds since the last heartbeat (Infinity if none). */
  heartbeatAgeMs(now: number): number {
    return this.lastHeartbeatAt === undefined ? Infinity : Math.max(0, now - this.lastHeartbeatAt);
  }

  lagRevisions(applied: number): number {
    return Math.max(0, this.headRevision - applied);
  }

  /** A heartbeat says the writer is behind the replica: the stream may have been recreated. */
  headBehind(applied: number): boolean {
    return this.headRevision > 0 && this.headRevision < applied;
  }

  /** After a rebuild the old head means nothing. */
  forgetHead(): void {
    this.headRevision = 0;
    this.pending = [];
  }

  private confirm(at: number): void {
    if (this.writerSnapshotting) return;
    if (this.lastCaughtUpAt === undefined || at > this.lastCaughtUpAt) this.lastCaughtUpAt = at;
    if (this.lastHeartbeatAt === undefined) return;
    const current = Math.min(at, this.lastHeartbeatAt);
    if (this.lastCurrentAt === undefined || current > this.lastCurrentAt) this.lastCurrentAt = current;
  }
}
