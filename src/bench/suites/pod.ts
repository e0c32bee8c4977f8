/**
 * The pod profile: the sidecar as a pod with `cpu: 500m` and a memory limit runs it, each
 * process in its own control group with that CPU quota and memory limit (cgroup.ts), checks at a
 * fixed rate from an unconstrained client process (the application, in its own container):
 *   1. cold start replaying the stream, checks meanwhile;
 *   2. at rest (the baseline every ratio is taken against);
 *   3. a burst of document updates at 5,000/s;
 *   4. a second sidecar's cold start from a snapshot (written by the snapshot producer first);
 *   5. the bare grpc-js echo under the same quota, at the same rate (the floor).
 * The kernel's throttling counters for each phase say how often the quota ran out.
 */
import { join } from "node:path";
import { NatsServer } from "../../dev/nats-server.js";
import { PodGroup, podCgroups, statsSince, type GroupStats } from "../cgroup.js";
import type { Config } from "../config.js";
import type { Child } from "../ipc.js";
import type { RunResult } from "../roles/load.js";
import { round, sleep } from "../util.js";
import { roles, window, type Env, type Window } from "./sidecar.js";

export interface PodPhase {
  readonly checks: Window;
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
  const base = { customers: cfg.customers, limits, rate: cfg.backgroundRate };
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
  const forkInPod = async (role: string): Promise<{ child: Child; group: PodGroup }> => {
    const group = PodGroup.create(`proofgate-bench-${process.pid}-${++serial}`, limits);
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
    const load = await fork("load");

    /** One phase: `during` runs with checks at the rate; returns the checks and the group's counters over it. */
    const phase = async <T>(group: PodGroup, during: () => Promise<T>): Promise<{ checks: Window; throttling: GroupStats; value: T }> => {
      await load.call("backgroundMark");
      const before = group.stats();
      const value = await during();
      const checks = window(await load.call<RunResult>("backgroundMark"));
      return { checks, throttling: statsSince(before, group.stats()), value };
    };
    /** A cold sidecar in its own pod group, checks at the rate from its start until ready. */
    const coldStart = async (name: string, snapshotBootstrap: boolean): Promise<{ sidecar: Child; group: PodGroup; readyMs: number; checks: Window; throttling: GroupStats }> => {
      const { child: sidecar, group } = await forkInPod("sidecar");
      const before = group.stats();
      const started = await sidecar.call<{ tcp: string }>("start", { replica: join(env.dir, `pod-${name}.db`), natsUrl: nats.url, snapshotBootstrap });
      await load.call("connect", { address: started.tcp, customers: cfg.customers });
      await load.call("backgroundStart", { rpc: "check", rate: cfg.backgroundRate });
      const ready = await sidecar.call<{ readyMs: number }>("ready");
      const checks = window(await load.call<RunResult>("backgroundMark"));
      return { sidecar, group, readyMs: round(ready.readyMs, 0), checks, throttling: statsSince(before, group.stats()) };
    };
    const line = (what: string, w: Window, t: GroupStats): void =>
      log(`  ${what.padEnd(34)} p50 ${w.latency.p50_us} µs, p99 ${w.latency.p99_us} µs, max ${w.latency.max_us} µs (${w.latency.count} checks); throttled ${t.throttledPeriods}/${t.periods} periods, ${Math.round(t.throttledMs)} ms`);

    // ---------------------------------------------------------------- cold start (replay), at rest, burst
    const replay = await coldStart("replay", false);
    line(`cold start, replay (${(replay.readyMs / 1000).toFixed(2)} s)`, replay.checks, replay.throttling);
    // Let the WAL checkpoint and the caches settle before the baseline.
    await sleep(1_000);
    const rest = await phase(replay.group, () => sleep(cfg.pod.atRestMs));
    line("at rest", rest.checks, rest.throttling);
    const burst = await phase(replay.group, async () => {
      const start = performance.now();
      const b = await seed.call<{ lastSeq: number }>("burst", { count: cfg.burst, customers: cfg.customers, window: cfg.seedWindow, rate: cfg.burstRate });
      const applied = await replay.sidecar.call<{ reached: boolean }>("waitRevision", { revision: b.lastSeq, timeoutMs: 300_000 });
      if (!applied.reached) throw new Error("the sidecar under the pod quota did not apply the burst within 300 s");
      return (performance.now() - start) / 1000;
    });
    line(`burst at ${cfg.burstRate.toLocaleString("en")}/s (${burst.value.toFixed(2)} s)`, burst.checks, burst.throttling);
    await load.call("backgroundStop");
    const typical = await load.call<{ typical: Uint8Array }>("sample", { n: 200 });
    const memory = replay.group.stats();
    await replay.sidecar.stop();

    // ---------------------------------------------------------------- cold start from the snapshot
    const fromSnapshot = await coldStart("snapshot", true);
    line(`cold start, snapshot (${(fromSnapshot.readyMs / 1000).toFixed(2)} s)`, fromSnapshot.checks, fromSnapshot.throttling);
    await load.call("backgroundStop");
    await fromSnapshot.sidecar.stop();

    // ---------------------------------------------------------------- the echo floor under the same quota
    const { child: echo, group: echoGroup } = await forkInPod("echo");
    const echoAddr = await echo.call<{ tcp: string }>("start", { response: typical.typical });
    await load.call("connect", { address: echoAddr.tcp, customers: cfg.customers });
    await load.call("backgroundStart", { rpc: "check", rate: cfg.backgroundRate });
    await sleep(1_000);
    const floor = await phase(echoGroup, () => sleep(cfg.pod.atRestMs));
    await load.call("backgroundStop");
    line("echo floor", floor.checks, floor.throttling);
    await echo.stop();

    const at = rest.checks.latency;
    const vsRest = (w: Window): PodPhase["ratio"] => ({ p50: ratio(w.latency.p50_us, at.p50_us), p99: ratio(w.latency.p99_us, at.p99_us) });
    return {
      ...base,
      cgroup: found.layout.version === 2 ? "v2" : "v1",
      atRest: { checks: rest.checks, throttling: rest.throttling, ratio: { p50: 1, p99: 1 } },
      coldReplay: { checks: replay.checks, throttling: replay.throttling, ratio: vsRest(replay.checks), readyMs: replay.readyMs },
      coldSnapshot: { checks: fromSnapshot.checks, throttling: fromSnapshot.throttling, ratio: vsRest(fromSnapshot.checks), readyMs: fromSnapshot.readyMs },
      burst: { checks: burst.checks, throttling: burst.throttling, ratio: vsRest(burst.checks), count: cfg.burst, rate: cfg.burstRate, appliedSeconds: round(burst.value, 2) },
      echo: { checks: floor.checks, throttling: floor.throttling, ratio: { p50: ratio(at.p50_us, floor.checks.latency.p50_us), p99: ratio(at.p99_us, floor.checks.latency.p99_us) } },
      memory: { peakBytes: memory.memoryPeakBytes, oomKills: memory.oomKills },
    };
  } finally {
    killAll();
    await nats.dispose();
    for (const g of groups) await g.remove().catch((err: unknown) => log(`warning: ${err instanceof Error ? err.message : String(err)}`));
  }
}
