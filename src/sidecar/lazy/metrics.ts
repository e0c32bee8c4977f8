import { Counter, Gauge, type Registry } from "prom-client";
import type { LazyStore } from "./store.js";

/** The lazy mode's own metrics, beside the sidecar's. */
export class LazyMetrics {
  /** Misses by result: fetched, offline (NATS unreachable), busy (too many fetches in flight), error (no answer in time), stream changed. */
  readonly misses: Counter<"result">;

  constructor(registry: Registry, store: LazyStore) {
    const registers = [registry];
    this.misses = new Counter({ name: "proofgate_sidecar_lazy_misses_total", help: "Checks of a customer the lazy store did not keep, by result of fetching it.", labelNames: ["result"], registers });
    new Gauge({
      name: "proofgate_sidecar_lazy_customers",
      help: "Customers kept by the lazy store.",
      registers,
      collect() {
        this.set(store.size);
      },
    });
    new Gauge({
      name: "proofgate_sidecar_lazy_bytes",
      help: "Bytes counted against --lazy-max-bytes (document bytes plus a fixed overhead per customer).",
      registers,
      collect() {
        this.set(store.bytes);
      },
    });
    new Counter({
      name: "proofgate_sidecar_lazy_evictions_total",
      help: "Customers evicted from the lazy store (least recently checked first).",
      registers,
      collect() {
        this.reset();
        this.inc(store.evictions);
      },
    });
  }
}
