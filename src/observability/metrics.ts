import { Registry, collectDefaultMetrics } from "prom-client";

/** Each service owns a registry (not prom-client's global one) so several can share a process in tests. */
export function createRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry });
  return registry;
}
