import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const NATS_INSTALL_HINT = "nats-server is not installed: install it with `apt-get install -y nats-server` (Debian/Ubuntu), or set PROOFGATE_NATS_URL to a running NATS server with JetStream.";

export function natsServerAvailable(): boolean {
  return spawnSync("nats-server", ["--version"], { stdio: "ignore" }).status === 0;
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
  ) {
    this.storeDir = mkdtempSync(join(tmpdir(), "proofgate-nats-"));
  }

  /**
   * `maxPayload` lowers the server's max_payload (default 1 MiB), for tests of oversized messages;
   * `monitor` serves the monitoring endpoints on an ephemeral loopback port (the benchmark reads bytes sent).
   */
  static async start(opts: { maxPayload?: number; monitor?: boolean } = {}): Promise<NatsServer> {
    const server = new NatsServer(opts.maxPayload, opts.monitor);
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

  get running(): boolean {
    return this.child !== undefined;
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
    const child = spawn("nats-server", [...config, "-a", "127.0.0.1", "-p", String(this.port), "-js", "-sd", this.storeDir], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    let buffered = "";
    try {
      this.port = await new Promise<number>((resolve, reject) => {
        const onData = (chunk: Buffer): void => {
          const text = chunk.toString();
          this.logLines.push(text);
          buffered += text;
          const m = /Listening for client connections on [^\s]+:(\d+)/.exec(buffered);
          const monitor = /Starting http monitor on [^\s]+:(\d+)/.exec(buffered);
          if (monitor?.[1]) this.monitorPort = Number(monitor[1]);
          // JetStream is usable once the server says it is ready, which comes after the listen line.
          if (m?.[1] && /Server is ready/.test(buffered)) resolve(Number(m[1]));
        };
        child.stdout.on("data", onData);
        child.stderr.on("data", onData);
        child.once("error", (err) => reject(new Error(`cannot start nats-server: ${err.message}. ${NATS_INSTALL_HINT}`)));
        child.once("exit", (code) => reject(new Error(`nats-server exited with ${code}:\n${this.log()}`)));
      });
    } catch (err) {
      this.child = undefined;
      throw err;
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

  /** Kept for the tests' wording: the log to print when a test fails. */
  failureLog(): string {
    return this.log();
  }

  async dispose(): Promise<void> {
    await this.stop("SIGKILL");
    rmSync(this.storeDir, { recursive: true, force: true });
  }
}
