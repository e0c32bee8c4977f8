/**
 * A pod's resource limits for one benchmark process, with Linux control groups: a child group
 * (under the benchmark's own group, so any limit already on it still applies) with a CPU quota
 * and a memory limit, as a Kubernetes `resources.limits` of `cpu: 500m, memory: …` gives a
 * container. cgroup v2 (`cpu.max`, `memory.max`) where the unified hierarchy has the cpu and
 * memory controllers, else v1 (`cpu.cfs_quota_us`, `memory.limit_in_bytes`). Needs root.
 * `podCgroups()` says why not when they cannot be used, so the suite can skip with that reason.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sleep } from "./util.js";

export interface PodLimits {
  /** CPU quota in millicores (500 = half a core); undefined: no quota (the load client's group). */
  readonly cpuMillis: number | undefined;
  /** Undefined: no memory limit. */
  readonly memoryBytes: number | undefined;
}

/** What the kernel counted in a group: CFS periods, throttling, memory high-water mark, OOM kills. */
export interface GroupStats {
  readonly periods: number;
  readonly throttledPeriods: number;
  readonly throttledMs: number;
  /** Undefined where the kernel does not keep it (cgroup v2 before Linux 5.19). */
  readonly memoryPeakBytes: number | undefined;
  readonly oomKills: number;
}

/** The CFS period Kubernetes uses (100 ms); the quota is `cpuMillis / 1000` of it. */
const PERIOD_US = 100_000;
/**
 * The group's CPU weight against everything else on the machine: ten times a plain process's
 * (v1 shares 1,024, v2 weight 100). On a node a pod's request guarantees it its CPU; on a shared
 * benchmark machine a group at the default weight counts as one process among all the others and
 * would be starved by unrelated work long before its quota mattered.
 */
const WEIGHT = 10;

type Layout = { readonly version: 2; readonly parent: string } | { readonly version: 1; readonly cpuParent: string; readonly memoryParent: string };

/** Where child groups go, or why there are none. */
export function podCgroups(): { readonly ok: true; readonly layout: Layout } | { readonly ok: false; readonly reason: string } {
  if (process.platform !== "linux") return { ok: false, reason: `control groups are Linux only (this is ${process.platform})` };
  if (process.getuid?.() !== 0) return { ok: false, reason: "creating control groups needs root" };
  let mounts: string[][];
  let own: string[][];
  try {
    mounts = readFileSync("/proc/mounts", "utf8").split("\n").map((l) => l.split(" "));
    own = readFileSync("/proc/self/cgroup", "utf8").split("\n").filter(Boolean).map((l) => l.split(":"));
  } catch (err) {
    return { ok: false, reason: `cannot read /proc: ${err instanceof Error ? err.message : String(err)}` };
  }
  /** The group this process is in under `mount`, when that directory exists there; else the mount's root. */
  const under = (mount: string, path: string | undefined): string => {
    const dir = join(mount, path ?? "/");
    return existsSync(dir) ? dir : mount;
  };
  const v2 = mounts.find((m) => m[2] === "cgroup2");
  if (v2?.[1]) {
    const parent = under(v2[1], own.find((l) => l[0] === "0")?.[2]);
    const controllers = readOr(join(parent, "cgroup.controllers"), "").split(/\s+/);
    if (controllers.includes("cpu") && controllers.includes("memory")) return { ok: true, layout: { version: 2, parent } };
  }
  const v1 = (controller: string): string | undefined => {
    const mount = mounts.find((m) => m[2] === "cgroup" && (m[3] ?? "").split(",").includes(controller))?.[1];
    if (!mount) return undefined;
    return under(mount, own.find((l) => (l[1] ?? "").split(",").includes(controller))?.[2]);
  };
  const cpuParent = v1("cpu");
  const memoryParent = v1("memory");
  if (cpuParent && memoryParent) return { ok: true, layout: { version: 1, cpuParent, memoryParent } };
  return { ok: false, reason: "no cgroup v2 hierarchy with the cpu and memory controllers, and no cgroup v1 cpu and memory hierarchies are mounted" };
}

function readOr(file: string, fallback: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return fallback;
  }
}

/** `key value` lines (cpu.stat, memory.events) as numbers. */
function keyed(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const [k, v] = line.split(" ");
    if (k && v !== undefined) out[k] = Number(v);
  }
  return out;
}

/** One child group with a pod's limits. `remove()` it when its processes have exited. */
export class PodGroup {
  private constructor(
    readonly version: 1 | 2,
    /** The group's directories: one for v2, the cpu and the memory one for v1. */
    private readonly dirs: readonly { readonly dir: string; readonly parent: string }[],
  ) {}

