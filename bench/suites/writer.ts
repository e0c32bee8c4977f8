/**
 * Benchmarks 2 and 3: a real writer and a real sidecar on a fresh nats-server. Event-to-enforcement
 * (billing event published to PROOFGATE_BILLING → a sidecar Check shows it), then writer ingest
 * with durable commits through IngestService.Publish by batch size, and through NATS.
 */
import { join } from "node:path";
import { NatsServer } from "#proofgate/dev/nats-server.js";
import type { Config } from "../config.js";
import { Histogram, type HistogramJson, type Summary } from "../histogram.js";
import type { E2eResult } from "../roles/drive.js";
import type { HistoryRow } from "../roles/history.js";
import { cpuMsOf, machineCpuMs, round, rssOf } from "../util.js";
import { roles, type Env } from "./sidecar.js";

export interface E2eRun {
  readonly rate: number;
  readonly offered: number;
  readonly seen: number;
  readonly missed: number;
  readonly publishedPerSecond: number;
  readonly latency: Summary;
  readonly publishAck: Summary;
  readonly checksPerEvent: number;
  /** Published → document on PROOFGATE_STATE (writer), and from there → Check shows it (sidecar). */
  readonly stages: { readonly writer: Summary; readonly sidecar: Summary };
  readonly sustainable: boolean;
  /** CPU time per offered event (µs) of each process over the run: writer, sidecar, nats-server and the load driver. */
  readonly cpuPerEvent_us?: { readonly writer: number; readonly sidecar: number; readonly nats?: number; readonly driver?: number };
  /** Share of the whole machine's CPU time (all cores) that was busy over the run, in percent. */
  readonly machineBusy_pct?: number;
  /** The writer's event-loop delay over the run: how long events waited behind synchronous ledger work. */
  readonly writerLoopDelay?: { readonly p50_ms: number; readonly p99_ms: number; readonly max_ms: number };
}

export interface IngestRun {
  readonly path: "grpc" | "nats";
  readonly batch: number;
  readonly concurrency: number;
  readonly eventsPerSecond: number;
  /** CPU time of the writer process per event (µs): less sensitive to other load than the rate. */
  readonly writerCpuPerEvent_us: number;
  readonly callLatency?: Summary;
  readonly errors: number;
  readonly firstError?: string;
}

export interface WriterResults {
  readonly e2e: { readonly target: E2eRun; readonly ladder: readonly E2eRun[]; readonly maxSustainableRate: number };
  readonly ingest: readonly IngestRun[];
  /** Writer CPU that authentication and authorization add to each call (µs); the ingest runs above include it. */
  readonly authPerCall_us?: number;
  readonly writerRssBytes: number;
  /** Writer CPU per event by the customer's history length (in process). */
  readonly history: readonly HistoryRow[];
}

/** The seeds' floor for event → enforcement is p99 < 100 ms; a rate is sustainable while every event shows within it. */
const SUSTAINABLE_P99_US = 100_000;

function e2eRun(r: E2eResult): E2eRun {
  const latency = Histogram.fromJSON(r.hist).summary();
  return {
    rate: r.rate,
    offered: r.offered,
    seen: r.seen,
    missed: r.missed,
    publishedPerSecond: round(r.publishedPerSecond, 0),
    latency,
    publishAck: Histogram.fromJSON(r.ackHist).summary(),
    checksPerEvent: round(r.checks / Math.max(1, r.offered), 1),
    stages: { writer: Histogram.fromJSON(r.writerStage).summary(), sidecar: Histogram.fromJSON(r.sidecarStage).summary() },
    sustainable: r.missed === 0 && r.seen === r.offered && latency.p99_us <= SUSTAINABLE_P99_US && r.publishedPerSecond >= r.rate * 0.95,
  };
}

