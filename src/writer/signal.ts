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
