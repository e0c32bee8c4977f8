import { readFileSync } from "node:fs";
import { pino } from "pino";
import type { Logger } from "#proofgate/observability/logger.js";

/** Monotonic nanoseconds as a double (µs resolution is all performance.now() promises). */
export const nowNs = (): number => performance.now() * 1e6;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * The services' logs during a benchmark: JSON lines in the file named by PROOFGATE_BENCH_LOG
 * (kept out of the table), at PROOFGATE_BENCH_LOG_LEVEL (default info), or nothing.
 */
export function benchLogger(name: string): Logger {
  const file = process.env["PROOFGATE_BENCH_LOG"];
  if (!file) return pino({ level: "silent" });
  const level = (process.env["PROOFGATE_BENCH_LOG_LEVEL"] ?? "info") as "info";
  return pino({ name, level, base: { pid: process.pid, role: name }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: file, append: true, sync: false, mkdir: true }));
}

export const round = (x: number, digits = 1): number => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};

/** Resident set size of a process in bytes, from /proc (Linux); undefined elsewhere. */
export async function rssOf(pid: number): Promise<{ rss: number; hwm: number; anon: number; file: number; shmem: number } | undefined> {
  try {
    const { readFile } = await import("node:fs/promises");
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) * 1024;
    return { rss: kb("VmRSS"), hwm: kb("VmHWM"), anon: kb("RssAnon"), file: kb("RssFile"), shmem: kb("RssShmem") };
  } catch {
    return undefined;
  }
}

/** CPU time (user + system) a process has used, in milliseconds, from /proc (Linux); NaN elsewhere. */
export function cpuMsOf(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ").map(Number);
    return (((f[11] ?? NaN) + (f[12] ?? NaN)) * 1000) / TICKS_PER_SECOND;
  } catch {
    return NaN;
  }
}

/** The machine's CPU time so far (ms, all cores): busy and in all. */
export function machineCpuMs(): { busy: number; total: number } {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  // idle and iowait are the time no task ran.
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  return { busy: ((total - idle) * 1000) / TICKS_PER_SECOND, total: (total * 1000) / TICKS_PER_SECOND };
}

/** USER_HZ: 100 on every Linux the benchmark targets. */
const TICKS_PER_SECOND = 100;
