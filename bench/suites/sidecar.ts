/**
 * Benchmarks 1 and 4: a sidecar bootstrapping a replica of `customers` documents from an empty
 * file (checks at a fixed rate meanwhile), a burst of document updates under the same load, the
 * Check latency suite against the same sidecar and a bare grpc-js echo server, and warm restarts.
 * Every role is its own process: nats-server, the seeder, the sidecar, the echo server, the client.
 */
import { mkdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { exportJWK, generateKeyPair } from "jose";
import { parse } from "yaml";
import { NatsServer } from "#proofgate/dev/nats-server.js";
import type { Config } from "../config.js";
import { Histogram, type Summary } from "../histogram.js";
import { Child } from "../ipc.js";
import type { InterleavedResult, RunPlan, RunResult, Rpc } from "../roles/load.js";
import type { ClientPlan, ClientRun } from "../roles/client.js";
import { cpuMsOf, round, rssOf, sleep } from "../util.js";
import { benchRules } from "../extauthz.js";

export interface Window {
  readonly latency: Summary;
  /** CPU time the server process (sidecar or echo) used per call, and the client process, in µs (side-by-side rows: the measured calls only; others: the whole run, warm-up included). */
  readonly cpuPerCall?: { readonly server_us: number; readonly client_us: number };
  readonly throughput: number;
  readonly errors: number;
  readonly statuses: Record<string, number>;
  readonly lag?: Summary;
  readonly dropped: number;
  readonly loopDelay?: { p50_ms: number; p99_ms: number; max_ms: number };
}

export interface Scenario {
  readonly name: string;
  readonly transport: "tcp" | "unix";
  readonly rpc: Rpc;
  readonly mode: "closed" | "rate";
  readonly concurrency?: number;
  readonly rate?: number;
  /** Only the first N customers asked about (the answer cache's realistic case); absent: all, uniformly. */
  readonly hotSet?: number;
  readonly sidecar: Window;
  readonly echo: Window;
  /** sidecar / echo, pooled over the rounds. */
  readonly ratio: { p50: number; p90: number; p99: number; p999: number; throughput: number; serverCpuPerCall: number };
  /** sidecar / echo in each echo/sidecar pair, in order: how far the machine moved the ratio within the scenario. */
  readonly rounds: readonly { p50: number; p99: number; serverCpuPerCall: number }[];
  /**
   * Measured on the sidecar that bootstrapped the replica and answered checks through the bursts
   * (not restarted), as a production sidecar always is; the other rows use one restarted on its replica.
   */
  readonly aged?: boolean;
  /** The two servers were measured over the same moments (closed loop: `runInterleaved`), rather than window by window. */
  readonly interleaved?: boolean;
}

export interface SustainStep {
  readonly rate: number;
  readonly achieved: number;
  readonly p50_us: number;
  readonly p99_us: number;
  readonly lagP99_us: number;
  /** Sustained: achieved ≥ 98% of the offered rate, no errors. */
  readonly ok: boolean;
  /** Sustained and p99 ≤ 1 ms. */
  readonly p99ok: boolean;
}

export interface Sustain {
  /** Highest rate tried that was sustained. */
  readonly sustained: number;
  /** Highest rate tried that was sustained with p99 ≤ 1 ms (0: none). */
  readonly meetingP99: number;
  /** Calls/s of the closed loop with N callers: the ceiling the rates are fractions of. */
  readonly closedLoopMax: number;
  readonly steps: SustainStep[];
}

export interface Burst {
  readonly count: number;
  /** Documents/s offered; null: as fast as JetStream acknowledged them. */
  readonly rate: number | null;
  readonly publishSeconds: number;
  /** From the first publish until the sidecar applied the last. */
  readonly appliedSeconds: number;
  readonly applyRate: number;
  readonly checksDuring: Window;
}

export interface SidecarResults {
  readonly customers: number;
  readonly seed: { seconds: number; rate: number; streamBytes: number; recordBytes: number; templateMedianBytes: number; templateMaxBytes: number };
  readonly bootstrap: {
    readonly readyMs: number;
    readonly fromSpawnMs: number;
    readonly revision: number;
    readonly docsPerSecond: number;
    readonly peakDocsPerSecond: number;
    readonly timeline: readonly { t_s: number; revision: number; rss_mb: number }[];
    readonly checksDuring: Window;
    readonly checksAfter: Window;
  };
  /** A paced burst, then one as fast as JetStream takes it. */
  readonly bursts: readonly Burst[];
  readonly replica: { fileBytes: number; walBytes: number };
  readonly rss: {
    atRestBytes: number;
    atRestAnonBytes: number;
    atRestFileBytes: number;
    /** The main isolate's V8 heap at rest (worker threads not included). */
    heapAtRest: { heapTotal: number; heapUsed: number; external: number };
    underLoadMaxBytes: number;
    peakHwmBytes: number;
    afterBootstrapBytes: number;
  };
  readonly sizes: { requestBytes: number; responseBytes: number; batchRequestBytes: number; batchResponseBytes: number };
  readonly answerMix: Record<string, number>;
  /** Of the sampled answers (answerMix), those marked stale: the latency rows are fresh answers only if this is 0. */
  readonly staleInSample: number;
  readonly scenarios: readonly Scenario[];
  /**
   * Bytes per call that outlived a young-generation collection (`survivorsPerCall`): on the sidecar
   * with the bursts behind it (the `aged` row) and on the one restarted on its replica.
   */
  readonly survivors: { readonly agedBytesPerCall: number; readonly restartedBytesPerCall: number };
  /**
   * The method's resolution: a second echo process measured against the echo exactly as the
   * sidecar is (TCP, same rounds and windows). Its ratios would all be 1.00× on a perfect machine;
   * how far they stray, pooled and by round, is how far a sidecar ratio can stray for no cause.
   */
  readonly calibration: readonly Pick<Scenario, "name" | "ratio" | "rounds">[];
  readonly sustainable: { readonly sidecar: Sustain; readonly echo: Sustain };
  /** `ProofgateClient` in another process: local mode (uniform, hot set) and over gRPC, one call at a time; beside the echo floor of the same run. */
  readonly client: ClientResults;
  readonly warmRestart: { readonly runs: readonly { readyMs: number; fromSpawnMs: number }[]; readonly medianReadyMs: number; readonly medianFromSpawnMs: number };
  /**
   * Envoy's ext_authz Check (header identity, then an ES256 JWT) beside CheckService/Check, on one
   * sidecar process serving both on one TCP listener (warm replica), each against its echo floor.
   */
  readonly extAuthz: { readonly rules: number; readonly scenarios: readonly Scenario[] };
}

export interface ClientWindow {
  readonly latency: Summary;
  /** One thread, one call at a time: what one core does. */
  readonly checksPerSecond: number;
  readonly sources: Record<string, number>;
}

export interface ClientResults {
  readonly hotSet: number;
  readonly localUniform: ClientWindow;
  readonly localHot: ClientWindow;
  readonly grpc: ClientWindow;
  /** The bare grpc-js echo, TCP, one call at a time, from the scenarios above. */
  readonly echo: Summary | undefined;
}

export interface Env {
  readonly dir: string;
  readonly log: (line: string) => void;
  /** Extra node flags per role, e.g. `--cpu-prof` for profiling. */
  readonly execArgv: (role: string) => string[];
  readonly logEnv: NodeJS.ProcessEnv;
}

/** Forks a suite's role processes with the run's flags, and kills them all when the suite ends. */
export function roles(env: Env): { fork: (role: string) => Promise<Child>; killAll: () => void } {
  const children: Child[] = [];
  return {
    fork: async (role) => {
      const c = await Child.fork(role, { execArgv: env.execArgv(role), env: env.logEnv });
      children.push(c);
      return c;
    },
    killAll: () => {
      for (const c of children) c.kill();
    },
  };
}

export function window(r: RunResult, loopDelay?: Window["loopDelay"], cpuPerCall?: Window["cpuPerCall"]): Window {
  return {
    latency: Histogram.fromJSON(r.hist).summary(),
    ...(cpuPerCall ? { cpuPerCall } : {}),
    throughput: round(r.throughput, 0),
    errors: r.errors,
    statuses: r.statuses,
    ...(r.lag ? { lag: Histogram.fromJSON(r.lag).summary() } : {}),
    dropped: r.dropped,
    ...(loopDelay ? { loopDelay: { p50_ms: round(loopDelay.p50_ms, 2), p99_ms: round(loopDelay.p99_ms, 2), max_ms: round(loopDelay.max_ms, 2) } } : {}),
  };
}

/** One load run and the CPU time (ms) the server and the client used during it. */
interface Measured {
  readonly r: RunResult;
  readonly serverMs: number;
  readonly clientMs: number;
}

/** One load run against the server at `server.address` (after `prime`), with the CPU time it and the client used. */
async function measure(load: Child, server: { readonly address: string; readonly pid: number }, customers: number, plan: RunPlan, prime?: () => Promise<void>): Promise<Measured> {
  await load.call("connect", { address: server.address, customers });
  await prime?.();
  const s0 = cpuMsOf(server.pid);
  const c0 = cpuMsOf(load.pid);
  const r = await load.call<RunResult>("run", plan);
  return { r, serverMs: cpuMsOf(server.pid) - s0, clientMs: cpuMsOf(load.pid) - c0 };
}

/** Runs of one scenario as one window: histograms merged, counts and CPU time summed. */
function pooled(runs: readonly Measured[]): Window {
  const first = runs[0];
  if (!first) throw new Error("no runs to pool");
  const hist = Histogram.fromJSON(first.r.hist);
  const lags = runs.flatMap((m) => (m.r.lag ? [Histogram.fromJSON(m.r.lag)] : []));
  const statuses: Record<string, number> = {};
  let completed = 0, windowMs = 0, errors = 0, dropped = 0, answered = 0, serverMs = 0, clientMs = 0;
  for (const [k, m] of runs.entries()) {
    if (k > 0) hist.merge(Histogram.fromJSON(m.r.hist));
    for (const [status, n] of Object.entries(m.r.statuses)) statuses[status] = (statuses[status] ?? 0) + n;
    completed += m.r.completed;
    windowMs += m.r.windowMs;
    errors += m.r.errors;
    dropped += m.r.dropped;
    answered += m.r.answered;
    serverMs += m.serverMs;
    clientMs += m.clientMs;
  }
  const lag = lags.reduce<Histogram | undefined>((acc, h) => (acc ? acc.merge(h) : h), undefined);
  const r: RunResult = { hist: hist.toJSON(), ...(lag ? { lag: lag.toJSON() } : {}), throughput: (completed / Math.max(1, windowMs)) * 1000, completed, errors, dropped, windowMs, statuses, answered };
  const per = (ms: number): number => round((ms * 1000) / Math.max(1, answered), 1);
  return window(r, undefined, { server_us: per(serverMs), client_us: per(clientMs) });
}

const ratio = (a: number, b: number): number => (b > 0 ? Math.round((a / b) * 100) / 100 : NaN);

/** The sidecar's window over the echo's, figure by figure. */
const ratios = (s: Window, e: Window): Scenario["ratio"] => ({
  p50: ratio(s.latency.p50_us, e.latency.p50_us),
  p90: ratio(s.latency.p90_us, e.latency.p90_us),
  p99: ratio(s.latency.p99_us, e.latency.p99_us),
  p999: ratio(s.latency.p999_us, e.latency.p999_us),
  throughput: ratio(s.throughput, e.throughput),
  serverCpuPerCall: ratio(s.cpuPerCall?.server_us ?? NaN, e.cpuPerCall?.server_us ?? NaN),
});

export function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

export async function sidecarSuite(cfg: Config, env: Env): Promise<SidecarResults> {
  const { log } = env;
  const { fork, killAll } = roles(env);
  const nats = await NatsServer.start();
  try {
    // ---------------------------------------------------------------- seed the state stream
    const seed = await fork("seed");
    await seed.call("connect", { url: nats.url });
    const tpl = await seed.call<{ ms: number; medianBytes: number; maxBytes: number }>("templates", { count: cfg.templates, seed: 42, now: Date.now() });
    await seed.call("catalog");
    log(`seeding ${cfg.customers.toLocaleString("en")} customer documents into PROOFGATE_STATE (pipelined JetStream publishes)`);
    seed.on("seeded", (d) => {
      const { done, seconds } = d as { done: number; seconds: number };
      if (done % 250_000 === 0) log(`  ${done.toLocaleString("en")} published (${Math.round(done / seconds).toLocaleString("en")}/s)`);
    });
    const seeded = await seed.call<{ seconds: number; rate: number; bytes: number }>("documents", { count: cfg.customers, window: cfg.seedWindow });
    const info = await seed.call<{ messages: number; bytes: number; lastSeq: number }>("streamInfo");
    log(`  seeded in ${seeded.seconds.toFixed(1)} s (${Math.round(seeded.rate).toLocaleString("en")}/s); stream holds ${info.messages.toLocaleString("en")} messages, ${(info.bytes / 2 ** 20).toFixed(0)} MiB`);

    // ---------------------------------------------------------------- bootstrap from empty, under load
    const replicaPath = join(env.dir, "replica.db");
    const socket = join(env.dir, "sidecar.sock");
    log(`sidecar bootstrap from an empty replica, ${cfg.backgroundRate} checks/s meanwhile`);
    let sidecar = await fork("sidecar");
    const timeline: { t_s: number; revision: number; rss_mb: number }[] = [];
    sidecar.on("progress", (d) => {
      const p = d as { t: number; revision: number; rss: number };
      timeline.push({ t_s: round(p.t / 1000, 2), revision: p.revision, rss_mb: round(p.rss / 2 ** 20, 1) });
    });
    let started = await sidecar.call<{ tcp: string; unix: string; listenMs: number }>("start", { replica: replicaPath, natsUrl: nats.url, socket });
    await sidecar.call("watch", { intervalMs: 250 });
    const load = await fork("load");
    await load.call("connect", { address: started.tcp, customers: cfg.customers });
    await sidecar.call("loopDelayStart");
    await load.call("backgroundStart", { rpc: "check", rate: cfg.backgroundRate });
    const ready = await sidecar.call<{ readyMs: number; revision: number }>("ready");
    const fromSpawnMs = performance.now() - sidecar.forkedAt;
    const checksDuringBootstrap = window(await load.call<RunResult>("backgroundMark"), await sidecar.call("loopDelay"));
    log(`  ready in ${(ready.readyMs / 1000).toFixed(2)} s at revision ${ready.revision}; checks meanwhile p50 ${checksDuringBootstrap.latency.p50_us} µs, p99 ${checksDuringBootstrap.latency.p99_us} µs, max ${checksDuringBootstrap.latency.max_us} µs`);
    const afterBootstrapRss = (await rssOf(sidecar.pid))?.rss ?? NaN;
    // Writer heartbeats from here on, as a writer sends them: without them the sidecar never knows it is current and every
    // answer is stale (evaluated, never from the answer cache). Not during the bootstrap, so that it is measured as before.
    await seed.call("heartbeats", { intervalMs: 1_000 });
    await sleep(cfg.restMs);
    const checksAfter = window(await load.call<RunResult>("backgroundMark"), await sidecar.call("loopDelay"));

    // ---------------------------------------------------------------- bursts of document updates, under load
    const burst = async (rate: number | undefined): Promise<Burst> => {
      log(`burst of ${cfg.burst.toLocaleString("en")} document updates ${rate ? `at ${rate.toLocaleString("en")}/s` : "as fast as JetStream takes them"}, ${cfg.backgroundRate} checks/s meanwhile`);
      await load.call("backgroundMark");
      await sidecar.call("loopDelay");
      const start = performance.now();
      const b = await seed.call<{ seconds: number; lastSeq: number }>("burst", { count: cfg.burst, customers: cfg.customers, window: cfg.seedWindow, ...(rate ? { rate } : {}) });
      const applied = await sidecar.call<{ reached: boolean }>("waitRevision", { revision: b.lastSeq, timeoutMs: 300_000 });
      const appliedSeconds = (performance.now() - start) / 1000;
      if (!applied.reached) throw new Error("the sidecar did not apply the burst within 300 s");
      const checksDuring = window(await load.call<RunResult>("backgroundMark"), await sidecar.call("loopDelay"));
      log(`  applied in ${appliedSeconds.toFixed(2)} s; checks meanwhile p50 ${checksDuring.latency.p50_us} µs, p99 ${checksDuring.latency.p99_us} µs, max ${checksDuring.latency.max_us} µs`);
      await sleep(cfg.restMs);
      return { count: cfg.burst, rate: rate ?? null, publishSeconds: round(b.seconds, 2), appliedSeconds: round(appliedSeconds, 2), applyRate: round(cfg.burst / appliedSeconds, 0), checksDuring };
    };
    const bursts = [await burst(cfg.burstRate), await burst(undefined)];
    await load.call("backgroundStop");
    await sidecar.call("unwatch");
    await sidecar.call("loopDelayStop");
    const atRest = await rssOf(sidecar.pid);
    const heapAtRest = await sidecar.call<{ heapTotal: number; heapUsed: number; external: number }>("status");
    const replica = { fileBytes: fileSize(replicaPath), walBytes: fileSize(`${replicaPath}-wal`) };

    // ---------------------------------------------------------------- the hot set on the sidecar with that history
    // What a production sidecar is: it answered checks while updates arrived. Calls slowed by a burst outlive young-generation
    // collections, and V8 may then allocate some of grpc-js's and Node's per-call objects in the old generation for good
    // (BENCHMARKS.md, "Per-call objects born old"). One row, beside a fresh echo, before the restart below.
    const { scenario: aged, survivorBytesPerCall: agedSurvivors } = await agedHotSet(cfg, env, fork, load, started.tcp, sidecar);

    // ---------------------------------------------------------------- Check latency: sidecar vs echo floor
    // Measured on a sidecar restarted on its warm replica, as the echo starts fresh: two processes of one age
    // (BENCHMARKS.md, Method: a process's cost per call depends on what it did before, here a bootstrap and two bursts).
    const bootstrapHwm = (await rssOf(sidecar.pid))?.hwm ?? NaN;
    await sidecar.stop();
    sidecar = await fork("sidecar");
    started = await sidecar.call<{ tcp: string; unix: string; listenMs: number }>("start", { replica: replicaPath, natsUrl: nats.url, socket });
    await sidecar.call("ready");
    if (!(await sidecar.call<{ fresh: boolean }>("fresh", { timeoutMs: 10_000 })).fresh) throw new Error("the restarted sidecar's answers were still stale after 10 s");
    await load.call("connect", { address: started.tcp, customers: cfg.customers });
    const sample = await load.call<{ requestBytes: number; responseBytes: number; batchRequestBytes: number; batchResponseBytes: number; statuses: Record<string, number>; stale: number; typical: Uint8Array }>(
      "sample",
      { n: cfg.quick ? 1_000 : 5_000 },
    );
    log(`  sampled ${(cfg.quick ? 1_000 : 5_000).toLocaleString("en")} answers before the latency runs: ${sample.stale} stale`);
    const survivors = { agedBytesPerCall: agedSurvivors, restartedBytesPerCall: await survivorsPerCall(cfg, load, sidecar) };
    log(`  outlived a young-generation collection, per hot-set call: ${survivors.agedBytesPerCall} B not restarted, ${survivors.restartedBytesPerCall} B restarted`);
    const echo = await fork("echo");
    const echoSocket = join(env.dir, "echo.sock");
    const echoAddr = await echo.call<{ tcp: string; unix: string }>("start", { socket: echoSocket, response: sample.typical });
    const addresses = { sidecar: { tcp: started.tcp, unix: started.unix }, echo: echoAddr };
    let rssMax = 0;
    const rssTimer = setInterval(() => {
      void rssOf(sidecar.pid).then((r) => {
        if (r && r.rss > rssMax) rssMax = r.rss;
      });
    }, 200);
    const pids = { sidecar: sidecar.pid, echo: echo.pid };
    /** One run on its own (the sustainable-rate ladder), with the CPU time both sides used per call. */
    const run = async (server: "sidecar" | "echo", transport: "tcp" | "unix", plan: RunPlan): Promise<Window> =>
      pooled([await measure(load, { address: addresses[server][transport], pid: pids[server] }, cfg.customers, plan)]);
    const base = { durationMs: cfg.check.durationMs, warmupMs: cfg.check.warmupMs };
    const plans: { name: string; plan: RunPlan }[] = [
      { name: "Check closed c=1", plan: { ...base, rpc: "check", mode: "closed", concurrency: 1 } },
      { name: `Check closed c=${cfg.check.concurrency}`, plan: { ...base, rpc: "check", mode: "closed", concurrency: cfg.check.concurrency } },
      ...cfg.check.rates.map((rate) => ({ name: `Check at ${rate}/s`, plan: { ...base, rpc: "check" as const, mode: "rate" as const, rate } })),
      { name: "CheckBatch(10) closed c=1", plan: { ...base, rpc: "batch", mode: "closed", concurrency: 1 } },
      { name: `CheckBatch(10) closed c=${cfg.check.concurrency}`, plan: { ...base, rpc: "batch", mode: "closed", concurrency: cfg.check.concurrency } },
    ];
    // The same calls about a hot set of customers (what a product service's active users ask, each about the seats it has),
    // after every answer of the hot set was asked once: answer-cache hits.
    const hot = { ...base, hotSet: cfg.check.hotSet };
    const hotName = `hot set of ${cfg.check.hotSet.toLocaleString("en")}`;
    plans.push(
      { name: `Check closed c=1, ${hotName}`, plan: { ...hot, rpc: "check", mode: "closed", concurrency: 1 } },
      { name: `Check closed c=${cfg.check.concurrency}, ${hotName}`, plan: { ...hot, rpc: "check", mode: "closed", concurrency: cfg.check.concurrency } },
      ...cfg.check.rates.slice(-1).map((rate) => ({ name: `Check at ${rate}/s, ${hotName}`, plan: { ...hot, rpc: "check" as const, mode: "rate" as const, rate } })),
      { name: `CheckBatch(10) closed c=1, ${hotName}`, plan: { ...hot, rpc: "batch", mode: "closed", concurrency: 1 } },
      { name: `CheckBatch(10) closed c=${cfg.check.concurrency}, ${hotName}`, plan: { ...hot, rpc: "batch", mode: "closed", concurrency: cfg.check.concurrency } },
    );
    const scenarios: Scenario[] = [aged];
    for (const transport of cfg.check.transports) {
      for (const { name, plan } of plans) {
        const servers = { sidecar: { address: addresses.sidecar[transport], child: sidecar }, echo: { address: addresses.echo[transport], child: echo } };
        // Hot-set rows measure the steady state: every answer of the hot set asked once before (not counted).
        const hotSet = plan.hotSet;
        const prime = hotSet
          ? async (): Promise<void> => {
              await load.call("prime", { hotSet });
            }
          : undefined;
        const pair = await runPair(load, servers, cfg.customers, cfg.check.rounds, plan, prime);
        const { sidecar: s, echo: e } = pair;
        const sc: Scenario = {
          name,
          transport,
          rpc: plan.rpc,
          mode: plan.mode,
          ...(plan.concurrency ? { concurrency: plan.concurrency } : {}),
          ...(plan.rate ? { rate: plan.rate } : {}),
          ...(plan.hotSet ? { hotSet: plan.hotSet } : {}),
          ...pair,
        };
        scenarios.push(sc);
        log(
          `  ${transport} ${name.padEnd(44)} sidecar p50 ${s.latency.p50_us} p99 ${s.latency.p99_us} µs ${s.throughput}/s ${s.cpuPerCall?.server_us} µs CPU/call | ` +
            `echo p50 ${e.latency.p50_us} p99 ${e.latency.p99_us} µs ${e.throughput}/s ${e.cpuPerCall?.server_us} µs CPU/call`,
        );
      }
    }

    // ---------------------------------------------------------------- the method's resolution: the echo against a second echo
    log("echo against a second echo, as the sidecar is measured (TCP): how far a ratio strays for no cause");
    const echo2 = await fork("echo");
    const echo2Addr = await echo2.call<{ tcp: string }>("start", { socket: join(env.dir, "echo2.sock"), response: sample.typical });
    // Warmed as the first echo was by every scenario before (a fresh process's first seconds cost 2–3× while V8 compiles).
    await load.call("connect", { address: echo2Addr.tcp, customers: cfg.customers });
    await load.call("run", { ...base, rpc: "check", mode: "closed", concurrency: cfg.check.concurrency, durationMs: cfg.check.durationMs * 2 });
    const calibration: Pick<Scenario, "name" | "ratio" | "rounds">[] = [];
    for (const { name, plan } of plans.filter((p) => p.plan.rpc === "check" && !p.plan.hotSet && (p.plan.concurrency !== undefined || p.plan.rate === cfg.check.rates.at(-1)))) {
      const servers = { sidecar: { address: echo2Addr.tcp, child: echo2 }, echo: { address: addresses.echo.tcp, child: echo } };
      const { ratio, rounds } = await runPair(load, servers, cfg.customers, cfg.check.rounds, plan);
      calibration.push({ name, ratio, rounds });
      log(`  tcp ${name.padEnd(44)} echo ÷ echo p50 ${ratio.p50}× p99 ${ratio.p99}× CPU ${ratio.serverCpuPerCall}× (rounds ${rounds.map((r) => r.serverCpuPerCall).join(", ")})`);
    }
    await echo2.stop();

    // ---------------------------------------------------------------- the highest sustainable rate, and the highest meeting p99 ≤ 1 ms
    const sustain = async (server: "sidecar" | "echo"): Promise<Sustain> => {
      const max = scenarios.find((s) => s.transport === "tcp" && s.rpc === "check" && s.concurrency === cfg.check.concurrency && !s.hotSet)?.[server].throughput ?? 1000;
      const steps: SustainStep[] = [];
      let sustained = 0;
      let meetingP99 = 0;
      for (const f of cfg.check.sustainFractions) {
        const rate = Math.max(100, Math.round((max * f) / 100) * 100);
        const w = await run(server, "tcp", { ...base, rpc: "check", mode: "rate", rate });
        // Sustained: answered at the offered rate (98%), without errors. The client's own lateness is reported, not judged.
        const ok = w.throughput >= rate * 0.98 && w.errors === 0 && w.dropped === 0;
        const p99ok = ok && w.latency.p99_us <= 1_000;
        steps.push({ rate, achieved: w.throughput, p50_us: w.latency.p50_us, p99_us: w.latency.p99_us, lagP99_us: w.lag?.p99_us ?? NaN, ok, p99ok });
        log(`  ${server} at ${rate}/s: achieved ${w.throughput}/s, p50 ${w.latency.p50_us} µs, p99 ${w.latency.p99_us} µs${ok ? "" : " (not sustained)"}`);
        if (!ok) break;
        sustained = rate;
        if (p99ok) meetingP99 = rate;
      }
      return { sustained, meetingP99, closedLoopMax: max, steps };
    };
    // ---------------------------------------------------------------- ProofgateClient: local mode and over gRPC
    const client = await clientSuite(fork, { address: started.tcp, replica: replicaPath, customers: cfg.customers, durationMs: cfg.check.durationMs, warmupMs: cfg.check.warmupMs }, cfg.check.hotSet, log);
    const echoC1 = scenarios.find((x) => x.transport === "tcp" && x.rpc === "check" && x.concurrency === 1 && !x.hotSet)?.echo.latency;

    log("open-loop rates up to the closed-loop maximum (TCP)");
    const sustainable = { sidecar: await sustain("sidecar"), echo: await sustain("echo") };
    clearInterval(rssTimer);
    const hwm = Math.max(bootstrapHwm, (await rssOf(sidecar.pid))?.hwm ?? NaN);
    await echo.stop();
    await sidecar.stop();

    // ---------------------------------------------------------------- ext_authz beside Check (own process, so the figures above stay those of a plain sidecar)
    const extAuthz = await extAuthzScenarios(cfg, env, fork, load, { replicaPath, natsUrl: nats.url, checkResponse: sample.typical });

    // ---------------------------------------------------------------- warm restarts
    log(`warm restart ×${cfg.warmRestarts} (existing replica, ${cfg.customers.toLocaleString("en")} customers)`);
    const runs: { readyMs: number; fromSpawnMs: number }[] = [];
    for (let k = 0; k < cfg.warmRestarts; k++) {
      const s = await fork("sidecar");
      await s.call("start", { replica: replicaPath, natsUrl: nats.url });
      const r = await s.call<{ readyMs: number }>("ready");
      const one = { readyMs: round(r.readyMs, 1), fromSpawnMs: round(performance.now() - s.forkedAt, 1) };
      runs.push(one);
      await s.stop();
      log(`  ready ${one.readyMs} ms after start (${one.fromSpawnMs} ms from process spawn)`);
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
    await load.stop();
    await seed.stop();

    // Progress samples of the bootstrap alone (the bursts come later).
    const boot = timeline.filter((x) => x.t_s <= ready.readyMs / 1000 + 0.5);
    let peak = 0;
    for (let i = 0; i < boot.length; i++) {
      const a = boot[i] as (typeof boot)[number];
      const b = boot.find((x) => x.t_s >= a.t_s + 1);
      if (b) peak = Math.max(peak, (b.revision - a.revision) / (b.t_s - a.t_s));
    }
    const bootstrapEnd = boot.findIndex((x) => x.revision >= ready.revision);
    return {
      customers: cfg.customers,
      seed: {
        seconds: round(seeded.seconds, 2),
        rate: round(seeded.rate, 0),
        streamBytes: info.bytes,
        recordBytes: round(seeded.bytes / cfg.customers, 0),
        templateMedianBytes: tpl.medianBytes,
        templateMaxBytes: tpl.maxBytes,
      },
      bootstrap: {
        readyMs: round(ready.readyMs, 1),
        fromSpawnMs: round(fromSpawnMs, 1),
        revision: ready.revision,
        docsPerSecond: round((ready.revision / ready.readyMs) * 1000, 0),
        peakDocsPerSecond: round(peak, 0),
        // One sample a second is plenty for the record.
        timeline: boot.filter((x, i) => i === 0 || Math.floor(x.t_s) !== Math.floor((boot[i - 1] as (typeof boot)[number]).t_s) || i === bootstrapEnd),
        checksDuring: checksDuringBootstrap,
        checksAfter,
      },
      bursts,
      replica,
      rss: { atRestBytes: atRest?.rss ?? NaN, atRestAnonBytes: atRest?.anon ?? NaN, atRestFileBytes: atRest?.file ?? NaN, heapAtRest: { heapTotal: heapAtRest.heapTotal, heapUsed: heapAtRest.heapUsed, external: heapAtRest.external }, underLoadMaxBytes: rssMax, peakHwmBytes: hwm, afterBootstrapBytes: afterBootstrapRss },
      sizes: {
        requestBytes: round(sample.requestBytes, 1),
        responseBytes: round(sample.responseBytes, 1),
        batchRequestBytes: round(sample.batchRequestBytes, 1),
        batchResponseBytes: round(sample.batchResponseBytes, 1),
      },
      answerMix: sample.statuses,
      staleInSample: sample.stale,
      scenarios,
      survivors,
      calibration,
      sustainable,
      client: { ...client, echo: echoC1 },
      warmRestart: { runs, medianReadyMs: median(runs.map((r) => r.readyMs)), medianFromSpawnMs: median(runs.map((r) => r.fromSpawnMs)) },
      extAuthz,
    };
  } finally {
    killAll();
    await nats.dispose();
  }
}

/** Where one scenario's two servers listen, and their processes (for CPU time, and a garbage collection before each round). */
interface PairServers {
  readonly sidecar: { readonly address: string; readonly child: Child };
  readonly echo: { readonly address: string; readonly child: Child };
}

/**
 * One scenario: the sidecar and its echo floor in `rounds` short rounds, pooled after; `prime`
 * runs before each round. Both servers are measured over the same moments of the machine within
 * each round (`runInterleaved`: one call at a time they take turns call by call; with more in
 * flight, or at a rate, both are loaded at once).
 */
async function runPair(
  load: Child,
  servers: PairServers,
  customers: number,
  rounds: number,
  plan: RunPlan,
  prime?: () => Promise<void>,
): Promise<Pick<Scenario, "sidecar" | "echo" | "ratio" | "rounds" | "interleaved">> {
  const echoes: Measured[] = [];
  const sidecars: Measured[] = [];
  for (let k = 0; k < rounds; k++) {
    // Later rounds need less warm-up: only the connection is new.
    const share = { ...plan, durationMs: Math.round(plan.durationMs / rounds), warmupMs: k === 0 ? plan.warmupMs : Math.round(plan.warmupMs / 4) };
    const [s, e] = await measureInterleaved(load, servers, customers, share, prime);
    sidecars.push(s);
    echoes.push(e);
  }
  const e = pooled(echoes);
  const s = pooled(sidecars);
  return {
    sidecar: s,
    echo: e,
    ratio: ratios(s, e),
    rounds: sidecars.map((sk, k) => {
      const r = ratios(pooled([sk]), pooled([echoes[k] as Measured]));
      return { p50: r.p50, p99: r.p99, serverCpuPerCall: r.serverCpuPerCall };
    }),
    interleaved: true,
  };
}

/**
 * One interleaved round (see `runPair`): the sidecar's and the echo's calls and each process's CPU
 * time over the same window. The client's CPU time is split between them by calls.
 */
async function measureInterleaved(load: Child, servers: PairServers, customers: number, plan: RunPlan, prime?: () => Promise<void>): Promise<[Measured, Measured]> {
  await load.call("connect", { address: servers.sidecar.address, customers });
  await load.call("connectSecond", { address: servers.echo.address });
  await prime?.();
  // Both start the round with a compacted heap: a process's cost per call depends on the garbage
  // it still carries from earlier rows and rounds, by more than the margins judged here
  // (BENCHMARKS.md, Method). What the round allocates, it collects.
  await Promise.all([servers.sidecar.child.call("collectGarbage"), servers.echo.child.call("collectGarbage")]);
  // The warm-up runs before the CPU clocks start, so CPU per call is the measured calls' alone, as
  // latency is: a round's warm-up also carries the collection's aftermath (concurrent sweeping).
  if (plan.warmupMs > 0) await load.call<InterleavedResult>("runInterleaved", { ...plan, durationMs: plan.warmupMs, warmupMs: 0 });
  const s0 = cpuMsOf(servers.sidecar.child.pid);
  const e0 = cpuMsOf(servers.echo.child.pid);
  const c0 = cpuMsOf(load.pid);
  const { a, b } = await load.call<InterleavedResult>("runInterleaved", { ...plan, warmupMs: 0 });
  const clientMs = cpuMsOf(load.pid) - c0;
  const share = (r: RunResult): number => (clientMs * r.answered) / Math.max(1, a.answered + b.answered);
  return [
    { r: a, serverMs: cpuMsOf(servers.sidecar.child.pid) - s0, clientMs: share(a) },
    { r: b, serverMs: cpuMsOf(servers.echo.child.pid) - e0, clientMs: share(b) },
  ];
}

/**
 * `Check` one at a time over TCP about the hot set, on the sidecar that bootstrapped the replica
 * and answered checks through the bursts, beside an echo of its own (started now, so as fresh as
 * the echo of the other rows).
 */
async function agedHotSet(
  cfg: Config,
  env: Env,
  fork: (role: string) => Promise<Child>,
  load: Child,
  address: string,
  sidecar: Child,
): Promise<{ scenario: Scenario; survivorBytesPerCall: number }> {
  await load.call("connect", { address, customers: cfg.customers });
  const { typical } = await load.call<{ typical: Uint8Array }>("sample", { n: 1_000 });
  const echo = await fork("echo");
  try {
    const echoAddr = await echo.call<{ tcp: string }>("start", { socket: join(env.dir, "echo-aged.sock"), response: typical });
    const hotSet = cfg.check.hotSet;
    const name = `Check closed c=1, hot set of ${hotSet.toLocaleString("en")}, not restarted after the bursts`;
    const plan: RunPlan = { durationMs: cfg.check.durationMs, warmupMs: cfg.check.warmupMs, hotSet, rpc: "check", mode: "closed", concurrency: 1 };
    const servers = { sidecar: { address, child: sidecar }, echo: { address: echoAddr.tcp, child: echo } };
    const pair = await runPair(load, servers, cfg.customers, cfg.check.rounds, plan, async () => {
      await load.call("prime", { hotSet });
    });
    const { sidecar: s, echo: e } = pair;
    env.log(
      `  tcp ${name.padEnd(44)} sidecar p50 ${s.latency.p50_us} p99 ${s.latency.p99_us} µs ${s.cpuPerCall?.server_us} µs CPU/call | ` +
        `echo p50 ${e.latency.p50_us} p99 ${e.latency.p99_us} µs ${e.cpuPerCall?.server_us} µs CPU/call (rounds ${pair.rounds.map((r) => r.serverCpuPerCall).join(", ")})`,
    );
    const scenario: Scenario = { name, transport: "tcp", rpc: "check", mode: "closed", concurrency: 1, hotSet, aged: true, ...pair };
    return { scenario, survivorBytesPerCall: await survivorsPerCall(cfg, load, sidecar) };
  } finally {
    await echo.stop();
  }
}

/**
 * Bytes per call of the objects that outlived a young-generation collection, `Check` one at a
 * time about the hot set (V8's sampling heap profiler, objects a scavenge let go not counted):
 * what each call leaves the collector to copy, promote and mark. Slower calls do not change it,
 * so it tells a process's history apart where CPU time per call is too noisy to. `load` is
 * connected to `sidecar`.
 */
async function survivorsPerCall(cfg: Config, load: Child, sidecar: Child): Promise<number> {
  const hotSet = cfg.check.hotSet;
  await load.call("prime", { hotSet });
  await sidecar.call("collectGarbage");
  await sidecar.call("heapSampleStart", { survivors: true, intervalBytes: 16_384 });
  const r = await load.call<RunResult>("run", { rpc: "check", mode: "closed", concurrency: 1, durationMs: Math.round(cfg.check.durationMs / 2), warmupMs: 0, hotSet });
  const { bytes } = await sidecar.call<{ bytes: number }>("heapSampleStop", {});
  return round(bytes / Math.max(1, r.answered), 0);
}

/**
 * A sidecar on the warm replica with an ext_authz rules file (one route per feature of the Check
 * mix), serving CheckService and Authorization on one TCP listener: Check, ext_authz with the
 * customer in a header, then (the rules file rewritten, reloaded without a restart) in an ES256
 * JWT. The echo floor answers each with a canned answer of the sidecar's.
 */
async function extAuthzScenarios(
  cfg: Config,
  env: Env,
  fork: (role: string) => Promise<Child>,
  load: Child,
  a: { replicaPath: string; natsUrl: string; checkResponse: Uint8Array },
): Promise<SidecarResults["extAuthz"]> {
  const { log } = env;
  const dir = join(env.dir, "ext-authz");
  mkdirSync(dir, { recursive: true });
  const rulesPath = join(dir, "rules.yaml");
  writeFileSync(rulesPath, benchRules({ header: "x-customer-id" }));
  const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
  writeFileSync(join(dir, "jwks.json"), JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "bench", alg: "ES256", use: "sig" }] }));
  log("ext_authz Check beside CheckService/Check (one sidecar, one TCP listener, warm replica)");
  const sidecar = await fork("sidecar");
  const started = await sidecar.call<{ tcp: string }>("start", { replica: a.replicaPath, natsUrl: a.natsUrl, extAuthzRules: rulesPath });
  await sidecar.call("ready");
  await load.call("connect", { address: started.tcp, customers: cfg.customers });
  await load.call("tokens", { privateJwk: await exportJWK(privateKey), kid: "bench", count: 2_000 });
  const typical = await load.call<{ response: unknown }>("authzOnce", { rpc: "authz" });
  const echo = await fork("echo");
  const echoAddr = await echo.call<{ tcp: string }>("start", { response: a.checkResponse, authzResponse: typical.response });
  const servers = { sidecar: { address: started.tcp, child: sidecar }, echo: { address: echoAddr.tcp, child: echo } };
  const base = { durationMs: cfg.check.durationMs, warmupMs: cfg.check.warmupMs, mode: "closed" as const };
  const n = cfg.check.concurrency;
  const scenarios: Scenario[] = [];
  const run = async (name: string, plan: RunPlan): Promise<void> => {
    const sc: Scenario = { name, transport: "tcp", rpc: plan.rpc, mode: plan.mode, ...(plan.concurrency ? { concurrency: plan.concurrency } : {}), ...(await runPair(load, servers, cfg.customers, cfg.check.rounds, plan)) };
    scenarios.push(sc);
    log(`  ${name.padEnd(36)} sidecar p50 ${sc.sidecar.latency.p50_us} p99 ${sc.sidecar.latency.p99_us} µs ${sc.sidecar.throughput}/s | echo p50 ${sc.echo.latency.p50_us} p99 ${sc.echo.latency.p99_us} µs`);
  };
  for (const c of [1, n]) {
    await run(`CheckService/Check closed c=${c}`, { ...base, rpc: "check", concurrency: c });
    await run(`ext_authz Check, header id, c=${c}`, { ...base, rpc: "authz", concurrency: c });
  }
  // The same routes, the customer now in an ES256 JWT: the rules file is rewritten and reloaded.
  writeFileSync(rulesPath, benchRules({ jwt: { jwks_file: "jwks.json", algorithms: ["ES256"] } }));
  await load.call("connect", { address: started.tcp, customers: cfg.customers });
  for (let i = 0; ; i++) {
    const r = await load.call<{ status: string | undefined }>("authzOnce", { rpc: "authz-jwt" });
    if (r.status !== "UNAUTHENTICATED") break;
    if (i > 200) throw new Error("the sidecar did not reload the JWT rules within 10 s");
    await sleep(50);
  }
  for (const c of [1, n]) await run(`ext_authz Check, ES256 JWT, c=${c}`, { ...base, rpc: "authz-jwt", concurrency: c });
  await echo.stop();
  await sidecar.stop();
  return { rules: (parse(benchRules({ header: "x-customer-id" })) as { rules: unknown[] }).rules.length, scenarios };
}

