import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const NATS_INSTALL_HINT = "nats-server is not installed: install it with `apt-get install -y nats-server` (Debian/Ubuntu), or set PROOFGATE_NATS_URL to a running NATS server with JetStream.";

export function natsServerAvailable(): boolean {
  return spawnSync("nats-server", ["--version"], { stdio: "ignore" }).status === 0;
}

/** One node of a loopback JetStream cluster: its route port and every node's (its own included). */
export interface ClusterMember {
  readonly name: string;
  readonly serverName: string;
  readonly port: number;
  readonly routes: readonly number[];
}

/**
 * A local `nats-server -js` on loopback: ephemeral port (`-p -1`) and its own temp store. Used by
 * `proofgate dev` and by the tests. Its log is kept in memory (`log()`), shown only when needed.
 * `stop()` then `start()` restarts it on the same port and store, which is how fault tests take
 * NATS away and give it back.
 */
export class NatsServer {
  private child: ChildProcess | undefined;
  private readonly logLines: string[] = [];
  port = -1;
  /** The HTTP monitoring port (`/varz`, `/connz`) when started with `monitor`; -1 otherwise. */
  monitorPort = -1;
  readonly storeDir: string;

  private constructor(
    private readonly maxPayload?: number,
    private readonly monitor = false,
    private readonly cluster?: ClusterMember,
  ) {
    this.storeDir = mkdtempSync(join(tmpdir(), "proofgate-nats-"));
  }

  /**
   * `maxPayload` lowers the server's max_payload (default 1 MiB), for tests of oversized messages;
   * `monitor` serves the monitoring endpoints on an ephemeral loopback port (the benchmark reads bytes sent);
   * `cluster` makes it one node of a JetStream cluster (the tests' three-node cluster).
   */
  static async start(opts: { maxPayload?: number; monitor?: boolean; cluster?: ClusterMember } = {}): Promise<NatsServer> {
    const server = new NatsServer(opts.maxPayload, opts.monitor, opts.cluster);
    try {
      await server.start();
    } catch (err) {
      rmSync(server.storeDir, { recursive: true, force: true });
      throw err;
    }
    return server;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** The node's name in a cluster. */
  get serverName(): string | undefined {
    return this.cluster?.serverName;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  /** The server's process id while it runs (benchmarks read its CPU time). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    if (this.child) throw new Error("nats-server already running");
    const config: string[] = [];
    if (this.maxPayload !== undefined) {
      // max_payload has no command-line flag.
      const file = join(this.storeDir, "nats.conf");
      writeFileSync(file, `max_payload: ${this.maxPayload}\n`);
      config.push("-c", file);
    }
    if (this.monitor) config.push("-m", String(this.monitorPort));
    if (this.cluster) {
      const { name, serverName, port, routes } = this.cluster;
      config.push("-n", serverName, "--cluster_name", name, "--cluster", `nats://127.0.0.1:${port}`, "--routes", routes.map((r) => `nats://127.0.0.1:${r}`).join(","));
    }
    // nats-server writes its bound ports to `<dir>/nats-server_<pid>.ports` once it accepts
    // clients, with JetStream enabled; reading that file beats parsing its log.
    const child = spawn("nats-server", [...config, "-a", "127.0.0.1", "-p", String(this.port), "-js", "-sd", this.storeDir, "--ports_file_dir", this.storeDir], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    const onData = (chunk: Buffer): void => {
      this.logLines.push(chunk.toString());
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    // An exit nobody asked for (`stop` forgets the child first) is part of the log: it is what a
    // failing test or `proofgate dev` needs to see.
    child.once("exit", (code, signal) => {
      if (this.child === child) this.logLines.push(`[nats-server pid ${child.pid ?? "?"} exited: code ${code}, signal ${signal}]\n`);
    });
    try {
      this.port = await new Promise<number>((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined;
        const done = (): void => {
          clearTimeout(timer);
          child.off("exit", onExit);
        };
        const onExit = (code: number | null): void => {
          done();
          reject(new Error(`nats-server exited with ${code}:\n${this.log()}`));
        };
        child.once("error", (err) => {
          done();
          reject(new Error(`cannot start nats-server: ${err.message}. ${NATS_INSTALL_HINT}`));
        });
        child.once("exit", onExit);
        const poll = (): void => {
          const ports = child.pid === undefined ? undefined : this.portsFile(child.pid);
          if (ports !== undefined) {
            if (ports.monitor !== undefined) this.monitorPort = ports.monitor;
            done();
            resolve(ports.client);
          } else timer = setTimeout(poll, 10);
        };
        poll();
      });
    } catch (err) {
      this.child = undefined;
      throw err;
    }
  }

  /** The client (and monitoring) port from the ports file of nats-server process `pid`, once it is written. */
  private portsFile(pid: number): { client: number; monitor: number | undefined } | undefined {
    const file = readdirSync(this.storeDir).find((f) => f.endsWith(`_${pid}.ports`));
    if (!file) return undefined;
    try {
      const ports = JSON.parse(readFileSync(join(this.storeDir, file), "utf8")) as { nats?: string[]; monitoring?: string[] };
      const client = Number(new URL(ports.nats?.[0] ?? "").port);
      const monitor = ports.monitoring?.[0] === undefined ? undefined : Number(new URL(ports.monitoring[0]).port);
      return client > 0 ? { client, monitor } : undefined;
    } catch {
      return undefined; // being written
    }
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    if (child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.kill(signal);
    });
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  log(): string {
    return this.logLines.join("");
  }

  async dispose(): Promise<void> {
    await this.stop("SIGKILL");
    rmSync(this.storeDir, { recursive: true, force: true });
  }
}
