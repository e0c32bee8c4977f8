/**
 * The lazy mode (`--mode lazy`): a region of `customers` in the state stream, a sidecar that keeps
 * only what it is asked about. Check latency for a miss (one direct get from NATS, then kept) and
 * a hit, one call at a time over TCP, beside the bare grpc-js echo in the same run; time to ready;
 * RSS and disk of a sidecar asked about three times more customers than its bound. Every role is
 * its own process, against one nats-server.
 */
import { join } from "node:path";
import Database from "better-sqlite3";
import { connect } from "nats";
import { Heartbeat } from "#proofgate/gen/proofgate/v1/document.js";
import { HEARTBEAT_SUBJECT } from "#proofgate/replication/subjects.js";
import { NatsServer } from "#proofgate/dev/nats-server.js";
import type { Config } from "../config.js";
import { Histogram, type Summary } from "../histogram.js";
import type { Verdict } from "../report.js";
import type { ProbeResult } from "../roles/lazyprobe.js";
import { rssOf, round, sleep } from "../util.js";
import { fileSize, roles, type Env } from "./sidecar.js";

export interface LazyWindow {
  readonly latency: Summary;
  readonly throughput: number;
  readonly errors: number;
  readonly stale: number;
  readonly statuses: Record<string, number>;
}

export interface LazyResults {
  readonly customers: number;
  readonly readyMs: number;
  readonly miss: LazyWindow;
  readonly hit: LazyWindow;
  readonly echo: LazyWindow;
  /** hit / echo and miss / echo. */
  readonly ratio: { readonly hitP50: number; readonly hitP99: number; readonly missP50: number; readonly missP99: number };
  readonly rssAtRestBytes: number;
  readonly bound: {
    readonly maxCustomers: number;
    readonly asked: number;
    readonly kept: number;
    readonly fileBytes: number;
    readonly walBytes: number;
    readonly rssAtRestBytes: number;
  };
}

const windowOf = (r: ProbeResult): LazyWindow => ({
  latency: Histogram.fromJSON(r.hist).summary(),
  throughput: round(r.throughput, 0),
  errors: r.errors,
  stale: r.stale,
  statuses: r.statuses,
});

const ratio = (a: number, b: number): number => (b > 0 ? Math.round((a / b) * 100) / 100 : NaN);

export async function lazySuite(cfg: Config, env: Env): Promise<LazyResults> {
  const { log } = env;
  const { fork, killAll } = roles(env);
  const nats = await NatsServer.start();
  const cleanups: (() => Promise<void>)[] = [];
  try {
    const seed = await fork("seed");
    await seed.call("connect", { url: nats.url });
    await seed.call("templates", { count: cfg.templates, seed: 42, now: Date.now() });
    await seed.call("catalog");
    log(`lazy mode: seeding ${cfg.customers.toLocaleString("en")} customer documents`);
    await seed.call("documents", { count: cfg.customers, window: cfg.seedWindow });
    const { lastSeq } = await seed.call<{ lastSeq: number }>("streamInfo");
    await seed.stop();
    // The writer's heartbeats (there is no writer here): without them every answer is stale, and
    // stale answers take another path (no answer cache).
    const hb = await connect({ servers: nats.url });
    const beat = setInterval(() => hb.publish(HEARTBEAT_SUBJECT, Heartbeat.encode({ headRevision: lastSeq, writerId: "bench", sentAt: new Date(), snapshotInProgress: false }).finish()), 200);
    cleanups.push(async () => {
      clearInterval(beat);
      await hb.close();
    });

    const hot = Math.min(1_000, Math.floor(cfg.customers / 10));
    const misses = Math.min(cfg.quick ? 2_000 : 20_000, cfg.customers - hot);
    const sidecar = await fork("sidecar");
    const started = await sidecar.call<{ tcp: string }>("start", { replica: join(env.dir, "lazy.db"), natsUrl: nats.url, mode: "lazy" });
    const { readyMs } = await sidecar.call<{ readyMs: number }>("ready");
    log(`  lazy sidecar ready in ${round(readyMs, 1)} ms`);
    const probe = await fork("lazyprobe");
    // The hot set, asked about once (misses, not measured): from then on they are hits.
    await probe.call("misses", { address: started.tcp, from: 0, count: hot, record: false });
    const { response } = await probe.call<{ response: Uint8Array }>("sample", { address: started.tcp, customer: 0 });
    const echo = await fork("echo");
    const echoAddr = await echo.call<{ tcp: string }>("start", { response });

    const miss = windowOf(await probe.call<ProbeResult>("misses", { address: started.tcp, from: hot, count: misses, record: true }));
    const plan = { from: 0, count: hot, durationMs: cfg.check.durationMs, warmupMs: cfg.check.warmupMs };
    const hit = windowOf(await probe.call<ProbeResult>("hits", { address: started.tcp, ...plan }));
    const floor = windowOf(await probe.call<ProbeResult>("hits", { address: echoAddr.tcp, ...plan }));
    log(`  miss p50 ${miss.latency.p50_us} p99 ${miss.latency.p99_us} µs (${misses} misses) | hit p50 ${hit.latency.p50_us} p99 ${hit.latency.p99_us} µs | echo p50 ${floor.latency.p50_us} p99 ${floor.latency.p99_us} µs`);
    await sleep(cfg.restMs);
    const rss = (await rssOf(sidecar.pid))?.rss ?? NaN;
    await sidecar.stop();
    await echo.stop();

    // A small bound, asked about three times as many customers: memory and disk stay with the bound.
    const maxCustomers = cfg.quick ? 5_000 : 20_000;
    const asked = Math.min(3 * maxCustomers, cfg.customers);
    const boundPath = join(env.dir, "lazy-bound.db");
    const bounded = await fork("sidecar");
    const b = await bounded.call<{ tcp: string }>("start", { replica: boundPath, natsUrl: nats.url, mode: "lazy", lazyMaxCustomers: maxCustomers });
    await bounded.call("ready");
    log(`  bound: ${maxCustomers.toLocaleString("en")} customers, asking about ${asked.toLocaleString("en")}`);
    await probe.call("misses", { address: b.tcp, from: 0, count: asked, record: false });
    await sleep(cfg.restMs);
    const boundRss = (await rssOf(bounded.pid))?.rss ?? NaN;
    await bounded.stop();
    await probe.stop();
    const db = new Database(boundPath, { readonly: true });
    const kept = db.prepare("SELECT count(*) FROM lazy_documents").pluck().get() as number;
    db.close();
    const bound = { maxCustomers, asked, kept, fileBytes: fileSize(boundPath), walBytes: fileSize(`${boundPath}-wal`), rssAtRestBytes: boundRss };
    log(`  bound: kept ${kept}, file ${round(bound.fileBytes / 2 ** 20, 1)} MiB + WAL ${round(bound.walBytes / 2 ** 20, 1)} MiB, RSS ${round(boundRss / 2 ** 20, 0)} MiB`);
    return {
      customers: cfg.customers,
      readyMs: round(readyMs, 1),
      miss,
      hit,
      echo: floor,
      ratio: {
        hitP50: ratio(hit.latency.p50_us, floor.latency.p50_us),
        hitP99: ratio(hit.latency.p99_us, floor.latency.p99_us),
        missP50: ratio(miss.latency.p50_us, floor.latency.p50_us),
        missP99: ratio(miss.latency.p99_us, floor.latency.p99_us),
      },
      rssAtRestBytes: rss,
      bound,
    };
  } finally {
    for (const c of cleanups) await c();
    killAll();
    await nats.dispose();
  }
}

