import { Registry, collectDefaultMetrics } from "prom-client";

/** prom-client names these gauges `_total`, which Prometheus reserves for counters (promtool rejects them). */
const MISNAMED_DEFAULTS = ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"];

/**
 * How often the event-loop delay behind `nodejs_eventloop_lag_*` is sampled (ms). prom-client's
 * 10 ms wakes an idle process about 200 times a second: in an idle sidecar that was nearly all its
 * CPU (14 ms a second), and under light `Check` load about 18 µs per call. At 100 ms the
 * percentiles still rest on hundreds of samples per scrape.
 */
const EVENT_LOOP_SAMPLE_MS = 100;

/**
 * Each service owns a registry (not prom-client's global one) so several can share a process in
 * tests. No default labels: metric names already say the service (`proofgate_writer_…`), and a
 * `service` label would collide with the one the Prometheus Operator sets on every target.
 */
export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(name);
  return registry;
}
