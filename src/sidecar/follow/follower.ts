import { performance } from "node:perf_hooks";
import {
  connect,
  Events,
  type Consumer,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type NatsConnection,
  type StreamInfo,
  type Subscription,
} from "nats";
import { Heartbeat } from "../../gen/proofgate/v1/document.js";
import { HEARTBEAT_SUBJECT, STATE_STREAM } from "../../replication/subjects.js";
import { isStreamNotFound, streamIdentity } from "../../replication/streams.js";
import { natsConnectionOptions, redactNatsUrl, type NatsOptions } from "../../replication/connection.js";
import { errorMessage } from "../../errors/index.js";
import type { Logger } from "../../observability/logger.js";
import { readRecord, type ReplicaRecord } from "../replica/record.js";
import type { ApplyCounts, Replica } from "../replica/replica.js";
import type { SidecarMetrics } from "../metrics.js";
import type { Freshness } from "./freshness.js";

const mono = (): number => performance.now();

/** A received message waiting to be applied. */
interface Queued {
  readonly seq: number;
  readonly subject: string;
  readonly data: Uint8Array;
  /** Messages the consumer still had pending when this one was delivered. */
  readonly pending: number;
  readonly at: number;
}

/** One consumer's life: from a stream check to the next restart. */
interface Session {
  readonly epoch: number;
  /** The ordered consumer; `currentConsumer` is the server-side consumer it runs now. */
  readonly consumer: Consumer & { readonly currentConsumer?: { readonly name: string } | null };
  /** The fetch in progress. */
  batch: ConsumerMessages | undefined;
}

export interface FollowerOptions extends NatsOptions {
  /** Warm replicas that cannot reach NATS or the stream become ready after this long. */
  readonly offlineReadyAfterMs: number;
  /** The catalog's coherency window, read on each tick (the catalog can change). */
  readonly coherencyWindowMs: () => number;
  /** The replica's revision moved (records applied or a purged tail settled). */
  readonly onRevision: (revision: number) => void;
  /** Readiness changed: true once the initial sync caught up, false during a rebuild. */
  readonly onReady: (ready: boolean) => void;
  /** Called before following while the replica is empty: may fill it (a snapshot restore). */
  readonly bootstrap?: ((nc: NatsConnection, stream: StreamInfo) => Promise<unknown>) | undefined;
}

/** Messages per fetch, and the backlog below which the next fetch goes out. */
const FETCH = 1_000;
const LOW_WATER = FETCH;
/** An idle fetch ends after this and a new one goes out. */
const FETCH_EXPIRES_MS = 5_000;
/** Records per transaction, at most. */
const BATCH = 128;
/** Batches handed to the writer thread and not yet committed, at most. */
const MAX_IN_FLIGHT = 4;
/** How often, at most, the stream's identity is re-checked while all looks well. */
const STREAM_CHECK_MS = 5_000;
const PROGRESS_LOG_MS = 2_000;
const API_TIMEOUT_MS = 2_000;

/**
 * Follows PROOFGATE_STATE into the replica: connects to NATS (retrying forever, never blocking
 * checks), checks the stream is the one the replica was built from (else rebuilds), reads from
 * the replica's revision + 1 with an ordered consumer, applies records in short transactions,
 * and tracks freshness from writer heartbeats and consumer state.
 *
 * Ordered consumers recreate themselves after reconnects, but client bugs around server
 * restarts are common, so a watchdog also verifies progress through the JetStream API and
 * restarts the consumer (from the replica's revision) when it is lost or stalled.
 */
export class Follower {
  private nc: NatsConnection | undefined;
  private jsm: JetStreamManager | undefined;
  private js: JetStreamClient | undefined;
  private heartbeatSub: Subscription | undefined;
  private closedFlag = false;
  private connectedNow = false;
  private readyNow = false;
  private streamMissing = false;
  private readonly startedAt = mono();

  private queue: Queued[] = [];
  private queueHead = 0;
  private drainScheduled = false;
  private drainWaiters: (() => void)[] = [];
  /** Batches sent to the writer thread, not yet committed. */
  private applying = 0;
  /** Bumped by a rebuild: commits of batches sent before it are ignored. */
  private incarnation = 0;
  /** Highest sequence received in this replica incarnation (applied or queued). */
  private lastReceived = 0;
  private lastReceiveAt = 0;

