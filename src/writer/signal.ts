/**
 * Wakes a background loop. A kick while the loop is busy is remembered, so the loop never
 * sleeps past work that arrived during its last round.
 */
export class Signal {
  private pending = false;
  private waiter: (() => void) | undefined;

  kick(): void {
    this.pending = true;
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Resolves at the next kick (at once if one is pending), or after `timeoutMs`. */
  wait(timeoutMs?: number): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        if (timer) clearTimeout(timer);
        this.pending = false;
        resolve();
      };
      this.waiter = done;
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          if (this.waiter === done) this.waiter = undefined;
          resolve();
        }, timeoutMs);
        timer.unref();
      }
    });
  }
}

/** Retry delay: 100 ms doubling to 5 s. */
export function backoffMs(failures: number): number {
  return Math.min(5_000, 100 * 2 ** Math.min(failures, 6));
}

/** Sleeps `ms`, or less if `signal` aborts first (never rejects). */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref();
    signal?.addEventListener("abort", done, { once: true });
  });
}
