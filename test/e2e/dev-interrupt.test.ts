import { spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname } from "node:path";
import { afterAll, expect, test } from "vitest";
import { waitFor } from "../harness/wait.js";
import { BIN, ROOT } from "../harness/system.js";
import { alive, openDirs, processGroupAlive, processesInGroup } from "../harness/processes.js";

/**
 * `proofgate dev` stopped at any moment, not only once it says "Press Ctrl-C to stop.": a
 * newcomer who presses Ctrl-C during the story, or a supervisor that sends SIGTERM to the
 * process alone while it starts, must get a clean stop with nothing left behind: no
 * nats-server, no process of the job, no temporary directory.
 */
const groups: number[] = [];
const dirs: string[] = [];
afterAll(() => {
  // Whatever the outcome, nothing these tests started may outlive them.
  for (const g of groups) if (processGroupAlive(g)) process.kill(-g, "SIGKILL");
  // Only directories of our own naming inside the temp directory, never the temp directory itself.
  for (const d of dirs) if (dirname(d) === tmpdir() && basename(d).startsWith("proofgate-")) rmSync(d, { recursive: true, force: true });
});

const cases = [
  // [what, printed line to act on, signal, to the whole group (a terminal's Ctrl-C) or the process alone]
  ["Ctrl-C as soon as it says to press Ctrl-C", "Press Ctrl-C to stop.", "SIGINT", "group"],
  ["Ctrl-C in the middle of the story", "2. Checkout payment needs 3-D Secure", "SIGINT", "group"],
  ["SIGINT to proofgate dev alone in the middle of the story", "4. The paid period ends", "SIGINT", "process"],
  ["SIGTERM to proofgate dev alone while it starts", "writer    gRPC", "SIGTERM", "process"],
] as const;

test.each(cases)("%s: exit code 0, nothing left behind", async (_what, marker, signal, target) => {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env["PROOFGATE_NATS_URL"];
  const child = spawn(
    process.execPath,
    [BIN, "dev", "--story-period", "2s", "--writer-grpc", "127.0.0.1:0", "--writer-http", "127.0.0.1:0", "--sidecar-grpc", "127.0.0.1:0", "--sidecar-http", "127.0.0.1:0"],
    { cwd: ROOT, env, detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  const pid = child.pid;
  if (pid === undefined) throw new Error("proofgate dev did not start");
  groups.push(pid);
  let stdout = "";
  let stderr = "";
  let seen: { nats: number[]; dirs: string[] } | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("close", (code, sig) => resolve({ code, signal: sig })));
  // Acts the moment the line is out, from the data callback itself: no waiting in between.
  child.stdout.on("data", (c: Buffer) => {
    stdout += c.toString();
    if (seen || !stdout.includes(marker)) return;
    const nats = processesInGroup(pid).filter((p) => p.comm === "nats-server");
    const stores = nats.map((p) => /-sd (\S+)/.exec(p.cmdline)?.[1] ?? "");
    seen = { nats: nats.map((p) => p.pid), dirs: [...stores, ...openDirs(pid, "proofgate-dev-")] };
    dirs.push(...seen.dirs);
    process.kill(target === "group" ? -pid : pid, signal);
  });
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));

  await waitFor(() => seen, `proofgate dev to print “${marker}”`, 60_000);
  const exit = await exited;
  expect(exit, `${stdout}\n${stderr}`).toEqual({ code: 0, signal: null });
  expect(stdout).toMatch(/stopping…\nstopped\.\n$/);
  expect(seen?.nats, "a nats-server was running when the signal came").toHaveLength(1);
  expect(seen?.dirs, "the nats store and the dev directory").toHaveLength(2);
  for (const p of seen?.nats ?? []) expect(alive(p), `nats-server ${p}`).toBe(false);
  for (const d of seen?.dirs ?? []) expect(existsSync(d), d).toBe(false);
  expect(processesInGroup(pid)).toEqual([]);
});