const MB = 2 ** 20;

export function lazyVerdicts(r: LazyResults | undefined): Verdict[] {
  if (!r) return [];
  const note = ` (${r.customers.toLocaleString("en")} customers in the region)`;
  return [
    { what: "Lazy mode: cold start to ready", target: "≤ 1 s", measured: `${r.readyMs} ms`, met: r.readyMs <= 1_000, note },
    { what: "Lazy mode: RSS at rest", target: "≤ 150 MB", measured: `${Math.round(r.rssAtRestBytes / MB)} MiB`, met: r.rssAtRestBytes <= 150e6, note },
    {
      what: `Lazy mode: kept customers within the bound after asking about ${r.bound.asked.toLocaleString("en")}`,
      target: `≤ ${r.bound.maxCustomers.toLocaleString("en")}`,
      measured: `${r.bound.kept.toLocaleString("en")}; file ${(r.bound.fileBytes / MB).toFixed(1)} MiB + WAL ${(r.bound.walBytes / MB).toFixed(1)} MiB; RSS ${Math.round(r.bound.rssAtRestBytes / MB)} MiB`,
      met: r.bound.kept <= r.bound.maxCustomers,
      note,
    },
  ];
}

export function renderLazy(r: LazyResults | undefined): string[] {
  if (!r) return [];
  const us = (n: number): string => `${n} µs`;
  const row = (name: string, w: LazyWindow): string =>
    `  ${name.padEnd(28)} p50 ${us(w.latency.p50_us).padStart(10)}  p99 ${us(w.latency.p99_us).padStart(10)}  ${String(w.throughput).padStart(7)}/s  (${w.latency.count} calls${w.stale ? `, ${w.stale} stale` : ""}${w.errors ? `, ${w.errors} errors` : ""})`;
  return [
    [
      `Lazy mode (${r.customers.toLocaleString("en")} customers in the region; TCP, one call at a time)`,
      row("miss (direct get, then kept)", r.miss),
      row("hit", r.hit),
      row("bare grpc-js echo", r.echo),
      `  hit / echo: p50 ${r.ratio.hitP50}×, p99 ${r.ratio.hitP99}×; miss / echo: p50 ${r.ratio.missP50}×, p99 ${r.ratio.missP99}×`,
      `  ready in ${r.readyMs} ms; RSS at rest ${Math.round(r.rssAtRestBytes / MB)} MiB`,
      `  bound ${r.bound.maxCustomers.toLocaleString("en")} customers, asked about ${r.bound.asked.toLocaleString("en")}: kept ${r.bound.kept.toLocaleString("en")}, file ${(r.bound.fileBytes / MB).toFixed(1)} MiB + WAL ${(r.bound.walBytes / MB).toFixed(1)} MiB, RSS ${Math.round(r.bound.rssAtRestBytes / MB)} MiB`,
    ].join("\n"),
  ];
}
