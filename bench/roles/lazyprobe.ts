/**
 * The client of the lazy-mode benchmark: CheckService calls through the generated grpc-js
 * client, one at a time, timed send to answer. `misses` asks about customers one after another
 * (each a first check: a fetch from NATS in lazy mode); `hits` loops over a set already asked
 * about; the same loop against the echo floor gives the transport's own cost.
 */
import * as grpc from "@grpc/grpc-js";
import { CheckRequest, CheckResponse, CheckServiceClient } from "#proofgate/gen/proofgate/v1/check.js";
import { statusName } from "#proofgate/policy/index.js";
import { CHECK_FEATURES, customerId, rng } from "../data.js";
import { Histogram, type HistogramJson } from "../histogram.js";
import { serve } from "../ipc.js";

export interface ProbeResult {
  readonly hist: HistogramJson;
  readonly throughput: number;
  readonly errors: number;
  readonly stale: number;
  readonly statuses: Record<string, number>;
}

export function start(): void {
  const clients = new Map<string, InstanceType<typeof CheckServiceClient>>();
  const client = (address: string): InstanceType<typeof CheckServiceClient> => {
    let c = clients.get(address);
    if (!c) {
      c = new CheckServiceClient(address, grpc.credentials.createInsecure());
      clients.set(address, c);
    }
    return c;
  };
  const call = (c: InstanceType<typeof CheckServiceClient>, req: CheckRequest): Promise<CheckResponse> =>
    new Promise((resolve, reject) => c.check(req, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res))));
  const feature = (r: () => number): string => CHECK_FEATURES[Math.floor(r() * CHECK_FEATURES.length)] as string;

  serve(
    {
      /** One answer's bytes (for the echo floor's canned answer). */
      sample: async (a: { address: string; customer: number }) => {
        const res = await call(client(a.address), { customerId: customerId(a.customer), feature: "api-access", quantity: undefined, minRevision: undefined });
        return { response: CheckResponse.encode(res).finish() };
      },
      /** Checks customers `from` .. `from + count - 1` once each, in order; `record: false` only warms. */
      misses: async (a: { address: string; from: number; count: number; record: boolean }): Promise<ProbeResult> => {
        const c = client(a.address);
        const r = rng(11);
        const hist = new Histogram();
        const out = { errors: 0, stale: 0, statuses: {} as Record<string, number> };
        const t0 = performance.now();
        for (let i = a.from; i < a.from + a.count; i++) {
          const t = performance.now();
          try {
            const res = await call(c, { customerId: customerId(i), feature: feature(r), quantity: undefined, minRevision: undefined });
            if (a.record) hist.record((performance.now() - t) * 1e6);
            if (res.stale) out.stale++;
            const s = statusName(res.status);
            out.statuses[s] = (out.statuses[s] ?? 0) + 1;
          } catch {
            out.errors++;
          }
        }
        return { hist: hist.toJSON(), throughput: (a.count / (performance.now() - t0)) * 1000, ...out };
      },
      /** Checks customers drawn from `from` .. `from + count - 1` for `durationMs` after `warmupMs`. */
      hits: async (a: { address: string; from: number; count: number; durationMs: number; warmupMs: number }): Promise<ProbeResult> => {
        const c = client(a.address);
        const r = rng(13);
        const N = 1 << 14;
        const queries = Array.from({ length: N }, (): CheckRequest => ({ customerId: customerId(a.from + Math.floor(r() * a.count)), feature: feature(r), quantity: undefined, minRevision: undefined }));
        const hist = new Histogram();
        const out = { errors: 0, stale: 0, statuses: {} as Record<string, number> };
        let i = 0;
        const loop = async (ms: number, record: boolean): Promise<number> => {
          const t0 = performance.now();
          let n = 0;
          let t = t0;
          while (t < t0 + ms) {
            try {
              const res = await call(c, queries[i++ & (N - 1)] as CheckRequest);
              if (record) {
                if (res.stale) out.stale++;
                const s = statusName(res.status);
                out.statuses[s] = (out.statuses[s] ?? 0) + 1;
              }
            } catch {
              out.errors++;
            }
            const t1 = performance.now();
            if (record) hist.record((t1 - t) * 1e6);
            t = t1;
            n++;
          }
          return (n / (t - t0)) * 1000;
        };
        await loop(a.warmupMs, false);
        const throughput = await loop(a.durationMs, true);
        return { hist: hist.toJSON(), throughput, ...out };
      },
    },
    () => {
      for (const c of clients.values()) c.close();
      return Promise.resolve();
    },
  );
}
