import { Registry, collectDefaultMetrics } from "prom-client";

/** prom-client names these gauges `_total`, which Prometheus reserves for counters (promtool rejects them). */
const MISNAMED_DEFAULTS = ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"];

/**
 * Each service owns a registry (not prom-client's global one) so several can share a process in
 * tests. No default labels: metric names already say the service (`proofgate_writer_…`), and a
 * `service` label would collide with the one the Prometheus Operator sets on every target.
 */
export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(name);
  return registry;
}
