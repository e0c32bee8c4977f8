import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";

/**
 * The CPU quota this process runs under, in cores (a pod's `cpu: 500m` limit is 0.5), from its
 * control groups: cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us / cpu.cfs_period_us`, the smallest
 * along the path to the root (a pod's limit may sit on a parent group). Undefined when there is
 * none or it cannot be read (not Linux, no cgroup filesystem). `root` is for tests: a directory
 * standing for `/`, with `proc/self/{mounts,cgroup}` and the groups' files under it.
 */
export function cpuQuotaCores(root = "/"): number | undefined {
  let mounts: string[][];
  let own: string[][];
  try {
    mounts = readFileSync(join(root, "proc/self/mounts"), "utf8").split("\n").map((l) => l.split(" "));
    own = readFileSync(join(root, "proc/self/cgroup"), "utf8").split("\n").filter(Boolean).map((l) => l.split(":"));
  } catch {
    return undefined;
  }
  const smallest = (mount: string, path: string, read: (dir: string) => number | undefined): number | undefined => {
    let best: number | undefined;
    // The group's path as this process sees it, then each parent up to the mount.
    for (let p = path; ; p = p.slice(0, Math.max(0, p.lastIndexOf("/")))) {
      const q = read(join(root, mount, p));
      if (q !== undefined && (best === undefined || q < best)) best = q;
      if (p === "" || p === "/") break;
    }
    return best;
  };
  const text = (file: string): string | undefined => {
    try {
      return readFileSync(file, "utf8").trim();
    } catch {
      return undefined;
    }
  };
  const quotas: number[] = [];
  const v2 = mounts.find((m) => m[2] === "cgroup2")?.[1];
  const v2Path = own.find((l) => l[0] === "0")?.[2];
  if (v2 && v2Path !== undefined) {
    const q = smallest(v2, v2Path, (dir) => {
      const [quota, period] = (text(join(dir, "cpu.max")) ?? "").split(" ");
      return quota && quota !== "max" && Number(period) > 0 ? Number(quota) / Number(period) : undefined;
    });
    if (q !== undefined) quotas.push(q);
  }
  const v1 = mounts.find((m) => m[2] === "cgroup" && (m[3] ?? "").split(",").includes("cpu"))?.[1];
  const v1Path = own.find((l) => (l[1] ?? "").split(",").includes("cpu"))?.[2];
  if (v1 && v1Path !== undefined) {
    const q = smallest(v1, v1Path, (dir) => {
      const quota = Number(text(join(dir, "cpu.cfs_quota_us")));
      const period = Number(text(join(dir, "cpu.cfs_period_us")));
      return quota > 0 && period > 0 ? quota / period : undefined;
    });
    if (q !== undefined) quotas.push(q);
  }
  return quotas.length ? Math.min(...quotas) : undefined;
}

/** Not yet decided: null; no quota: undefined. */
let processGovernor: CpuGovernor | undefined | null = null;

/** The share of a CPU quota the follower's background work may take; the rest is for checks. */
export const BACKGROUND_SHARE_OF_QUOTA = 0.4;

/**
 * Keeps a process under a CPU quota from being throttled by its own background work (replaying
 * the stream, applying a burst). The kernel counts every thread against the quota, so this
 * measures the whole process (`process.cpuUsage()`, all threads): `admit()` resolves at once while
 * the process used less than `cores` over the last window, else once it has rested below it.
 * Only the follower's fetches wait on it; checks never do, so when checks are busy the follower
 * slows down, not the other way round.
 */
export class CpuGovernor {
  private samples: { at: number; cpuMs: number }[] = [];

  constructor(
    private readonly cores: number,
    private readonly windowMs = 100,
    /** Monotonic ms and the process's CPU ms so far; a rest of `ms`. Injected by tests. */
    private readonly clock = {
      now: (): number => performance.now(),
      cpuMs: (): number => {
        const { user, system } = process.cpuUsage();
        return (user + system) / 1000;
      },
      rest: (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms)),
    },
  ) {}

  /**
   * The process's governor when it runs under a CPU quota smaller than the machine, else
   * undefined: one for every caller (they measure the same process), the quota read once.
   */
  static forThisProcess(): CpuGovernor | undefined {
    if (processGovernor === null) {
      const quota = cpuQuotaCores();
      processGovernor = quota !== undefined && quota < availableParallelism() ? new CpuGovernor(quota * BACKGROUND_SHARE_OF_QUOTA) : undefined;
    }
    return processGovernor;
  }

  async admit(signal?: AbortSignal): Promise<void> {
    while (!signal?.aborted) {
      const now = this.clock.now();
      const cpuMs = this.clock.cpuMs();
      this.samples.push({ at: now, cpuMs });
      // Keep the newest sample at or before the window's start, and every one after it.
      while (this.samples.length > 2 && (this.samples[1]?.at ?? now) <= now - this.windowMs) this.samples.shift();
      const oldest = this.samples[0];
      const span = oldest ? now - oldest.at : 0;
      if (!oldest || span < this.windowMs / 2 || cpuMs - oldest.cpuMs <= this.cores * span) return;
      await this.clock.rest(this.windowMs / 4);
    }
  }
}
