import { describe, expect, it } from "vitest";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "../harness/tmp.js";
import { cpuQuotaCores } from "../../src/sidecar/cpu-quota.js";

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
