import {
  connect,
  Events,
  type ConnectionOptions,
  type JetStreamClient,
  type JetStreamManager,
  type NatsConnection,
} from "nats";
import { ensureStreams } from "../replication/streams.js";
import { ensureInputStream } from "./ha/inputs.js";
import { natsConnectionOptions, type NatsOptions } from "../replication/connection.js";
import { errorMessage } from "../errors/index.js";
import type { Logger } from "../observability/logger.js";
import { backoffMs, pause } from "./signal.js";

export interface NatsLinkOptions extends NatsOptions {
  readonly streamReplicas: number;
  readonly writerId: string;
}

/** The connection-dependent handles, present only while the link is ready. */
export interface NatsHandles {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
}

/**
 * The writer's NATS connection: connects in the background (the writer serves gRPC and commits
 * to its ledger while NATS is away), reconnects forever, and after every (re)connect makes sure
 * the streams exist before announcing itself ready. Listeners run on every transition to ready,
 * which is where the publisher reconciles and the consumer re-attaches.
 */
export class NatsLink {
  private handles: NatsHandles | undefined;
  private nc: NatsConnection | undefined;
  private readonly stop = new AbortController();
  private readonly stopped = (): boolean => this.stop.signal.aborted;
  private settingUp = false;
  private readonly readyListeners: (() => void)[] = [];
  private readonly downListeners: (() => void)[] = [];

  constructor(
    private readonly options: NatsLinkOptions,
    private readonly logger: Logger,
  ) {}

  /** Ready: connected, with the streams in place. */
  get ready(): NatsHandles | undefined {
    return this.handles;
  }

  onReady(fn: () => void): void {
    this.readyListeners.push(fn);
  }

  onDown(fn: () => void): void {
    this.downListeners.push(fn);
  }

  start(): void {
    void this.connectLoop();
  }

  connectionOptions(): ConnectionOptions {
    return natsConnectionOptions(this.options, `proofgate-writer ${this.options.writerId}`, 250);
  }

  private async connectLoop(): Promise<void> {
    let failures = 0;
    while (!this.stopped()) {
      try {
        const nc = await connect(this.connectionOptions());
        if (this.stopped()) {
          await nc.close();
          return;
        }
        this.nc = nc;
        this.logger.info({ server: nc.getServer() }, "connected to NATS");
        void this.watch(nc);
        void this.setup(nc);
        return;
      } catch (err) {
        // Until the first connection the writer retries by itself (the client only reconnects
        // once it has been connected); the ledger keeps accepting changes meanwhile.
        if (failures === 0 || failures % 20 === 0) this.logger.warn({ err: errorMessage(err) }, "cannot connect to NATS yet; retrying");
        failures++;
        await pause(Math.min(1_000, backoffMs(failures)), this.stop.signal);
      }
    }
  }

  private async watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === Events.Disconnect) {
        if (this.handles) this.logger.warn("disconnected from NATS; the ledger keeps accepting changes");
        this.handles = undefined;
        for (const fn of this.downListeners) fn();
      } else if (s.type === Events.Reconnect) {
        this.logger.info({ server: nc.getServer() }, "reconnected to NATS");
        void this.setup(nc);
      }
    }
  }

  /** Creates or updates the streams, retrying until it works or the connection drops. */
  private async setup(nc: NatsConnection): Promise<void> {
    if (this.settingUp) return;
    this.settingUp = true;
    let failures = 0;
    try {
      while (!this.stopped() && !nc.isClosed()) {
        try {
          const jsm = await nc.jetstreamManager();
          await ensureStreams(jsm, this.options.streamReplicas);
          await ensureInputStream(jsm, this.options.streamReplicas);
          this.handles = { nc, js: nc.jetstream(), jsm };
          break;
        } catch (err) {
          this.logger.warn({ err: errorMessage(err) }, "cannot set up JetStream streams yet; retrying");
          await pause(backoffMs(failures++), this.stop.signal);
        }
      }
    } finally {
      this.settingUp = false;
    }
    if (this.handles) for (const fn of this.readyListeners) fn();
  }

  /** Streams may vanish while connected (a server restarted without its store): recreate them. */
  async ensureStreams(): Promise<void> {
    const h = this.handles;
    if (h) {
      await ensureStreams(h.jsm, this.options.streamReplicas);
      await ensureInputStream(h.jsm, this.options.streamReplicas);
    }
  }

  /** Publishes on core NATS if connected (heartbeats); dropped otherwise. */
  publishCore(subject: string, payload: Uint8Array): void {
    const nc = this.nc;
    if (nc && !nc.isClosed() && this.handles) nc.publish(subject, payload);
  }

  /** Drains (flushing pending publishes and acks) and closes. */
  async close(): Promise<void> {
    this.stop.abort();
    this.handles = undefined;
    const nc = this.nc;
    if (!nc || nc.isClosed()) return;
    try {
      await Promise.race([nc.drain(), new Promise((r) => setTimeout(r, 2_000).unref())]);
    } catch {
      // Already closed or draining.
    }
    if (!nc.isClosed()) await nc.close();
  }
}
