/**
 * What runs on this machine, from Linux /proc: the processes of a process group (a terminal's
 * job), whether a pid is alive, whether a port accepts connections, which temp directories a
 * process holds files in. For tests that check that nothing is left behind.
 */
import { readFileSync, readdirSync, readlinkSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import type { ReadyFile } from "../../src/transport/ready-file.js";
import { waitFor } from "./wait.js";

export interface Proc {
  readonly pid: number;
  readonly pgrp: number;
  readonly comm: string;
  readonly argv: readonly string[];
  readonly cmdline: string;
}

/** Every process in process group `pgrp` (Linux /proc). */
export function processesInGroup(pgrp: number): Proc[] {
  const out: Proc[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
      const close = stat.lastIndexOf(")");
      const fields = stat.slice(close + 2).split(" ");
      if (Number(fields[2]) !== pgrp || fields[0] === "Z") continue;
      const argv = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0").filter(Boolean);
      out.push({ pid: Number(name), pgrp, comm: stat.slice(stat.indexOf("(") + 1, close), argv, cmdline: argv.join(" ") });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

export function processGroupAlive(pgrp: number): boolean {
  try {
    process.kill(-pgrp, 0);
    return true;
  } catch {
    return false;
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie is dead, only not yet reaped.
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

export function portAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Directories under which process `pid` holds open files whose path includes `marker`. */
export function openDirs(pid: number, marker: string): string[] {
  const dirs = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const parts = readlinkSync(`/proc/${pid}/fd/${fd}`).split("/");
        // The directory whose own name carries the marker, never a directory that merely holds
        // a file so named (that would be the temp directory itself).
        const at = parts.findIndex((p, i) => i < parts.length - 1 && p.startsWith(marker));
        if (at > 0) dirs.add(parts.slice(0, at + 1).join("/"));
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // gone
  }
  return [...dirs];
}

/**
 * Waits for a service's `--ready-file` (src/transport/ready-file.ts) and returns its contents, or
 * fails as soon as the process exits first, with what it wrote.
 */
export async function awaitReadyFile(path: string, exited: Promise<unknown>, output: () => string, timeoutMs = 60_000): Promise<ReadyFile> {
  let gone = false;
  void exited.then(() => (gone = true));
  const read = (): ReadyFile | undefined => {
    try {
      return JSON.parse(readFileSync(path, "utf8")) as ReadyFile;
    } catch {
      return undefined;
    }
  };
  const found = await waitFor(() => read() ?? (gone ? "exited" : undefined), { what: `ready file ${path}`, timeoutMs, intervalMs: 20 });
  if (found === "exited") throw new Error(`the process exited before it was ready:\n${output()}`);
  return found;
}
