import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { afterAll, expect, test } from "vitest";
import type { DevEndpoints } from "../../src/cli/client.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { CheckClient } from "../harness/sidecar.js";
import { tempDir } from "../harness/tmp.js";
import { waitFor } from "../harness/wait.js";
import { ROOT } from "../harness/system.js";
import { alive, portAccepts, processGroupAlive, processesInGroup } from "../harness/processes.js";

/**
 * The README's first command, run the way a newcomer runs it: `npm start` in a fresh checkout
 * (dependencies installed, nothing built), with ephemeral ports so it can run anywhere. It must
 * build, start NATS, a writer and a sidecar, play the story, answer a real gRPC Check, and stop
 * cleanly on Ctrl-C (SIGINT) leaving no process behind.
 *
 * The checkout is a copy of this working tree (tracked and untracked, not ignored files) with
 * node_modules linked in: building there leaves this tree's dist/ alone while other test files
 * run from it.
 */
const checkout = tempDir("proofgate-newcomer-");
let group: number | undefined;

afterAll(() => {
  // Whatever the test's outcome, nothing it started may outlive it.
  if (group !== undefined && processGroupAlive(group)) process.kill(-group, "SIGKILL");
  checkout.dispose();
});

function freshCheckout(to: string): void {
  const listed = spawnSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: ROOT, encoding: "utf8" });
  const files =
    listed.status === 0
      ? listed.stdout.split("\0").filter(Boolean)
      : ["package.json", "package-lock.json", "tsconfig.json", "tsconfig.build.json", ...["bin", "src", "proto", "examples"].flatMap((d) => walk(join(ROOT, d)).map((f) => f.slice(ROOT.length)))];
  for (const f of files) {
    const src = join(ROOT, f);
    if (!existsSync(src)) continue; // deleted in the working tree
    mkdirSync(dirname(join(to, f)), { recursive: true });
    copyFileSync(src, join(to, f));
  }
  symlinkSync(join(ROOT, "node_modules"), join(to, "node_modules"), "dir");
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}

