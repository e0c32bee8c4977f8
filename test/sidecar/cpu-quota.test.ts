import { describe, expect, it } from "vitest";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "../harness/tmp.js";
import { CpuGovernor, cpuQuotaCores } from "../../src/sidecar/cpu-quota.js";

/** A fake filesystem root: /proc/self/{mounts,cgroup} and group files, as the kernel lays them out. */
function fakeRoot(mounts: string, cgroup: string, files: Record<string, string>): string {
  const root = tempDir("cpu-quota-").path;
  mkdirSync(join(root, "proc/self"), { recursive: true });
  writeFileSync(join(root, "proc/self/mounts"), mounts);
  writeFileSync(join(root, "proc/self/cgroup"), cgroup);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, ".."), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

describe("the CPU quota the sidecar runs under", () => {
  it("reads cgroup v2 cpu.max, the smallest along the path (a pod's limit can sit on a parent)", () => {
    const root = fakeRoot("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n", "0::/kubepods/pod1/ctr\n", {
      "sys/fs/cgroup/cpu.max": "max 100000\n",
      "sys/fs/cgroup/kubepods/pod1/cpu.max": "50000 100000\n",
      "sys/fs/cgroup/kubepods/pod1/ctr/cpu.max": "max 100000\n",
    });
    expect(cpuQuotaCores(root)).toBe(0.5);
  });

  it("reads cgroup v1 cpu.cfs_quota_us over cpu.cfs_period_us, with cpu and cpuacct mounted together", () => {
    const root = fakeRoot("cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0\n", "4:memory:/x\n3:cpu,cpuacct:/pod/ctr\n", {
      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
      "sys/fs/cgroup/cpu,cpuacct/pod/ctr/cpu.cfs_quota_us": "25000\n",
      "sys/fs/cgroup/cpu,cpuacct/pod/ctr/cpu.cfs_period_us": "100000\n",
    });
    expect(cpuQuotaCores(root)).toBe(0.25);
  });

  it("is undefined without a quota, and without a cgroup filesystem", () => {
    const unlimited = fakeRoot("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n", "0::/\n", { "sys/fs/cgroup/cpu.max": "max 100000\n" });
    expect(cpuQuotaCores(unlimited)).toBeUndefined();
    expect(cpuQuotaCores(tempDir("cpu-quota-none-").path)).toBeUndefined();
  });
});

describe("the CPU governor of background work", () => {
  /** A process whose CPU use the test drives: `busy` ms of CPU per ms of time while working. */
  const fakeProcess = (busy: number) => {
    const p = { t: 0, cpu: 0, rests: 0, working: true };
    const clock = {
      now: () => p.t,
      cpuMs: () => p.cpu,
      rest: (ms: number) => {
        p.rests++;
        p.t += ms;
        if (p.working) p.cpu += busy * ms;
        return Promise.resolve();
      },
    };
    const work = (ms: number): void => {
      p.t += ms;
      p.cpu += busy * ms;
    };
    return { p, clock, work };
  };

  it("admits at once while the process stays under its share, and makes it rest once over it", async () => {
    const idle = fakeProcess(0.1);
    const g = new CpuGovernor(0.3, 100, idle.clock);
    await g.admit();
    idle.work(60);
    await g.admit();
    expect(idle.p.rests).toBe(0);

    // Checks keep the process at 0.5 cores on their own: background work waits until they calm down.
    const busy = fakeProcess(0.5);
    const h = new CpuGovernor(0.3, 100, busy.clock);
    await h.admit();
    busy.work(60);
    const admitted = h.admit();
    busy.p.working = false;
    await admitted;
    expect(busy.p.rests).toBeGreaterThan(0);
    // Admitted only once the last window's use is back under 0.3 cores.
    expect(busy.p.t).toBeGreaterThanOrEqual(100);
  });

  it("stops waiting when its work is cancelled", async () => {
    const busy = fakeProcess(1);
    const g = new CpuGovernor(0.1, 100, busy.clock);
    await g.admit();
    busy.work(80);
    const abort = new AbortController();
    const waiting = g.admit(abort.signal);
    abort.abort();
    await waiting;
    expect(busy.p.rests).toBeLessThanOrEqual(1);
  });
});
