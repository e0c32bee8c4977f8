import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
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

export function machine(): Record<string, unknown> {
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
  const status = git(["status", "--porcelain", "--", "src"]);
  return {
    proofgate: own.version,
    commit: git(["rev-parse", "--short", "HEAD"]),
    // Uncommitted changes under src/ when the run started: figures then describe the working tree.
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
