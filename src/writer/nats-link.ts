import type { JetStreamClient, JetStreamManager, NatsConnection } from "nats";
import { ensureStreams } from "../replication/streams.js";
import { backoffMs, NatsLifecycle, pause, type NatsOptions } from "../replication/connection.js";
import { ensureInputStream } from "./ha/inputs.js";
import { errorMessage } from "../errors/index.js";
import type { Logger } from "../observability/logger.js";

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
 * The writer's NATS connection, on the shared NatsLifecycle: connects in the background (every
 * change goes through the input stream, so changes wait for NATS while it is away), reconnects forever, and after
 * every (re)connect makes sure the streams exist before announcing itself ready. Listeners run on every transition to ready,
 * which is where the publisher reconciles and the consumer re-attaches.
 */
export class NatsLink {
  private handles: NatsHandles | undefined;
  private readonly lifecycle: NatsLifecycle;
  private settingUp = false;
  private readonly readyListeners: (() => void)[] = [];
  private readonly downListeners: (() => void)[] = [];

  constructor(
    private readonly options: NatsLinkOptions,
    private readonly logger: Logger,
  ) {
    this.lifecycle = new NatsLifecycle(
      { ...options, clientName: `proofgate-writer ${options.writerId}`, reconnectTimeWaitMs: 250, meanwhile: "checks are answered from replicas; changes wait for NATS" },
      logger,
    );
    this.lifecycle.on("up", (nc) => void this.setup(nc));
    this.lifecycle.on("down", () => {
      this.handles = undefined;
      for (const fn of this.downListeners) fn();
    });
  }

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
    this.lifecycle.start();
  }

  /** Creates or updates the streams, retrying until it works or the connection drops. */
  private async setup(nc: NatsConnection): Promise<void> {
    if (this.settingUp) return;
    this.settingUp = true;
    let failures = 0;
    try {
      while (this.lifecycle.up === nc) {
        try {
          const jsm = await nc.jetstreamManager();
          await ensureStreams(jsm, this.options.streamReplicas);
          await ensureInputStream(jsm, this.options.streamReplicas);
          // Ready only if this is still the live connection: a shutdown (close) may have begun
          // draining it meanwhile, or a reconnect replaced it. A listener would subscribe on it.
          if (this.lifecycle.up === nc) this.handles = { nc, js: nc.jetstream(), jsm };
          break;
        } catch (err) {
          this.logger.warn({ err: errorMessage(err) }, "cannot set up JetStream streams yet; retrying");
          await pause(backoffMs(failures++));
        }
      }
    } finally {
      this.settingUp = false;
    }
    if (this.handles?.nc === nc) for (const fn of this.readyListeners) fn();
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
    const nc = this.lifecycle.up;
    if (nc && this.handles) nc.publish(subject, payload);
  }

  /** Drains (flushing pending publishes and acks, for at most 2 s) and closes. */
  async close(): Promise<void> {
    this.handles = undefined;
    await this.lifecycle.close(2_000);
  }
}