/** ProofgateClient in its own process against the running sidecar: local mode (uniform, hot set), then over gRPC. */
async function clientSuite(
  fork: (role: string) => Promise<Child>,
  base: Omit<ClientPlan, "hotSet">,
  hotSet: number,
  log: (line: string) => void,
): Promise<Omit<ClientResults, "echo">> {
  const c = await fork("client");
  try {
    const one = async (name: string, plan: ClientPlan): Promise<ClientWindow> => {
      const r = await c.call<ClientRun>("run", plan);
      const w = { latency: Histogram.fromJSON(r.hist).summary(), checksPerSecond: round(r.checksPerSecond, 0), sources: r.sources };
      log(`  ProofgateClient ${name.padEnd(26)} p50 ${w.latency.p50_us} µs, p99 ${w.latency.p99_us} µs, ${w.checksPerSecond.toLocaleString("en")} checks/s (${JSON.stringify(w.sources)})`);
      return w;
    };
    log("ProofgateClient: local mode (the replica file, in process) and over gRPC, one call at a time");
    return {
      hotSet,
      localUniform: await one("local, uniform", base),
      localHot: await one(`local, hot set of ${hotSet}`, { ...base, hotSet }),
      grpc: await one("over gRPC (TCP)", { ...base, replica: false }),
    };
  } finally {
    await c.stop();
  }
}