export async function writerSuite(cfg: Config, env: Env): Promise<WriterResults> {
  const { log } = env;
  const { fork, killAll } = roles(env);
  const nats = await NatsServer.start();
  try {
    let history: HistoryRow[] = [];
    if (cfg.history.facts.length > 0) {
      log(`writer CPU per event by history length (${cfg.history.facts.join(", ")} facts per customer), in process`);
      const historian = await fork("history");
      history = await historian.call<HistoryRow[]>("run", { dir: env.dir, histories: cfg.history.facts, customers: cfg.history.customers, events: cfg.history.events });
      await historian.stop();
      for (const h of history) log(`  ${h.facts} facts: ${h.cpuPerEvent_us} µs CPU/event (full fold of such a customer: ${h.fullFold_us} µs)`);
    }
    const writer = await fork("writer");
    const w = await writer.call<{ grpc: string; token: string }>("start", { natsUrl: nats.url, ledger: join(env.dir, "ledger.db") });
    const sidecar = await fork("sidecar");
    const s = await sidecar.call<{ tcp: string }>("start", { replica: join(env.dir, "replica-e2e.db"), natsUrl: nats.url });
    const drive = await fork("drive");
    await drive.call("connect", { natsUrl: nats.url, writer: w.grpc, sidecar: s.tcp, token: w.token });
    await drive.call("applyCatalog");
    log(`event → enforcement: ${cfg.e2e.customers.toLocaleString("en")} customers subscribe (unpaid), then each event pays or refunds one`);
    const pre = await drive.call<{ revision: number }>("precreate", { offset: 0, count: cfg.e2e.customers });
    await sidecar.call("waitRevision", { revision: pre.revision, timeoutMs: 60_000 });
    await sidecar.call("ready");
    const e2e = async (rate: number, durationMs: number): Promise<E2eRun> => {
      await writer.call("loopDelayStart");
      const pids = { writer: writer.pid, sidecar: sidecar.pid, nats: nats.pid ?? 0, driver: drive.pid };
      const cpuNow = (): Record<keyof typeof pids, number> =>
        ({ writer: cpuMsOf(pids.writer), sidecar: cpuMsOf(pids.sidecar), nats: cpuMsOf(pids.nats), driver: cpuMsOf(pids.driver) });
      const cpu0 = cpuNow();
      const machine0 = machineCpuMs();
      const raw = await drive.call<E2eResult>("e2e", { rate, durationMs, offset: 0, customers: cfg.e2e.customers, timeoutMs: 10_000 });
      const cpu1 = cpuNow();
      const machine1 = machineCpuMs();
      const perEvent = (ms: number): number => round((ms * 1000) / Math.max(1, raw.offered), 0);
      const cpuPerEvent_us = {
        writer: perEvent(cpu1.writer - cpu0.writer),
        sidecar: perEvent(cpu1.sidecar - cpu0.sidecar),
        nats: perEvent(cpu1.nats - cpu0.nats),
        driver: perEvent(cpu1.driver - cpu0.driver),
      };
      const machineBusy_pct = round((100 * (machine1.busy - machine0.busy)) / Math.max(1, machine1.total - machine0.total), 1);
      const loop = await writer.call<{ p50_ms: number; p99_ms: number; max_ms: number }>("loopDelayStop");
      const r: E2eRun = {
        ...e2eRun(raw),
        cpuPerEvent_us,
        machineBusy_pct,
        writerLoopDelay: { p50_ms: round(loop.p50_ms, 2), p99_ms: round(loop.p99_ms, 2), max_ms: round(loop.max_ms, 2) },
      };
      const ms = (x: number): string => (x / 1000).toFixed(1);
      log(
        `  ${rate}/s: p50 ${ms(r.latency.p50_us)} ms, p99 ${ms(r.latency.p99_us)} ms, max ${ms(r.latency.max_us)} ms (${r.seen}/${r.offered} seen); ` +
          `writer stage p50 ${ms(r.stages.writer.p50_us)} p99 ${ms(r.stages.writer.p99_us)} ms (writer loop delay p99 ${r.writerLoopDelay?.p99_ms} max ${r.writerLoopDelay?.max_ms} ms), ` +
          `sidecar stage p50 ${ms(r.stages.sidecar.p50_us)} p99 ${ms(r.stages.sidecar.p99_us)} ms; CPU per event: writer ${cpuPerEvent_us.writer} µs, sidecar ${cpuPerEvent_us.sidecar} µs, ` +
          `nats-server ${cpuPerEvent_us.nats} µs, load driver ${cpuPerEvent_us.driver} µs; machine ${machineBusy_pct}% busy`,
      );
      return r;
    };
    const target = await e2e(cfg.e2e.rate, cfg.e2e.durationMs);
    const ladder: E2eRun[] = [];
    let maxSustainable = target.sustainable ? target.rate : 0;
    for (const rate of cfg.e2e.ladder) {
      const r = await e2e(rate, cfg.e2e.ladderMs);
      ladder.push(r);
      if (!r.sustainable) break;
      maxSustainable = rate;
    }
    await sidecar.stop();

    // ---------------------------------------------------------------- ingest
    if (cfg.ingest.batches.length > 0 || cfg.ingest.natsCount > 0) log("writer ingest, durable (synchronous=FULL), no sidecar attached");
    const ingest: IngestRun[] = [];
    let offset = 1_000_000;
    for (const batch of cfg.ingest.batches) {
      for (const concurrency of cfg.ingest.concurrencies) {
        const cpu0 = cpuMsOf(writer.pid);
        const r = await drive.call<{ eventsPerSecond: number; totalEvents: number; hist: HistogramJson; errors: number; firstError?: string }>("ingestGrpc", {
          batch,
          concurrency,
          durationMs: cfg.ingest.durationMs,
          warmupMs: cfg.ingest.warmupMs,
          customers: cfg.ingest.customers,
          offset,
        });
        offset += cfg.ingest.customers;
        const run: IngestRun = {
          path: "grpc",
          batch,
          concurrency,
          eventsPerSecond: round(r.eventsPerSecond, 0),
          writerCpuPerEvent_us: round(((cpuMsOf(writer.pid) - cpu0) * 1000) / Math.max(1, r.totalEvents), 0),
          callLatency: Histogram.fromJSON(r.hist).summary(),
          errors: r.errors,
          ...(r.firstError ? { firstError: r.firstError } : {}),
        };
        ingest.push(run);
        log(`  Publish batch ${batch}, ${concurrency} callers: ${run.eventsPerSecond} events/s, writer CPU ${run.writerCpuPerEvent_us} µs/event (call p50 ${((run.callLatency?.p50_us ?? 0) / 1000).toFixed(1)} ms, p99 ${((run.callLatency?.p99_us ?? 0) / 1000).toFixed(1)} ms)`);
      }
    }
    if (cfg.ingest.natsCount > 0) {
      const cpu0 = cpuMsOf(writer.pid);
      const n = await drive.call<{ eventsPerSecond: number }>("ingestNats", { count: cfg.ingest.natsCount, customers: cfg.ingest.customers, offset, window: 1_000, timeoutMs: 300_000 });
      ingest.push({
        path: "nats",
        batch: 0,
        concurrency: 0,
        eventsPerSecond: round(n.eventsPerSecond, 0),
        writerCpuPerEvent_us: round(((cpuMsOf(writer.pid) - cpu0) * 1000) / cfg.ingest.natsCount, 0),
        errors: 0,
      });
      log(`  NATS, ${cfg.ingest.natsCount.toLocaleString("en")} events pipelined: ${round(n.eventsPerSecond, 0)} events/s (published to acked by the writer)`);
    }
    const writerRss = (await rssOf(writer.pid))?.rss ?? NaN;
    let authPerCall_us: number | undefined;
    if (ingest.length > 0) {
      const auth = await writer.call<{ perCall_us: number }>("authCost", { calls: cfg.quick ? 200_000 : 1_000_000 });
      authPerCall_us = round(auth.perCall_us, 2);
      log(`  authentication per call (token digest, principal lookup, role check, counter): ${authPerCall_us} µs of writer CPU`);
    }
    await drive.stop();
    await writer.stop();
    return { e2e: { target, ladder, maxSustainableRate: maxSustainable }, ingest, ...(authPerCall_us === undefined ? {} : { authPerCall_us }), writerRssBytes: writerRss, history };
  } finally {
    killAll();
    await nats.dispose();
  }
}
