import { performance } from "node:perf_hooks";
import type { Logger } from "../../observability/logger.js";
import type { Replica } from "../replica/replica.js";
import type { Freshness } from "./freshness.js";

/**
 * Copies into the replica file when the replica was last confirmed current, as wall-clock Unix
 * ms, so a reader in another process (the client's local mode) computes staleness as this sidecar
 * does: stale when never confirmed since the sidecar started, or confirmed longer ago than the
 * catalog's coherency window. Polled (cheap: one subtraction) and written only when it moves,
 * so a burst of confirmations costs one write. A reader may see a confirmation up to one
 * interval late, which can only make it say stale slightly earlier than the sidecar, never later.
 */
export function recordFreshness(replica: Replica, freshness: Freshness, logger: Logger, intervalMs = 50): { stop: () => Promise<void> } {
  /** The recorded confirmation, on the monotonic clock; null: "never"; undefined: nothing recorded yet. */
  let recorded: number | null | undefined;
  let writing: Promise<void> | undefined;
  const tick = (): void => {
    if (writing) return;
    const now = performance.now();
    const age = freshness.ageMs(now);
    const at = Number.isFinite(age) ? now - age : null;
    if (at === recorded || (at !== null && recorded != null && Math.abs(at - recorded) < 1)) return;
    recorded = at;
    writing = replica.recordFreshness(at === null ? undefined : Date.now() - age).then(
      () => {
        writing = undefined;
      },
      (err: unknown) => {
        writing = undefined;
        recorded = undefined;
        logger.warn({ err }, "cannot record freshness in the replica");
      },
    );
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  return {
    stop: async () => {
      clearInterval(timer);
      await writing;
    },
  };
}
