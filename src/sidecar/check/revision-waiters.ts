/**
 * Checks waiting for the replica to reach a `min_revision`. Few at a time (a caller that just
 * wrote); each resolves true when the revision is applied, false at its deadline.
 */
export class RevisionWaiters {
  private waiters: { revision: number; resolve: (reached: boolean) => void; timer: NodeJS.Timeout }[] = [];

  constructor(private readonly current: () => number) {}

  wait(revision: number, timeoutMs: number): Promise<boolean> {
    if (this.current() >= revision) return Promise.resolve(true);
    if (timeoutMs <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const waiter = {
        revision,
        resolve,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          resolve(this.current() >= revision);
        }, timeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  /** The replica's revision moved. */
  notify(revision: number): void {
    if (this.waiters.length === 0) return;
    const remaining = [];
    for (const w of this.waiters) {
      if (w.revision <= revision) {
        clearTimeout(w.timer);
        w.resolve(true);
      } else {
        remaining.push(w);
      }
    }
    this.waiters = remaining;
  }

  /** Shutdown: everyone gets an answer now. */
  releaseAll(): void {
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.resolve(this.current() >= w.revision);
    }
    this.waiters = [];
  }
}
