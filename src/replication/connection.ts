import { readFileSync } from "node:fs";
import { connect, credsAuthenticator, Events, NatsError, type ConnectionOptions, type JetStreamManager, type NatsConnection, type StoredMsg } from "nats";
import { string, type OptionValues } from "../config/options.js";
import { errorMessage } from "../errors/index.js";
import type { Logger } from "../observability/logger.js";

/** How writer and sidecar reach NATS: the same options, the same meaning, in one place. */
export const natsOptionSpec = {
  natsUrl: string("NATS server URL(s), comma separated", "nats://127.0.0.1:4222"),
  natsCreds: string("NATS credentials file (.creds: JWT and NKey seed)"),
  natsUser: string("NATS user name (with --nats-password)"),
  natsPassword: string("NATS password"),
  natsToken: string("NATS authentication token"),
};

export type NatsOptions = OptionValues<typeof natsOptionSpec>;

/** The NATS URL(s) as they may be logged: any user:password@ (or token@) is replaced by `***@`. */
export function redactNatsUrl(url: string): string {
  return url.replace(/(^|,|\/\/)\s*[^/@,\s]+@/g, "$1***@");
}

/** Connection options that reconnect forever: a service outlives any NATS outage. */
export function natsConnectionOptions(o: NatsOptions, name: string, reconnectTimeWait: number): ConnectionOptions {
  const opts: ConnectionOptions = {
    servers: o.natsUrl.split(",").map((s) => s.trim()).filter(Boolean),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait,
    pingInterval: 10_000,
    maxPingOut: 2,
    // No stack captured for every request and its timer (each JetStream publish is one): a
    // visible share of the writer's hot path in profiles. Errors still say what failed.
    noAsyncTraces: true,
  };
  if (o.natsCreds) opts.authenticator = credsAuthenticator(new Uint8Array(readFileSync(o.natsCreds)));
  if (o.natsUser) {
    opts.user = o.natsUser;
    opts.pass = o.natsPassword;
  }
  if (o.natsToken) opts.token = o.natsToken;
  return opts;
}

/**
 * JetStream API error codes (`err_code` of the server's API error), the stable way to tell
 * errors apart: their descriptions are prose and may change between server versions.
 */
export const JsErrorCode = {
  StreamNotFound: 10059,
  ConsumerNotFound: 10014,
} as const;

/** The JetStream API error code an error carries, if it is one. */
export function jsErrorCode(err: unknown): number | undefined {
  return err instanceof NatsError ? err.api_error?.err_code : undefined;
}

/** What reads one stored message: the stream API (`jsm.streams`) or direct gets. */
export interface MessageGets {
  getMessage(stream: string, query: { last_by_subj: string } | { seq: number }): Promise<StoredMsg>;
}

/**
 * How to read a stream's messages: by direct get (`$JS.API.DIRECT.GET`) when the stream allows
 * it (`allow_direct`), else through the stream API. Any replica answers a direct get, without the
 * stream leader, so a follower's answer may lag the leader by a moment; a stream created without
 * `allow_direct` does not answer them at all (they time out). Direct gets are also the read a
 * stream's deletion cannot crash: nats-server 2.9.10 panics (nil store in `jsMsgGetRequest`) on a
 * `STREAM.MSG.GET` that races the deletion of its stream (docs/deployment.md, "NATS versions").
 * nats.js implements direct gets on its JetStreamManager without declaring them yet.
 */
export function messageGets(jsm: JetStreamManager, allowDirect: boolean | undefined): MessageGets {
  const direct = allowDirect ? (jsm as { direct?: MessageGets }).direct : undefined;
  return direct ?? jsm.streams;
}

export const isStreamNotFound = (err: unknown): boolean => jsErrorCode(err) === JsErrorCode.StreamNotFound;
export const isConsumerNotFound = (err: unknown): boolean => jsErrorCode(err) === JsErrorCode.ConsumerNotFound;

/** The wait before retry `attempt` (0-based) of anything NATS-bound: 100 ms doubling to 2 s. */
export function backoffMs(attempt: number): number {
  return Math.min(2_000, 100 * 2 ** Math.min(attempt, 5));
}

/** Sleeps `ms`, or less if `signal` aborts first (never rejects). */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref();
    signal?.addEventListener("abort", done, { once: true });
  });
}

export interface NatsLifecycleOptions extends NatsOptions {
  /** The client name the server shows. */
  readonly clientName: string;
  /** Between the client's own reconnect attempts (after a first connection). */
  readonly reconnectTimeWaitMs: number;
  /** What the service keeps doing while NATS is away, for the log lines. */
  readonly meanwhile: string;
}

type LifecycleState =
  | { readonly phase: "connecting"; readonly attempt: number }
  | { readonly phase: "up"; readonly nc: NatsConnection }
  | { readonly phase: "down"; readonly nc: NatsConnection }
  | { readonly phase: "closed" };

