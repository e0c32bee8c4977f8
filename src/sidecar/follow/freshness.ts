/**
 * How current the replica is. The replica is *current* at time t when, at t, it had applied
 * everything the stream held: confirmed either by a writer heartbeat whose head revision the
 * replica has reached, or by NATS itself (the consumer had nothing pending). Answers are stale
 * when the last such moment is older than the catalog's coherency window, or when there never
 * was one since the replica was (re)built.
 *
 * Times here are monotonic milliseconds (`performance.now()`), never the wall clock: a clock
 * step must not make a replica look fresh or stale.
 */
export class Freshness {
  /** The last moment the replica was known current; undefined until the first confirmation. */
  private lastCurrentAt: number | undefined;
  private headRevision = 0;
  private lastHeartbeatAt: number | undefined;
  /** Heartbeats not yet reached, oldest first: when the replica applies `head`, it was current as of `at`. */
  private pending: { head: number; at: number }[] = [];

  get head(): number {
    return this.headRevision;
  }

  get everCurrent(): boolean {
    return this.lastCurrentAt !== undefined;
  }

  /** A writer heartbeat received at `at`. */
  heartbeat(head: number, at: number, applied: number): void {
    this.lastHeartbeatAt = at;
    this.headRevision = head;
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

  /** The replica was rebuilt from scratch: nothing about it is known current. */
  reset(): void {
    this.lastCurrentAt = undefined;
    this.pending = [];
  }

  /** Hot path: one subtraction. */
  isStale(now: number, windowMs: number): boolean {
    return this.lastCurrentAt === undefined || now - this.lastCurrentAt > windowMs;
  }

  /** Milliseconds since the replica was last known current (Infinity if never). */
  ageMs(now: number): number {
    return this.lastCurrentAt === undefined ? Infinity : Math.max(0, now - this.lastCurrentAt);
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
    if (this.lastCurrentAt === undefined || at > this.lastCurrentAt) this.lastCurrentAt = at;
  }
}
