import { execFileSync, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { cpus, freemem, loadavg, release, totalmem, type as osType } from "node:os";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

function packageVersion(name: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(`${ROOT}/node_modules/${name}/package.json`, "utf8")) as { version: string }).version;
  } catch {
    return undefined;
  }
}

function git(args: string[]): string | undefined {
  try {
    return execFileSync("git", args, { cwd: ROOT, stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
  } catch {
    return undefined;
  }
}

export interface Machine {
  readonly cpu: string;
  readonly cores: number;
  readonly memoryBytes: number;
  readonly freeMemoryBytesAtStart: number;
  readonly os: string;
  readonly loadAverageAtStart: number[];
  readonly node: string;
  readonly v8: string;
}

export function machine(): Machine {
  const c = cpus();
  return {
    cpu: c[0]?.model ?? "unknown",
    cores: c.length,
    memoryBytes: totalmem(),
    freeMemoryBytesAtStart: freemem(),
    os: `${osType()} ${release()}`,
    loadAverageAtStart: loadavg(),
    node: process.version,
    v8: process.versions.v8,
  };
}

export function versions(): Record<string, unknown> {
  const own = JSON.parse(readFileSync(`${ROOT}/package.json`, "utf8")) as { version: string };
  const db = new Database(":memory:");
  const sqlite = (db.prepare("select sqlite_version() as v").get() as { v: string }).v;
  db.close();
  const nats = spawnSync("nats-server", ["--version"], { encoding: "utf8" });
  const status = git(["status", "--porcelain", "--", "src", "bench"]);
  return {
    proofgate: own.version,
    commit: git(["rev-parse", "--short", "HEAD"]),
    // Uncommitted changes under src/ or bench/ when the run started: figures then describe the working tree.
    srcDirty: status === undefined ? undefined : status.length > 0,
    "@grpc/grpc-js": packageVersion("@grpc/grpc-js"),
    "better-sqlite3": packageVersion("better-sqlite3"),
    sqlite,
    nats: packageVersion("nats"),
    "nats-server": nats.status === 0 ? nats.stdout.trim().replace(/^nats-server:\s*/, "") : undefined,
    "@bufbuild/protobuf": packageVersion("@bufbuild/protobuf"),
    pino: packageVersion("pino"),
  };
}

/** Fraction of all CPUs busy over `ms` (from /proc/stat, Linux), e.g. with other people's work. */
export async function busyCpu(ms: number): Promise<number | undefined> {
  const sample = (): { busy: number; total: number } | undefined => {
    try {
      const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
      const f = line.trim().split(/\s+/).slice(1).map(Number);
      const idle = (f[3] ?? 0) + (f[4] ?? 0);
      const total = f.reduce((a, b) => a + b, 0);
      return { busy: total - idle, total };
    } catch {
      return undefined;
    }
  };
  const a = sample();
  await new Promise((r) => setTimeout(r, ms));
  const b = sample();
  if (!a || !b || b.total === a.total) return undefined;
  return (b.busy - a.busy) / (b.total - a.total);
}

export interface CpuSnapshot {
  /** All CPUs: busy and total jiffies since boot. */
  readonly busy: number;
  readonly total: number;
  /** Jiffies used by this process, its finished children, and every live descendant. */
  readonly ours: number;
}

/** A /proc snapshot (Linux) to tell the benchmark's own CPU use from everyone else's. */
export function cpuSnapshot(): CpuSnapshot | undefined {
  try {
    const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
    const total = fields.reduce((a, b) => a + b, 0);
    const busy = total - (fields[3] ?? 0) - (fields[4] ?? 0);
    // /proc/<pid>/stat: fields after the command name; ppid is the 2nd, utime/stime the 12th/13th, cutime/cstime the 14th/15th.
    const stat = (pid: string): number[] | undefined => {
      try {
        const text = readFileSync(`/proc/${pid}/stat`, "utf8");
        return text.slice(text.lastIndexOf(")") + 2).split(" ").map(Number);
      } catch {
        return undefined;
      }
    };
    const children = new Map<number, number[]>();
    const cpu = new Map<number, number>();
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      const f = stat(entry);
      if (!f) continue;
      const pid = Number(entry);
      const ppid = f[1] ?? 0;
      cpu.set(pid, (f[11] ?? 0) + (f[12] ?? 0));
      const list = children.get(ppid) ?? [];
      list.push(pid);
      children.set(ppid, list);
    }
    const self = stat("self") ?? [];
    let ours = (self[11] ?? 0) + (self[12] ?? 0) + (self[13] ?? 0) + (self[14] ?? 0);
    const walk = (pid: number): void => {
      for (const c of children.get(pid) ?? []) {
        ours += cpu.get(c) ?? 0;
        walk(c);
      }
    };
    walk(process.pid);
    return { busy, total, ours };
  } catch {
    return undefined;
  }
}

/** Fraction of all CPUs that processes outside the benchmark kept busy between two snapshots. */
export function othersBusy(a: CpuSnapshot | undefined, b: CpuSnapshot | undefined): number | undefined {
  if (!a || !b || b.total === a.total) return undefined;
  const others = b.busy - a.busy - (b.ours - a.ours);
  return Math.max(0, others / (b.total - a.total));
}
