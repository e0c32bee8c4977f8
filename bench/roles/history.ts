/**
 * Writer CPU per event by the length of the customer's history, in process (no gRPC, no NATS):
 * customers with 10, 100 and 1,000 facts each get one more payment, applied the way ingest
 * applies events (`applyEvents`, durable ledger, batches of 10). For reference, the same
 * customers' full fold (every fact decoded and folded, what each event cost before the writer
 * stored folded parts).
 */
import { join } from "node:path";
import { createRegistry } from "#proofgate/observability/metrics.js";
import { foldDocument } from "#proofgate/policy/index.js";
import { PaymentResult } from "#proofgate/gen/proofgate/v1/billing.js";
import { WriterCore } from "#proofgate/writer/core.js";
import { applyEvents, type Incoming } from "#proofgate/writer/ingest/apply.js";
import { Ledger } from "#proofgate/writer/ledger/ledger.js";
import { createWriterMetrics } from "#proofgate/writer/metrics.js";
import { DAY, demoCatalog, paymentEvent, subscriptionEvent } from "../data.js";
import { serve } from "../ipc.js";
import { benchLogger } from "../util.js";

export interface HistoryRow {
  readonly facts: number;
  readonly customers: number;
  readonly events: number;
  /** Process CPU (user + system) per applied event, µs. */
  readonly cpuPerEvent_us: number;
  /** Folding all of one such customer's facts from the ledger, µs (the cost per event without folded parts). */
  readonly fullFold_us: number;
}

const incoming = (events: ReturnType<typeof paymentEvent>[]): Incoming[] => events.map((event) => ({ event, origin: "bench", payload: new Uint8Array(), contentType: "" }));

const cpuUs = (): number => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

export function start(): void {
  serve({
    run: (a: { dir: string; histories: number[]; customers: number; events: number }) => {
      const now = Date.now();
      const ledger = Ledger.open(join(a.dir, "history-ledger.db"));
      try {
        const core = new WriterCore(ledger, () => now, benchLogger("history"));
        ledger.transaction(() => core.putCatalog(demoCatalog()));
        const metrics = createWriterMetrics(createRegistry(), { outbox: () => ({ count: 0, oldestAtMs: undefined }), headRevision: () => 0, natsConnected: () => true, now: () => now });
        // Every length is filled first, then the measured batches alternate between lengths, so
        // drift over the run (JIT, page cache, WAL checkpoints, other load) reaches each alike.
        const sets = a.histories.map((facts) => {
          const ids = Array.from({ length: a.customers }, (_, i) => `hist${facts}_${i}`);
          // A subscription and one invoice a month, the oldest first; every seventh renewal failed.
          for (const c of ids) {
            const history = [subscriptionEvent(c, `${c}/sub`, now - facts * 30 * DAY, "premium", 1)];
            for (let k = 1; k < facts; k++) {
              const at = now - (facts - k) * 30 * DAY;
              history.push(paymentEvent(c, `${c}/pay${k}`, at, `in_${k}`, k % 7 === 0 ? PaymentResult.PAYMENT_RESULT_FAILED : PaymentResult.PAYMENT_RESULT_SUCCEEDED));
            }
            for (let i = 0; i < history.length; i += 500) applyEvents(core, incoming(history.slice(i, i + 500)), "grpc", metrics);
          }
          // One more payment per customer, round robin.
          const next = Array.from({ length: a.events }, (_, i) => {
            const c = ids[i % ids.length] as string;
            return paymentEvent(c, `${c}/new${i}`, now - DAY + i, `in_new${i}`, PaymentResult.PAYMENT_RESULT_SUCCEEDED);
          });
          return { facts, ids, next, cpu: 0 };
        });
        const BATCH = 10;
        for (let i = 0; i < a.events; i += BATCH) {
          for (const set of sets) {
            const cpu0 = cpuUs();
            applyEvents(core, incoming(set.next.slice(i, i + BATCH)), "grpc", metrics);
            // The first batches warm up the JIT for every length: not counted.
            if (i >= a.events / 10) set.cpu += cpuUs() - cpu0;
          }
        }
        const measured = a.events - Math.ceil(a.events / 10 / BATCH) * BATCH;
        const rows: HistoryRow[] = sets.map((set) => {
          const t0 = performance.now();
          for (const c of set.ids) foldDocument(c, ledger.facts(c), ledger.overrides(c));
          const fullFold = ((performance.now() - t0) * 1000) / set.ids.length;
          return { facts: set.facts, customers: set.ids.length, events: measured, cpuPerEvent_us: Math.round(set.cpu / measured), fullFold_us: Math.round(fullFold) };
        });
        return rows;
      } finally {
        ledger.close();
      }
    },
  });
}