  /** Creates the group and writes its limits; throws with the file and the kernel's reason if it cannot. */
  static create(name: string, limits: PodLimits): PodGroup {
    const found = podCgroups();
    if (!found.ok) throw new Error(found.reason);
    const l = found.layout;
    const quota = limits.cpuMillis === undefined ? undefined : String(Math.round((limits.cpuMillis / 1000) * PERIOD_US));
    const write = (file: string, value: string): void => {
      try {
        writeFileSync(file, value);
      } catch (err) {
        throw new Error(`cannot write "${value}" to ${file}: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    if (l.version === 2) {
      // The controllers must be enabled for the parent's children first (refused in a non-root
      // group that has processes of its own: the kernel's "no internal processes" rule).
      write(join(l.parent, "cgroup.subtree_control"), "+cpu +memory");
      const dir = join(l.parent, name);
      mkdirSync(dir);
      const g = new PodGroup(2, [{ dir, parent: l.parent }]);
      try {
        write(join(dir, "cpu.weight"), String(100 * WEIGHT));
        if (quota) write(join(dir, "cpu.max"), `${quota} ${PERIOD_US}`);
        if (limits.memoryBytes !== undefined) {
          write(join(dir, "memory.max"), String(limits.memoryBytes));
          // A pod has no swap: over the limit means an OOM kill, not a slow process.
          if (existsSync(join(dir, "memory.swap.max"))) write(join(dir, "memory.swap.max"), "0");
        }
      } catch (err) {
        rmdirSync(dir);
        throw err;
      }
      return g;
    }
    const cpu = join(l.cpuParent, name);
    const memory = join(l.memoryParent, name);
    mkdirSync(cpu);
    try {
      mkdirSync(memory);
    } catch (err) {
      rmdirSync(cpu);
      throw err;
    }
    const g = new PodGroup(1, [
      { dir: cpu, parent: l.cpuParent },
      { dir: memory, parent: l.memoryParent },
    ]);
    try {
      write(join(cpu, "cpu.shares"), String(1024 * WEIGHT));
      if (quota) {
        write(join(cpu, "cpu.cfs_period_us"), String(PERIOD_US));
        write(join(cpu, "cpu.cfs_quota_us"), quota);
      }
      if (limits.memoryBytes !== undefined) write(join(memory, "memory.limit_in_bytes"), String(limits.memoryBytes));
      // Memory the process allocated before the move counts here too (v1 only; best effort).
      try {
        writeFileSync(join(memory, "memory.move_charge_at_immigrate"), "3");
      } catch {
        // deprecated or absent in this kernel: the little allocated before the move is not counted
      }
    } catch (err) {
      rmdirSync(cpu);
      rmdirSync(memory);
      throw err;
    }
    return g;
  }

  get path(): string {
    return this.dirs.map((d) => d.dir).join(", ");
  }

  /** Moves a process (all its threads; its future children) into the group. */
  add(pid: number): void {
    for (const { dir } of this.dirs) writeFileSync(join(dir, "cgroup.procs"), String(pid));
  }

  stats(): GroupStats {
    const first = this.dirs[0];
    const memoryDir = this.dirs[this.dirs.length - 1];
    if (!first || !memoryDir) throw new Error("no group");
    const cpu = keyed(readOr(join(first.dir, "cpu.stat"), ""));
    if (this.version === 2) {
      const peak = readOr(join(memoryDir.dir, "memory.peak"), "").trim();
      return {
        periods: cpu["nr_periods"] ?? NaN,
        throttledPeriods: cpu["nr_throttled"] ?? NaN,
        throttledMs: (cpu["throttled_usec"] ?? NaN) / 1000,
        memoryPeakBytes: peak ? Number(peak) : undefined,
        oomKills: keyed(readOr(join(memoryDir.dir, "memory.events"), ""))["oom_kill"] ?? 0,
      };
    }
    return {
      periods: cpu["nr_periods"] ?? NaN,
      throttledPeriods: cpu["nr_throttled"] ?? NaN,
      throttledMs: (cpu["throttled_time"] ?? NaN) / 1e6,
      memoryPeakBytes: Number(readOr(join(memoryDir.dir, "memory.max_usage_in_bytes"), "NaN")),
      oomKills: keyed(readOr(join(memoryDir.dir, "memory.oom_control"), ""))["oom_kill"] ?? 0,
    };
  }

  /**
   * Removes the group: processes still in it go back to the parent group first; a process that
   * has just exited can keep the group busy briefly, so this retries for a second.
   */
  async remove(): Promise<void> {
    for (const { dir, parent } of this.dirs) {
      for (let attempt = 0; ; attempt++) {
        if (!existsSync(dir)) break;
        for (const pid of readOr(join(dir, "cgroup.procs"), "").split("\n").filter(Boolean)) {
          try {
            writeFileSync(join(parent, "cgroup.procs"), pid);
          } catch {
            // it exited meanwhile
          }
        }
        try {
          rmdirSync(dir);
          break;
        } catch (err) {
          if (attempt >= 20) throw new Error(`cannot remove control group ${dir}: ${err instanceof Error ? err.message : String(err)}`);
          await sleep(50);
        }
      }
    }
  }
}

/** Differences between two readings of a group's counters (the peak and OOM kills are the later reading's). */
export function statsSince(before: GroupStats, after: GroupStats): GroupStats {
  return {
    periods: after.periods - before.periods,
    throttledPeriods: after.throttledPeriods - before.throttledPeriods,
    throttledMs: Math.round((after.throttledMs - before.throttledMs) * 10) / 10,
    memoryPeakBytes: after.memoryPeakBytes,
    oomKills: after.oomKills,
  };
}
