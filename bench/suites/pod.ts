/**
 * The pod profile: the sidecar as a pod with `cpu: 500m` and a memory limit runs it, each
 * process in its own control group with that CPU quota and memory limit (cgroup.ts), checks at a
 * fixed rate from a client process without quota (the application, in its own container):
 *   1. cold start replaying the stream, checks meanwhile;
 *   2. at rest (the baseline every ratio is taken against);
 *   3. a burst of document updates at 5,000/s;
 *   4. a second sidecar's cold start from a snapshot (written by the snapshot producer first);
 *   5. the bare grpc-js echo under the same quota, at the same rate (the floor).
 * The kernel's throttling counters for each phase say how often the quota ran out.
 */
import { join } from "node:path";
import { NatsServer } from "#proofgate/dev/nats-server.js";
import { PodGroup, podCgroups, statsSince, type GroupStats, type PodLimits } from "../cgroup.js";
import type { Config } from "../config.js";
import type { Child } from "../ipc.js";
import type { RunResult } from "../roles/load.js";
import { cpuMsOf, round, sleep } from "../util.js";
import { roles, window, type Env, type Window } from "./sidecar.js";

export interface PodPhase {
  readonly checks: Window;
  /** CPU the server process used in the phase, in cores (CPU time ÷ wall time): at most the quota. */
  readonly cpuCores: number;
  /** CFS periods, throttled periods and time, in the phase. */
  readonly throttling: GroupStats;
  /** This phase's Check p50 and p99 over the sidecar's own at rest, under the same quota. */
  readonly ratio: { readonly p50: number; readonly p99: number };
}

export interface PodResults {
  readonly customers: number;
  readonly limits: { readonly cpuMillis: number; readonly memoryBytes: number };
  /** Checks/s offered in every phase. */
  readonly rate: number;
  /** Why the profile did not run (no control groups here); nothing else is set then. */
  readonly skipped?: string;
  readonly cgroup?: "v1" | "v2";
  readonly atRest?: PodPhase;
  readonly coldReplay?: PodPhase & { readonly readyMs: number };
  readonly coldSnapshot?: PodPhase & { readonly readyMs: number };
  readonly burst?: PodPhase & { readonly count: number; readonly rate: number; readonly appliedSeconds: number };
  /** The echo floor under the same quota, same rate; `ratio` is the sidecar at rest over it. */
  readonly echo?: PodPhase;
  /** Highest memory use the kernel charged the sidecar's group (page cache included), and OOM kills. */
  readonly memory?: { readonly peakBytes: number | undefined; readonly oomKills: number };
}

const ratio = (a: number, b: number): number => (b > 0 ? Math.round((a / b) * 100) / 100 : NaN);