  private epoch = 0;
  private session: Session | undefined;
  private restart: { promise: Promise<string>; resolve: (reason: string) => void } = deferred();

  private tickTimer: NodeJS.Timeout | undefined;
  private wakeTimer: { timer: NodeJS.Timeout; resolve: () => void } | undefined;
  private probing = false;
  private probeGeneration = 0;
  private lastProbeDelivered = -1;
  private lastProbeAt = 0;
  private stalledProbes = 0;
  private missingProbes = 0;
  private settleAfterDrain: { seq: number; at: number } | undefined;
  private checkingStream = false;
  private lastStreamCheckAt = 0;
  private streamCheckWanted = false;

  private warnedIncomplete = false;
  /** The replica was checked against the stream in this process: until then nothing confirms it. */
  private streamVerified = false;
  /** The stream an unbound replica is being built from; it is bound once caught up. */
  private syncing: string | undefined;
  private bootstrap: { target: number; total: number; startedAt: number; lastLogAt: number; remaining: number } | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly replica: Replica,
    private readonly freshness: Freshness,
    private readonly metrics: SidecarMetrics,
    private readonly logger: Logger,
    private readonly options: FollowerOptions,
  ) {}

  /** A method, not a field read, so that checks after an await are not narrowed away. */
  private isClosed(): boolean {
    return this.closedFlag;
  }

  get ready(): boolean {
    return this.readyNow;
  }

  get connected(): boolean {
    return this.connectedNow;
  }

  /** The NATS connection while one exists (for the decision log). */
  get connection(): NatsConnection | undefined {
    return this.nc;
  }

  start(): void {
    this.running = this.run().catch((err: unknown) => {
      this.logger.error({ err }, "state follower stopped unexpectedly");
    });
    this.scheduleTick();
  }

  async close(): Promise<void> {
    this.closedFlag = true;
    if (this.tickTimer) clearTimeout(this.tickTimer);
    this.wake();
    this.releaseDrainWaiters();
    this.restart.resolve("closing");
    this.stopSession();
    const nc = this.nc;
    this.nc = undefined;
    if (nc && !nc.isClosed()) await nc.close().catch(() => undefined);
    await this.running;
  }

  // ---------------------------------------------------------------- connection and sessions

  private async run(): Promise<void> {
    // The client reconnects by itself forever; it only gives up (closes) on errors such as
    // repeated authorization failures. Then start over with a new connection.
    while (!this.isClosed()) {
      const nc = await this.connectForever();
      if (!nc) return;
      await this.follow(nc);
      if (!this.isClosed()) {
        this.connectedNow = false;
        this.logger.error("the NATS connection was closed; connecting again");
        await this.sleep(1_000);
      }
    }
  }

  /** Follows the stream over one connection until it closes (or the follower does). */
  private async follow(nc: NatsConnection): Promise<void> {
    this.nc = nc;
    // Short API timeouts: a request lost in a disconnect must not hold the watchdog for long.
    this.jsm = await nc.jetstreamManager({ checkAPI: false, timeout: API_TIMEOUT_MS });
    this.js = nc.jetstream({ timeout: API_TIMEOUT_MS });
    this.heartbeatSub = nc.subscribe(HEARTBEAT_SUBJECT, { callback: (err, msg) => (err ? undefined : this.onHeartbeat(msg.data)) });
    void this.watchStatus(nc);
    void nc.closed().then(() => {
      if (this.nc === nc) this.requestRestart("connection closed");
    });
    let failures = 0;
    while (!this.isClosed() && !nc.isClosed()) {
      try {
        const reason = await this.runSession();
        failures = 0;
        if (!this.isClosed() && !nc.isClosed()) this.logger.info({ reason, revision: this.replica.revision }, "restarting the state consumer");
      } catch (err) {
        if (this.isClosed() || nc.isClosed()) break;
        failures++;
        const level = failures > 3 ? "warn" : "debug";
        this.logger[level]({ err: errorMessage(err), failures }, "state consumer failed; retrying");
        await this.sleep(Math.min(250 * 2 ** Math.min(failures, 3), 2_000));
      }
    }
    this.stopSession();
    try {
      this.heartbeatSub.unsubscribe();
    } catch {
      // the connection is already closed
    }
  }

  private async connectForever(): Promise<NatsConnection | undefined> {
    const connectOptions = natsConnectionOptions(this.options, "proofgate-sidecar", 500);
    const servers = redactNatsUrl(this.options.natsUrl);
    for (let attempt = 0; !this.isClosed(); attempt++) {
      try {
        const nc = await connect(connectOptions);
        if (this.isClosed()) {
          await nc.close();
          return undefined;
        }
        this.connectedNow = true;
        this.logger.info({ server: nc.getServer() }, "connected to NATS");
        return nc;
      } catch (err) {
        // Not reachable yet: keep serving from the replica and try again.
        if (attempt === 0 || attempt % 20 === 0) this.logger.warn({ err: errorMessage(err), servers, attempt }, "cannot reach NATS; serving from the replica and retrying");
        await this.sleep(Math.min(250 * 2 ** Math.min(attempt, 3), 2_000));
      }
    }
    return undefined;
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === Events.Disconnect) {
        this.connectedNow = false;
        this.forgetProbes();
        this.logger.warn("disconnected from NATS; serving from the replica");
      } else if (s.type === Events.Reconnect) {
        this.connectedNow = true;
        this.forgetProbes();
        this.streamCheckWanted = true;
        this.logger.info({ server: s.data }, "reconnected to NATS");
        // Verify the consumer came back rather than wait for the next tick.
        this.tick();
      }
    }
  }

  /** One consumer session. Resolves with the reason it ended. */
  private async runSession(): Promise<string> {
    const jsm = this.jsm;
    const js = this.js;
    if (!jsm || !js) throw new Error("not connected");
    const restart = (this.restart = deferred());
    const found = await this.waitForStream(jsm);
    if (!found) return "closing";
    let { info, askedAt: infoAt } = found;
    if (this.replica.revision === 0 && this.options.bootstrap && this.nc) {
      await this.options.bootstrap(this.nc, info);
      if (this.isClosed()) return "closing";
      // The restore took a while: measure the distance to the head from now.
      infoAt = mono();
      info = await jsm.streams.info(STATE_STREAM);
    }
    await this.ensureIncarnation(info);
    if (this.isClosed()) return "closing";
    // Confirmations that came before the replica was checked against the stream (a heartbeat
    // can arrive first) may speak of another stream: only later ones count.
    if (!this.streamVerified) this.freshness.reset();
    this.streamVerified = true;
    this.lastStreamCheckAt = infoAt;
    const epoch = ++this.epoch;
    this.stalledProbes = 0;
    this.missingProbes = 0;
    this.lastProbeDelivered = -1;
    const revision = this.replica.revision;
    const lastSeq = info.state.last_seq;
    // The stream's last sequence now is a target like a heartbeat's head: reaching it means
    // the replica was current as of this moment.
    this.freshness.expect(lastSeq, infoAt, revision);
    this.afterConfirmation();
    if (!this.readyNow) this.startBootstrapLog(info);
    const from = Math.max(revision, this.lastReceived) + 1;
    const consumer = await js.consumers.get(STATE_STREAM, { opt_start_seq: from });
    if (this.isClosed() || epoch !== this.epoch) return "superseded";
    const session: Session = { epoch, consumer, batch: undefined };
    this.session = session;
    // Detached: creating the consumer retries internally with long back-offs, and a restart or
    // close must not wait for it.
    void this.fetchLoop(session);
    this.logger.debug({ from, lastSeq }, "following the state stream");
    const reason = await restart.promise;
    this.stopSession();
    return reason;
  }

  /**
   * Reads the stream in fetches of FETCH messages, the next one only once the replica has
   * applied most of what it holds: memory stays bounded and a bootstrap never floods the event
   * loop (a `consume()` would keep pulling however far behind the replica is).
   */
  private async fetchLoop(session: Session): Promise<void> {
    const { epoch, consumer } = session;
    while (epoch === this.epoch && !this.isClosed()) {
      if (this.backlog() > LOW_WATER) {
        await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
        continue;
      }
      try {
        const batch = await consumer.fetch({ max_messages: FETCH, expires: FETCH_EXPIRES_MS });
        if (epoch !== this.epoch) {
          batch.stop();
          return;
        }
        session.batch = batch;
        for await (const m of batch) {
          if (epoch !== this.epoch) break;
          this.receive(epoch, m);
        }
      } catch (err) {
        if (epoch === this.epoch) this.requestRestart(`fetch failed: ${errorMessage(err)}`);
        return;
      }
    }
  }

  private backlog(): number {
    return this.queue.length - this.queueHead;
  }

  private releaseDrainWaiters(): void {
    for (const resolve of this.drainWaiters.splice(0)) resolve();
  }

  private stopSession(): void {
    const session = this.session;
    this.session = undefined;
    if (!session) return;
    // Callbacks of the stopped consumer (late messages, its close) must not touch the next session.
    this.epoch++;
    session.batch?.stop();
    this.releaseDrainWaiters();
    const name = session.consumer.currentConsumer?.name;
    // Ordered consumers are ephemeral and expire by themselves; deleting is a courtesy.
    if (name && this.jsm && this.connectedNow) void this.jsm.consumers.delete(STATE_STREAM, name).catch(() => undefined);
  }

  private requestRestart(reason: string): void {
    const metric = reason.split(":")[0] ?? reason;
    this.metrics.consumerRestarts.labels(metric).inc();
    this.restart.resolve(reason);
  }

  private async waitForStream(jsm: JetStreamManager): Promise<{ info: StreamInfo; askedAt: number } | undefined> {
    let logged = false;
    while (!this.isClosed()) {
      try {
        const askedAt = mono();
        const info = await jsm.streams.info(STATE_STREAM);
        this.streamMissing = false;
        return { info, askedAt };
      } catch (err) {
        if (!isStreamNotFound(err)) throw err;
        this.streamMissing = true;
        if (!logged) this.logger.warn({ stream: STATE_STREAM }, "state stream does not exist yet; waiting for the writer to create it");
        logged = true;
        await this.sleep(500);
      }
    }
    return undefined;
  }

  /**
   * A replica resumes only on the stream incarnation it was built from, and only if the stream
   * has not gone back in time. Otherwise it is rebuilt from scratch rather than serve wrong data.
   */
  private async ensureIncarnation(info: StreamInfo): Promise<void> {
    const identity = streamIdentity(info);
    let stored = this.replica.streamCreated;
    const revision = this.replica.revision;
    // A replica bound by `created` (before the writer named the stream) adopts the stream's
    // incarnation id if `created` still matches: an upgrade does not rebuild every sidecar.
    if (stored !== undefined && stored !== identity && stored === info.created && identity.startsWith("incarnation=")) {
      await this.replica.setStreamCreated(identity);
      stored = identity;
    }
    let reason: string | undefined;
    if (stored !== undefined && stored !== identity) reason = "stream recreated";
    else if (revision > info.state.last_seq) reason = "replica ahead of the stream";
    // Unbound with data: a bootstrap interrupted before it completed, by another process or on
    // another stream. What it holds is a part of some state, never a replica to resume.
    else if (stored === undefined && revision > 0 && this.syncing !== identity) reason = "interrupted bootstrap";
    if (reason) {
      this.logger.warn(
        { reason, revision, streamLastSeq: info.state.last_seq, stream: identity, replicaStream: stored },
        "cannot resume the replica; rebuilding it from the stream",
      );
      await this.rebuild(reason);
    }
    // The replica is bound to the stream (and so counts as warm) only once it has caught up.
    if (this.replica.streamCreated === undefined) this.syncing = identity;
  }

  private async rebuild(reason: string): Promise<void> {
    this.metrics.rebuilds.labels(reason).inc();
    this.incarnation++;
    this.epoch++;
    this.stopSession();
    this.queue = [];
    this.queueHead = 0;
    this.releaseDrainWaiters();
    this.lastReceived = 0;
    this.settleAfterDrain = undefined;
    this.syncing = undefined;
    this.freshness.reset();
    this.freshness.forgetHead();
    this.setReady(false);
    await this.replica.reset();
    this.options.onRevision(this.replica.revision);
  }

  // ---------------------------------------------------------------- receiving and applying

  private receive(epoch: number, m: JsMsg): void {
    if (epoch !== this.epoch) return;
    const info = m.info;
    const seq = info.streamSequence;
    // Redeliveries after a consumer restart: already queued or applied.
    if (seq <= this.lastReceived) return;
    this.lastReceived = seq;
    const at = mono();
    this.lastReceiveAt = at;
    this.queue.push({ seq, subject: m.subject, data: m.data, pending: info.pending, at });
    if (this.bootstrap) this.bootstrap.remaining = info.pending;
    this.scheduleDrain();
  }

  private scheduleDrain(): void {
    if (this.drainScheduled || this.applying >= MAX_IN_FLIGHT || this.backlog() === 0) return;
    this.drainScheduled = true;
    setImmediate(this.drain);
  }

  /**
   * Parses queued records into batches of at most BATCH and hands them to the replica's writer
   * thread, at most MAX_IN_FLIGHT batches at a time (the next goes out as one commits). The
   * event loop only parses; SQLite's inserts, commits and checkpoints happen on the thread.
   */
  private readonly drain = (): void => {
    this.drainScheduled = false;
    if (this.isClosed()) return;
    const queue = this.queue;
    while (this.queueHead < queue.length && this.applying < MAX_IN_FLIGHT) {
      const batch: { seq: number; record: ReplicaRecord }[] = [];
      let caughtUpAt: number | undefined;
      let last = 0;
      while (this.queueHead < queue.length && batch.length < BATCH) {
        const q = queue[this.queueHead++];
        if (!q) break;
        const record = readRecord(q.subject, q.data);
        if (record.kind === "invalid") this.logger.error({ seq: q.seq, problem: record.problem }, "skipping an invalid state record");
        batch.push({ seq: q.seq, record });
        last = q.seq;
        caughtUpAt = q.pending === 0 ? q.at : undefined;
      }
      this.applying++;
      const incarnation = this.incarnation;
      this.replica.apply(batch, last).then(
        (counts) => this.committed(incarnation, last, counts, caughtUpAt),
        (err: unknown) => this.applyFailed(incarnation, err),
      );
    }
    if (this.queueHead >= queue.length) {
      this.queue = [];
      this.queueHead = 0;
    } else if (this.queueHead > 4096) {
      this.queue = queue.slice(this.queueHead);
      this.queueHead = 0;
    }
    if (this.backlog() <= LOW_WATER) this.releaseDrainWaiters();
  };

  /** A batch committed: revision, freshness, waiters, metrics; then the next batch. */
  private committed(incarnation: number, last: number, counts: ApplyCounts, caughtUpAt: number | undefined): void {
    this.applying--;
    if (incarnation !== this.incarnation || this.isClosed()) return;
    if (counts.documents) this.metrics.records.labels("document").inc(counts.documents);
    if (counts.erased) this.metrics.records.labels("erased").inc(counts.erased);
    if (counts.catalogs) {
      this.metrics.records.labels("catalog").inc(counts.catalogs);
      this.logger.info({ revision: last, features: this.replica.catalog.featureKeys.length }, "catalog updated");
    }
    if (counts.invalid) this.metrics.records.labels("invalid").inc(counts.invalid);
    const revision = this.replica.revision;
    this.freshness.applied(revision);
    // Delivered with nothing pending behind it: the replica was current when it arrived.
    if (caughtUpAt !== undefined) this.settle(caughtUpAt);
    if (this.settleAfterDrain && revision >= this.settleAfterDrain.seq) {
      const at = this.settleAfterDrain.at;
      this.settleAfterDrain = undefined;
      this.settle(at);
    }
    this.afterConfirmation();
    this.options.onRevision(revision);
    this.logBootstrapProgress();
    this.scheduleDrain();
    if (this.backlog() <= LOW_WATER) this.releaseDrainWaiters();
  }

  /**
   * A batch could not be committed (disk full, I/O error). Nothing after it is applied either:
   * drop what is queued and read again from the replica's revision once the consumer restarts.
   */
  private applyFailed(incarnation: number, err: unknown): void {
    this.applying--;
    if (incarnation !== this.incarnation || this.isClosed()) return;
    this.logger.error({ err: errorMessage(err), revision: this.replica.revision }, "cannot write the replica; will retry from its revision");
    this.queue = [];
    this.queueHead = 0;
    this.lastReceived = this.replica.revision;
    this.releaseDrainWaiters();
    this.requestRestart("apply failed");
  }

  private onHeartbeat(data: Uint8Array): void {
    let hb: Heartbeat;
    try {
      hb = Heartbeat.decode(data);
    } catch {
      return;
    }
    const applied = this.replica.revision;
    this.freshness.heartbeat(hb.headRevision, mono(), applied, hb.snapshotInProgress);
    if (this.freshness.headBehind(applied)) this.streamCheckWanted = true;
    this.afterConfirmation();
  }

  /** NATS confirmed at `at` that nothing was pending: settle heartbeats and purged tails up to then. */
  private settle(at: number): void {
    const head = this.freshness.confirmedAt(at);
    if (head > this.replica.revision) {
      const incarnation = this.incarnation;
      this.replica.advanceRevision(head).then(
        () => {
          if (incarnation === this.incarnation) this.options.onRevision(this.replica.revision);
        },
        (err: unknown) => this.logger.error({ err: errorMessage(err) }, "cannot write the replica's revision"),
      );
    }
    this.afterConfirmation();
  }

  private afterConfirmation(): void {
    if (!this.readyNow && this.streamVerified && this.freshness.everCaughtUp && !this.freshness.snapshotInProgress) {
      const syncing = this.syncing;
      if (this.replica.streamCreated === undefined && syncing !== undefined) {
        const incarnation = this.incarnation;
        this.replica.setStreamCreated(syncing).then(
          () => {
            if (incarnation === this.incarnation && this.syncing === syncing) this.syncing = undefined;
          },
          (err: unknown) => this.logger.error({ err: errorMessage(err) }, "cannot record the replica's stream"),
        );
      }
      if (this.bootstrap) {
        const seconds = (mono() - this.bootstrap.startedAt) / 1000;
        this.logger.info({ revision: this.replica.revision, seconds: Math.round(seconds * 10) / 10 }, "initial sync complete; ready");
        this.bootstrap = undefined;
        this.metrics.bootstrapRemaining.set(0);
        this.metrics.bootstrapProgress.set(1);
      }
      this.setReady(true);
    }
  }

  private setReady(ready: boolean): void {
    if (ready === this.readyNow) return;
    this.readyNow = ready;
    this.options.onReady(ready);
  }

  private startBootstrapLog(info: StreamInfo): void {
    const now = mono();
    this.bootstrap = { target: info.state.last_seq, total: info.state.messages, startedAt: now, lastLogAt: now, remaining: info.state.messages };
    this.metrics.bootstrapRemaining.set(info.state.messages);
    this.metrics.bootstrapProgress.set(0);
    this.logger.info(
      { from: this.replica.revision, streamLastSeq: info.state.last_seq, streamMessages: info.state.messages, warm: this.replica.revision > 0 },
      this.replica.revision > 0 ? "catching up with the state stream" : "bootstrapping the replica from the state stream",
    );
  }

  private logBootstrapProgress(): void {
    const b = this.bootstrap;
    if (!b) return;
    const progress = b.total > 0 ? Math.min(1, Math.max(0, 1 - b.remaining / b.total)) : 1;
    this.metrics.bootstrapRemaining.set(b.remaining);
    this.metrics.bootstrapProgress.set(progress);
    const now = mono();
    if (now - b.lastLogAt < PROGRESS_LOG_MS) return;
    b.lastLogAt = now;
    this.logger.info(
      { revision: this.replica.revision, target: b.target, remaining: b.remaining, percent: Math.floor(progress * 100) },
      "initial sync in progress",
    );
  }

  // ---------------------------------------------------------------- watchdog

  private tickMs(): number {
    return Math.max(100, Math.min(1_000, Math.floor(this.options.coherencyWindowMs() / 4)));
  }

  private scheduleTick(): void {
    if (this.isClosed()) return;
    this.tickTimer = setTimeout(() => {
      this.tick();
      this.scheduleTick();
    }, this.tickMs());
    this.tickTimer.unref();
  }

  private tick(): void {
    const now = mono();
    if (
      !this.readyNow &&
      // Warm only if it completed a sync once (bound to its stream), never mid-bootstrap.
      this.replica.streamCreated !== undefined &&
      this.replica.revision > 0 &&
      now - this.startedAt >= this.options.offlineReadyAfterMs &&
      (!this.connectedNow || this.streamMissing)
    ) {
      this.logger.warn({ revision: this.replica.revision }, "NATS or the state stream is unavailable; serving the warm replica (answers are stale beyond the coherency window)");
      this.setReady(true);
    }
    if (!this.readyNow && !this.warnedIncomplete && this.replica.streamCreated === undefined && this.replica.revision > 0 && now - this.startedAt >= this.options.offlineReadyAfterMs && !this.connectedNow) {
      this.warnedIncomplete = true;
      this.logger.warn({ revision: this.replica.revision }, "the replica holds an interrupted bootstrap, not a complete state; not ready until it has synced from the stream");
    }
    if (!this.connectedNow || !this.session || this.isClosed()) return;
    if (!this.checkingStream && (this.streamCheckWanted || now - this.lastStreamCheckAt > STREAM_CHECK_MS)) void this.checkStream();
    if (!this.probing && (!this.readyNow || this.freshness.caughtUpAgeMs(now) > this.tickMs())) void this.probe();
  }

  /** Detects a recreated or rewound stream while following it. */
  private async checkStream(): Promise<void> {
    const jsm = this.jsm;
    if (!jsm) return;
    this.checkingStream = true;
    this.streamCheckWanted = false;
    const epoch = this.epoch;
    try {
      const info = await jsm.streams.info(STATE_STREAM);
      this.lastStreamCheckAt = mono();
      if (epoch !== this.epoch) return;
      const following = this.replica.streamCreated ?? this.syncing;
      if (streamIdentity(info) !== following || info.state.last_seq < this.replica.revision) this.requestRestart("stream changed");
    } catch (err) {
      if (isStreamNotFound(err)) {
        this.streamMissing = true;
        this.requestRestart("stream not found");
      }
    } finally {
      this.checkingStream = false;
    }
  }

  /**
   * Asks JetStream about the consumer: nothing pending and everything delivered received means
   * the replica is current as of the question; pending with no progress, or a lost consumer,
   * means the consumer is restarted from the replica's revision.
   */
  private async probe(): Promise<void> {
    const jsm = this.jsm;
    const session = this.session;
    const name = session?.consumer.currentConsumer?.name;
    if (!jsm || !session || !name) return;
    this.probing = true;
    const generation = this.probeGeneration;
    const at = mono();
    const receivedBefore = this.lastReceiveAt;
    try {
      const ci = await jsm.consumers.info(STATE_STREAM, name);
      if (session.epoch !== this.epoch || generation !== this.probeGeneration) return;
      this.missingProbes = 0;
      const delivered = ci.delivered.stream_seq;
      const quiet = this.lastProbeAt > 0 && this.lastReceiveAt === receivedBefore && this.lastReceiveAt < this.lastProbeAt;
      // The server delivered messages this client never received (in flight, or dropped by the
      // client around a reconnect: with no acks they are not redelivered).
      const missing = ci.delivered.consumer_seq > 0 && delivered > this.lastReceived;
      if (ci.num_pending === 0 && !missing) {
        this.stalledProbes = 0;
        if (this.replica.revision >= this.lastReceived) this.settle(at);
        else this.settleAfterDrain = { seq: this.lastReceived, at };
      } else if (quiet && (missing || ci.num_pending > 0)) {
        this.logger.debug({ pending: ci.num_pending, delivered, received: this.lastReceived, probes: this.stalledProbes + 1 }, "state consumer makes no progress");
        if (++this.stalledProbes >= 2) this.requestRestart(missing ? "lost messages" : "stalled");
      } else {
        this.stalledProbes = 0;
      }
      this.lastProbeDelivered = delivered;
      this.lastProbeAt = at;
    } catch (err) {
      if (session.epoch !== this.epoch || generation !== this.probeGeneration) return;
      const message = errorMessage(err);
      if (isStreamNotFound(err)) this.requestRestart("stream not found");
      else if (/consumer not found/i.test(message)) {
        this.logger.debug({ consumer: name, probes: this.missingProbes + 1 }, "state consumer not found");
        // Perhaps the stream was recreated (which deletes its consumers): check now, not in 5 s.
        if (!this.checkingStream) void this.checkStream();
        if (++this.missingProbes >= 3) this.requestRestart("consumer lost");
      }
    } finally {
      if (generation === this.probeGeneration) this.probing = false;
    }
  }

  /** Across a disconnect, probe answers (or their absence) say nothing about the new connection. */
  private forgetProbes(): void {
    this.probeGeneration++;
    this.probing = false;
    this.stalledProbes = 0;
    this.missingProbes = 0;
    this.lastProbeAt = 0;
    this.lastProbeDelivered = -1;
  }

  // ---------------------------------------------------------------- helpers

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wakeTimer = undefined;
        resolve();
      }, ms);
      this.wakeTimer = { timer, resolve };
    });
  }

  private wake(): void {
    const w = this.wakeTimer;
    this.wakeTimer = undefined;
    if (w) {
      clearTimeout(w.timer);
      w.resolve();
    }
  }
}

function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