test(
  "npm start in a fresh checkout plays the story, answers a real Check, and Ctrl-C stops everything with exit code 0",
  async () => {
    // It is the README's first command.
    const firstBlock = /```sh\n([^\n]*)/.exec(readFileSync(join(ROOT, "README.md"), "utf8"))?.[1] ?? "";
    expect(firstBlock).toMatch(/^npm install && npm start\b/);
    freshCheckout(checkout.path);
    expect(existsSync(join(checkout.path, "dist"))).toBe(false);
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env["PROOFGATE_NATS_URL"]; // a newcomer has no NATS: `proofgate dev` starts one
    delete env["PROOFGATE_WRITER_ADDRESS"];
    delete env["PROOFGATE_SIDECAR_ADDRESS"];
    // Where dev tells operator commands its addresses (its own file, so parallel tests do not meet).
    const devFile = join(checkout.path, "dev-endpoints.json");
    env["PROOFGATE_DEV_FILE"] = devFile;
    const child = spawn(
      "npm",
      ["start", "--", "--story-period", "1s", "--writer-grpc", "127.0.0.1:0", "--writer-http", "127.0.0.1:0", "--sidecar-grpc", "127.0.0.1:0", "--sidecar-http", "127.0.0.1:0"],
      // Its own process group, like a terminal's foreground job, so the test can see everything it started.
      { cwd: checkout.path, env, detached: true, stdio: ["ignore", "pipe", "pipe"] },
    );
    const pgrp = child.pid;
    if (pgrp === undefined) throw new Error("npm did not start");
    group = pgrp;
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("close", (code, signal) => resolve({ code, signal })));
    let done = false;
    void exited.then(() => (done = true));

    await waitFor(() => stdout.includes("Press Ctrl-C to stop.") || done, "npm start to print “Press Ctrl-C to stop.”", 150_000);
    expect(done, `npm start exited early:\n${stdout}\n${stderr}`).toBe(false);

    // Where everything listens, from the file dev writes for the operator commands; and that it
    // printed those addresses, and the story's decisions.
    const endpoints = JSON.parse(readFileSync(devFile, "utf8")) as DevEndpoints;
    const natsPort = Number(new URL(endpoints.natsUrl).port);
    const sidecarAddress = endpoints.sidecar;
    expect(natsPort, stdout).toBeGreaterThan(0);
    expect(stdout).toContain(`NATS      ${endpoints.natsUrl} (nats-server -js, temporary store)\n`);
    expect(stdout).toContain(`writer    gRPC ${endpoints.writer}   HTTP http://${endpoints.writerHttp}/metrics\n`);
    expect(stdout).toContain(`sidecar   gRPC ${endpoints.sidecar}   HTTP http://${endpoints.sidecarHttp}/readyz\n`);
    // (Seven beats; only the last is asserted in full: the others depend on a 1 s period that a
    // loaded machine may overrun, and test/e2e/story.test.ts checks each one.)
    expect([...stdout.matchAll(/^(\d)\. /gm)].map((m) => m[1])).toEqual(["1", "2", "3", "4", "5", "6", "7"]);
    expect(stdout).toMatch(/^7\. The renewal is fully refunded\n\s+api-access\s+denied\s+REVOKED/m);

    // Everything runs in the job's process group: npm, the shell, proofgate dev and its nats-server.
    const procs = processesInGroup(pgrp);
    // (not the shell whose command line also names it)
    const dev = procs.find((p) => p.argv[1]?.endsWith("bin/proofgate.js") && p.argv[2] === "dev");
    const natsServer = procs.find((p) => p.comm === "nats-server");
    expect(dev, JSON.stringify(procs)).toBeDefined();
    expect(natsServer, JSON.stringify(procs)).toBeDefined();
    const natsStore = /-sd (\S+)/.exec(natsServer?.cmdline ?? "")?.[1];
    expect(natsStore && existsSync(natsStore)).toBe(true);

    // A real gRPC Check against the printed address answers.
    const client = new CheckClient(sidecarAddress);
    try {
      expect(await client.healthStatus()).toBe("SERVING");
      const r = await client.check({ customerId: "cus_demo", feature: "api-access" });
      expect(AccessStatus[r.status]).toBe("ACCESS_STATUS_REVOKED");
      expect(r.allowed).toBe(false);
      expect(r.reason).toMatch(/refunded/);
      expect(r.revision).toBeGreaterThan(0);
    } finally {
      client.close();
    }

    // The closing lines name the console and the token to log in with; it shows the story's customer.
    const origin = `http://${endpoints.writerHttp}`;
    const pagePath = "/console/customer?id=cus_demo";
    const consoleLine = /^Console: (\S+)\s.*token in (\S+)\)$/m.exec(stdout);
    expect(consoleLine?.[1], stdout).toBe(origin + pagePath);
    const tokenFile = consoleLine?.[2] ?? "";
    expect((await fetch(origin + pagePath)).status).toBe(401); // the login page, no data
    const login = await fetch(`${origin}/console/login`, {
      method: "POST",
      body: new URLSearchParams({ token: readFileSync(tokenFile, "utf8").trim(), next: pagePath }),
      redirect: "manual",
    });
    expect(login.status).toBe(303);
    const cookie = (login.headers.get("set-cookie") ?? "").split(";")[0] ?? "";
    const page = await fetch(origin + pagePath, { headers: { cookie } });
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('<svg class="timeline"');
    expect(html).toContain('data-subscription="sub_demo"');

    // The `proofgate check` line it suggests works as printed (npx resolves the local package).
    const suggested = /^ {2}(npx proofgate check .+)$/m.exec(stdout)?.[1];
    expect(suggested, stdout).toBeDefined();
    const [, ...args] = (suggested ?? "").split(" ");
    const tried = spawnSync("npx", ["--no", "--", ...args], { cwd: checkout.path, env, encoding: "utf8", timeout: 60_000 });
    expect(tried.status, tried.stderr).toBe(1); // denied
    expect(tried.stdout).toMatch(/^DENIED {2}REVOKED {2}api-access for cus_demo$/m);

    // `--json` carries every field, also those at their default (allowed: false).
    const json = spawnSync("npx", ["--no", "--", "proofgate", "check", "--customer", "cus_demo", "--feature", "api-access", "--json"], { cwd: checkout.path, env, encoding: "utf8", timeout: 60_000 });
    expect(JSON.parse(json.stdout)).toMatchObject({ allowed: false, status: "REVOKED", stale: false, limit: null });

    // The README's "Sending billing events" example, run as written, finds dev without flags and
    // ends in the answer the README promises.
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    const example = /## Sending billing events[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(example).toContain("npx proofgate publish");
    const story = spawnSync("bash", ["-e", "-c", example ?? ""], { cwd: checkout.path, env, encoding: "utf8", timeout: 60_000 });
    expect(story.status, `${story.stdout}\n${story.stderr}`).toBe(0);
    expect(story.stdout).toMatch(/^evt_1000 {2}ACCEPTED$/m);
    expect(story.stdout).toMatch(/^ALLOWED {2}GRANTED {2}seats for cus_42$/m);
    expect(story.stdout).toMatch(/value: 5/);

    // Ctrl-C. (A terminal sends SIGINT to the whole job; npm then dies of it itself, so the
    // signal goes to proofgate dev, whose exit code reaches us through the shell and npm.)
    process.kill(dev?.pid ?? 0, "SIGINT");
    await waitFor(() => done, "npm start to exit after SIGINT", 30_000);
    const exit = await exited;
    expect(exit, `${stdout}\n${stderr}`).toEqual({ code: 0, signal: null });
    expect(stdout).toMatch(/stopping…\nstopped\.\n$/);

    // Nothing is left: not the nats-server (by pid and port), not its store, not any process of the job.
    expect(alive(natsServer?.pid ?? 0)).toBe(false);
    expect(await portAccepts(natsPort)).toBe(false);
    expect(await portAccepts(Number(sidecarAddress.split(":")[1]))).toBe(false);
    expect(existsSync(natsStore ?? "")).toBe(false);
    expect(existsSync(devFile)).toBe(false);
    expect(processesInGroup(pgrp)).toEqual([]);
    expect(processGroupAlive(pgrp)).toBe(false);
  },
  180_000,
);
