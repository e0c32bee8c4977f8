/**
 * A product service using `ProofgateClient`, in its own process: local mode (the sidecar's replica
 * file read in process, uniformly random customers and a hot set) and the same client over gRPC
 * to the sidecar, one call at a time. Each call's latency is timed around the awaited `check`, as
 * an application sees it; checks/s of the local loops is one core's (one thread, nothing else).
 */
import { ProofgateClient } from "#proofgate/client/index.js";
import { CHECK_FEATURES, customerId, rng } from "../data.js";
import { Histogram, type HistogramJson } from "../histogram.js";
import { serve } from "../ipc.js";

export interface ClientRun {
  readonly hist: HistogramJson;
  readonly checks: number;
  readonly checksPerSecond: number;
  /** How many answers came from each source (local, sidecar, fail-policy): local runs must be all local. */
  readonly sources: Record<string, number>;
}

export interface ClientPlan {
  readonly address: string;
  readonly replica: string | false;
  readonly customers: number;
  /** Customers asked about: 0..hotSet-1 when set, else all of them uniformly. */
  readonly hotSet?: number;
  readonly durationMs: number;
  readonly warmupMs: number;
}

export function start(): void {
  serve({
    run: async (p: ClientPlan): Promise<ClientRun> => {
      const client = new ProofgateClient({ address: p.address, replica: p.replica, failPolicy: { default: "throw" }, deadlineMs: 5_000 });
      try {
        const r = rng(7);
        const pool = p.hotSet ?? p.customers;
        // Precomputed queries: the loop measures the client, not the generator.
        const N = 1 << 16;
        const queries = Array.from({ length: N }, () => {
          const feature = CHECK_FEATURES[Math.floor(r() * CHECK_FEATURES.length)] as string;
          const id = pool === p.customers ? Math.floor(r() * p.customers) : Math.floor(r() * pool);
          return { customerId: customerId(id), feature, quantity: feature === "seats" ? 1 + Math.floor(r() * 20) : undefined };
        });
        const hist = new Histogram();
        const sources: Record<string, number> = {};
        let i = 0;
        const loop = async (ms: number, record: boolean): Promise<number> => {
          const t0 = performance.now();
          const end = t0 + ms;
          let n = 0;
          let t = t0;
          while (t < end) {
            const q = queries[i++ & (N - 1)] as (typeof queries)[number];
            const res = await client.check(q);
            const t1 = performance.now();
            if (record) {
              hist.record((t1 - t) * 1e6);
              sources[res.source] = (sources[res.source] ?? 0) + 1;
            }
            t = t1;
            n++;
          }
          return (n / (t - t0)) * 1000;
        };
        await loop(p.warmupMs, false);
        const rate = await loop(p.durationMs, true);
        return { hist: hist.toJSON(), checks: hist.count, checksPerSecond: rate, sources };
      } finally {
        client.close();
      }
    },
  });
}