interface LifecycleEvents {
  /** A new connection (the first, or one after the client gave up on the previous). */
  connection: (nc: NatsConnection) => void;
  /** Connected or reconnected: requests can go out. */
  up: (nc: NatsConnection) => void;
  /** Disconnected (the client is reconnecting) or closed (a new connection follows). */
  down: () => void;
}

/**
 * One service's NATS connection, kept for its whole life: writer and sidecar serve while NATS is
 * away, so connecting never blocks them. Connects with `backoffMs` between attempts until it
 * works; the client then reconnects by itself forever, and if it gives up (it closes on errors
 * such as repeated authorization failures) a new connection is made the same way. Listeners
 * hear every transition; `up` and `down` alternate.
 */
export class NatsLifecycle {
  private state: LifecycleState = { phase: "connecting", attempt: 0 };
  private readonly stop = new AbortController();
  private readonly listeners: { [K in keyof LifecycleEvents]: LifecycleEvents[K][] } = { connection: [], up: [], down: [] };
  private running: Promise<void> | undefined;

  /** A method, not a field read, so that checks after an await are not narrowed away. */
  private stopped(): boolean {
    return this.stop.signal.aborted;
  }

  constructor(
    private readonly options: NatsLifecycleOptions,
    private readonly logger: Logger,
  ) {}

  on<K extends keyof LifecycleEvents>(event: K, fn: LifecycleEvents[K]): void {
    this.listeners[event].push(fn);
  }

  /** The connection while one exists (connected or reconnecting). */
  get connection(): NatsConnection | undefined {
    return this.state.phase === "up" || this.state.phase === "down" ? this.state.nc : undefined;
  }

  /** The connection while it is connected. */
  get up(): NatsConnection | undefined {
    return this.state.phase === "up" ? this.state.nc : undefined;
  }

  start(): void {
    this.running ??= this.run().catch((err: unknown) => this.logger.error({ err }, "the NATS connection loop stopped unexpectedly"));
  }

  /**
   * Stops connecting and closes the connection; with `drainMs`, first drains it (pending
   * publishes and acks are flushed) for at most that long.
   */
  async close(drainMs = 0): Promise<void> {
    this.stop.abort();
    const nc = this.connection;
    this.state = { phase: "closed" };
    if (nc && !nc.isClosed()) {
      if (drainMs > 0) await Promise.race([nc.drain().catch(() => undefined), pause(drainMs)]);
      if (!nc.isClosed()) await nc.close().catch(() => undefined);
    }
    await this.running;
  }

  private emit<K extends keyof LifecycleEvents>(event: K, ...args: Parameters<LifecycleEvents[K]>): void {
    for (const fn of this.listeners[event]) (fn as (...a: Parameters<LifecycleEvents[K]>) => void)(...args);
  }

  private async run(): Promise<void> {
    const connectOptions = natsConnectionOptions(this.options, this.options.clientName, this.options.reconnectTimeWaitMs);
    const servers = redactNatsUrl(this.options.natsUrl);
    let attempt = 0;
    while (!this.stopped()) {
      let nc: NatsConnection;
      try {
        nc = await connect(connectOptions);
      } catch (err) {
        // The client only reconnects by itself once it has been connected: retry here until then.
        if (attempt % 20 === 0) this.logger.warn({ err: errorMessage(err), servers, attempt }, `cannot reach NATS; ${this.options.meanwhile} and retrying`);
        this.state = { phase: "connecting", attempt: attempt + 1 };
        await pause(backoffMs(attempt++), this.stop.signal);
        continue;
      }
      if (this.stopped()) {
        await nc.close();
        return;
      }
      attempt = 0;
      this.state = { phase: "up", nc };
      this.logger.info({ server: nc.getServer() }, "connected to NATS");
      this.emit("connection", nc);
      this.emit("up", nc);
      // Not awaited: the status iterator does not always end when the connection closes.
      void this.watch(nc);
      const err = await nc.closed();
      if (this.stopped()) return;
      this.state = { phase: "connecting", attempt: 0 };
      this.emit("down");
      this.logger.error({ err: err ? errorMessage(err) : undefined }, "the NATS connection was closed; connecting again");
      await pause(backoffMs(3), this.stop.signal);
    }
  }

  private async watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (this.stopped()) return;
      if (s.type === Events.Disconnect && this.state.phase === "up" && this.state.nc === nc) {
        this.state = { phase: "down", nc };
        this.logger.warn(`disconnected from NATS; ${this.options.meanwhile}`);
        this.emit("down");
      } else if (s.type === Events.Reconnect && this.state.phase === "down" && this.state.nc === nc) {
        this.state = { phase: "up", nc };
        this.logger.info({ server: nc.getServer() }, "reconnected to NATS");
        this.emit("up", nc);
      }
    }
  }
}