export async function podSuite(cfg: Config, env: Env): Promise<PodResults> {
  const { log } = env;
  const limits = { cpuMillis: cfg.pod.cpuMillis, memoryBytes: cfg.pod.memoryBytes };
  const base = { customers: cfg.customers, limits, rate: cfg.pod.rate };
  const found = podCgroups();
  if (!found.ok) {
    log(`pod profile skipped: ${found.reason}`);
    return { ...base, skipped: found.reason };
  }
  try {
    // Mounted is not enough (a v2 parent with processes of its own refuses child controllers): try one.
    await PodGroup.create(`proofgate-bench-${process.pid}-probe`, limits).remove();
  } catch (err) {
    const reason = `cannot create a control group: ${err instanceof Error ? err.message : String(err)}`;
    log(`pod profile skipped: ${reason}`);
    return { ...base, skipped: reason };
  }
  const { fork, killAll } = roles(env);
  const groups: PodGroup[] = [];
  let serial = 0;
  /** Forks a role straight into a new group with the pod's limits, before it does any work. */
  const forkInPod = async (role: string, groupLimits: PodLimits = limits): Promise<{ child: Child; group: PodGroup }> => {
    const group = PodGroup.create(`proofgate-bench-${process.pid}-${++serial}`, groupLimits);
    groups.push(group);
    const child = await fork(role);
    group.add(child.pid);
    return { child, group };
  };
  const nats = await NatsServer.start();
  try {
    const seed = await fork("seed");
    await seed.call("connect", { url: nats.url });
    await seed.call("templates", { count: cfg.templates, seed: 42, now: Date.now() });
    await seed.call("catalog");
    log(`pod profile (${cfg.pod.cpuMillis}m CPU, ${Math.round(cfg.pod.memoryBytes / 2 ** 20)} MiB; cgroup v${found.layout.version}): seeding ${cfg.customers.toLocaleString("en")} customer documents`);
    await seed.call("documents", { count: cfg.customers, window: cfg.seedWindow });
    const producer = await fork("snapshotter");
    await producer.call("snapshot", { replica: join(env.dir, "pod-snapshotter.db"), natsUrl: nats.url });
    await producer.stop();
    // The application: no quota, but the same weight as the pods, so other work on the machine does not starve it either.
    const { child: load } = await forkInPod("load", { cpuMillis: undefined, memoryBytes: undefined });

    /** Measures from `begin()` to `end()`: the server's CPU and its group's throttling counters. */
    const meter = (server: Child, group: PodGroup): (() => Omit<PodPhase, "checks" | "ratio">) => {
      const stats = group.stats();
      const cpu = cpuMsOf(server.pid);
      const t = performance.now();
      return () => ({ cpuCores: round((cpuMsOf(server.pid) - cpu) / (performance.now() - t), 2), throttling: statsSince(stats, group.stats()) });
    };
    /** One phase of a running server: checks at the rate while `during` runs. */
    const phase = async <T>(server: Child, group: PodGroup, during: () => Promise<T>): Promise<Omit<PodPhase, "ratio"> & { value: T }> => {
      await load.call("backgroundMark");
      const end = meter(server, group);
      const value = await during();
      const checks = window(await load.call<RunResult>("backgroundMark"));
      return { checks, ...end(), value };
    };
    /** A cold sidecar in its own pod group, checks at the rate from its start until ready. */
    const coldStart = async (name: string, snapshotBootstrap: boolean): Promise<Omit<PodPhase, "ratio"> & { sidecar: Child; group: PodGroup; readyMs: number }> => {
      const { child: sidecar, group } = await forkInPod("sidecar");
      const end = meter(sidecar, group);
      const started = await sidecar.call<{ tcp: string }>("start", { replica: join(env.dir, `pod-${name}.db`), natsUrl: nats.url, snapshotBootstrap });
      await load.call("connect", { address: started.tcp, customers: cfg.customers });
      await load.call("backgroundStart", { rpc: "check", rate: cfg.pod.rate });
      const ready = await sidecar.call<{ readyMs: number }>("ready");
      const checks = window(await load.call<RunResult>("backgroundMark"));
      return { sidecar, group, readyMs: round(ready.readyMs, 0), checks, ...end() };
    };
    const line = (what: string, p: Omit<PodPhase, "ratio">): void => {
      const w = p.checks.latency;
      const t = p.throttling;
      log(`  ${what.padEnd(34)} p50 ${w.p50_us} µs, p99 ${w.p99_us} µs, max ${w.max_us} µs (${w.count} checks); ${p.cpuCores} cores; throttled ${t.throttledPeriods}/${t.periods} periods, ${Math.round(t.throttledMs)} ms`);
    };

    // ---------------------------------------------------------------- cold start (replay), at rest, burst
    const replay = await coldStart("replay", false);
    line(`cold start, replay (${(replay.readyMs / 1000).toFixed(2)} s)`, replay);
    // Let the WAL checkpoint and the caches settle before the baseline.
    await sleep(1_000);
    const rest = await phase(replay.sidecar, replay.group, () => sleep(cfg.pod.atRestMs));
    line("at rest", rest);
    const burst = await phase(replay.sidecar, replay.group, async () => {
      const start = performance.now();
      const b = await seed.call<{ lastSeq: number }>("burst", { count: cfg.burst, customers: cfg.customers, window: cfg.seedWindow, rate: cfg.burstRate });
      const applied = await replay.sidecar.call<{ reached: boolean }>("waitRevision", { revision: b.lastSeq, timeoutMs: 300_000 });
      if (!applied.reached) throw new Error("the sidecar under the pod quota did not apply the burst within 300 s");
      return (performance.now() - start) / 1000;
    });
    line(`burst at ${cfg.burstRate.toLocaleString("en")}/s (${burst.value.toFixed(2)} s)`, burst);
    await load.call("backgroundStop");
    const typical = await load.call<{ typical: Uint8Array }>("sample", { n: 200 });
    const memory = replay.group.stats();
    await replay.sidecar.stop();

    // ---------------------------------------------------------------- cold start from the snapshot
    const fromSnapshot = await coldStart("snapshot", true);
    line(`cold start, snapshot (${(fromSnapshot.readyMs / 1000).toFixed(2)} s)`, fromSnapshot);
    await load.call("backgroundStop");
    await fromSnapshot.sidecar.stop();

    // ---------------------------------------------------------------- the echo floor under the same quota
    const { child: echo, group: echoGroup } = await forkInPod("echo");
    const echoAddr = await echo.call<{ tcp: string }>("start", { response: typical.typical });
    await load.call("connect", { address: echoAddr.tcp, customers: cfg.customers });
    await load.call("backgroundStart", { rpc: "check", rate: cfg.pod.rate });
    await sleep(1_000);
    const floor = await phase(echo, echoGroup, () => sleep(cfg.pod.atRestMs));
    await load.call("backgroundStop");
    line("echo floor", floor);
    await echo.stop();

    const at = rest.checks.latency;
    const vsRest = (w: Window): PodPhase["ratio"] => ({ p50: ratio(w.latency.p50_us, at.p50_us), p99: ratio(w.latency.p99_us, at.p99_us) });
    const measured = (p: Omit<PodPhase, "ratio">): Omit<PodPhase, "ratio"> => ({ checks: p.checks, cpuCores: p.cpuCores, throttling: p.throttling });
    return {
      ...base,
      cgroup: found.layout.version === 2 ? "v2" : "v1",
      atRest: { ...measured(rest), ratio: { p50: 1, p99: 1 } },
      coldReplay: { ...measured(replay), ratio: vsRest(replay.checks), readyMs: replay.readyMs },
      coldSnapshot: { ...measured(fromSnapshot), ratio: vsRest(fromSnapshot.checks), readyMs: fromSnapshot.readyMs },
      burst: { ...measured(burst), ratio: vsRest(burst.checks), count: cfg.burst, rate: cfg.burstRate, appliedSeconds: round(burst.value, 2) },
      echo: { ...measured(floor), ratio: { p50: ratio(at.p50_us, floor.checks.latency.p50_us), p99: ratio(at.p99_us, floor.checks.latency.p99_us) } },
      memory: { peakBytes: memory.memoryPeakBytes, oomKills: memory.oomKills },
    };
  } finally {
    killAll();
    await nats.dispose();
    for (const g of groups) await g.remove().catch((err: unknown) => log(`warning: ${err instanceof Error ? err.message : String(err)}`));
  }
}
