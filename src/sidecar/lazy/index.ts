import type { Registry } from "prom-client";
import type { Logger } from "../../observability/logger.js";
import type { Freshness } from "../follow/freshness.js";
import type { SidecarMetrics } from "../metrics.js";
import type { MissLoader } from "../check/service.js";
import { FETCH_TIMEOUT_MS, LazyFollower, type LazyFollowerOptions } from "./follower.js";
import { LazyMetrics } from "./metrics.js";
import { LazyStore, type LazyBounds } from "./store.js";

export { LazyStore, ROW_OVERHEAD_BYTES } from "./store.js";

/** The lazy mode's parts, as `startSidecar` uses them. */
export interface Lazy {
  readonly store: LazyStore;
  readonly follower: LazyFollower;
  readonly misses: MissLoader;
}

export function openLazy(
  path: string,
  bounds: LazyBounds,
  freshness: Freshness,
  metrics: SidecarMetrics,
  registry: Registry,
  logger: Logger,
  options: LazyFollowerOptions,
): Lazy {
  const store = LazyStore.open(path, bounds, logger.child({ component: "lazy-store" }));
  const lazyMetrics = new LazyMetrics(registry, store);
  const follower = new LazyFollower(store, freshness, metrics, lazyMetrics, logger.child({ component: "lazy-follower" }), options);
  const misses: MissLoader = {
    holds: (customerId) => store.holds(customerId),
    load: async (customerIds, timeoutMs) => {
      const wanted = customerIds.filter((id) => !store.holds(id));
      if (wanted.length === 0) return undefined;
      const connected = follower.connected;
      const fetched = await Promise.all(wanted.map((id) => follower.fetch(id, Math.min(timeoutMs, FETCH_TIMEOUT_MS))));
      const failed = fetched.filter((ok) => !ok).length;
      if (failed === 0) return undefined;
      const who = wanted.length === 1 ? "the customer is" : `${failed} of the customers are`;
      return connected
        ? `${who} not cached by this lazy sidecar and NATS did not answer in time`
        : `${who} not cached by this lazy sidecar and NATS is unreachable`;
    },
  };
  return { store, follower, misses };
}
