import { performance } from "node:perf_hooks";
import type { Consumer, ConsumerMessages, JetStreamClient, JetStreamManager, NatsConnection, StreamInfo, Subscription } from "nats";
import { Heartbeat } from "../../gen/proofgate/v1/document.js";
import { HEARTBEAT_SUBJECT, STATE_STREAM } from "../../replication/subjects.js";
import { streamIdentity } from "../../replication/streams.js";
import { backoffMs, isStreamNotFound, NatsLifecycle, pause, type NatsOptions } from "../../replication/connection.js";
import { errorMessage } from "../../errors/index.js";
import type { Logger } from "../../observability/logger.js";
import { Replica, type ApplyCounts } from "../replica/replica.js";
import type { SidecarMetrics } from "../metrics.js";
import type { Freshness } from "./freshness.js";
import { ApplyPipeline, LOW_WATER } from "./apply-pipeline.js";
import { BootstrapProgress } from "./bootstrap-progress.js";
import { StreamWatchdog, type WatchedSession } from "./watchdog.js";
import { CpuGovernor } from "../cpu-quota.js";

const mono = (): number => performance.now();

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

/** Messages per fetch; the next fetch goes out once the backlog is down to LOW_WATER. */
const FETCH = 1_000;
/**
 * Under a CPU quota: a fetch is a few milliseconds of work (parse and apply), so the governor can
 * keep the process below its quota; a thousand messages would be more than a whole period's.
 */
const FETCH_UNDER_QUOTA = 100;
/** An idle fetch ends after this and a new one goes out. */
const FETCH_EXPIRES_MS = 5_000;
const API_TIMEOUT_MS = 2_000;

/**
 * Where the replica stands against the stream, in this process: the follower's one state.
 * Readiness follows from it (`offline` and `current` are ready).
 */
type FollowerState =
  /** Not compared with the stream yet: confirmations do not count. `warned`: the incomplete replica was reported. */
  | { readonly phase: "starting"; readonly warned: boolean }
  /** A warm, complete replica served while NATS or the stream is unreachable: ready, not verified. */
  | { readonly phase: "offline" }
  /** Following `stream`, not caught up with it yet: not ready. */
  | { readonly phase: "syncing"; readonly stream: string; readonly progress: BootstrapProgress }
  /** Following `stream`, caught up at least once: ready. */
  | { readonly phase: "current"; readonly stream: string }
  /**
   * Building `target` from `stream` beside the replica, which was complete and keeps answering
   * (stale) until `target` has caught up and replaces it: ready.
   */
  | { readonly phase: "rebuilding"; readonly stream: string; readonly progress: BootstrapProgress; readonly target: Replica; readonly swapping: boolean }
  | { readonly phase: "closed" };

const isReady = (s: FollowerState): boolean => s.phase === "offline" || s.phase === "current" || s.phase === "rebuilding";

/** What one NATS connection gives the follower. */
interface Link {
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  readonly js: JetStreamClient;
  readonly watchdog: StreamWatchdog;
  readonly heartbeats: Subscription;
  /** The last look at the stream found none. */
  streamMissing: boolean;
}

/** One consumer's life: from a stream check to the next restart, with its own cancellation. */
class Session implements WatchedSession {
  private readonly cancel = new AbortController();
  private readonly endedWith = deferred<string>();
  consumer: (Consumer & { readonly currentConsumer?: { readonly name: string } | null }) | undefined;
  /** The fetch in progress. */
  batch: ConsumerMessages | undefined;
  stream = "";

  constructor(
    readonly link: Link,
    public pipeline: ApplyPipeline,
  ) {}

  get signal(): AbortSignal {
    return this.cancel.signal;
  }

  /** Resolves with the reason the session ended. */
  get ended(): Promise<string> {
    return this.endedWith.promise;
  }

  /** Ends the session (once): its fetch stops, and its callbacks no longer touch anything. */
  end(reason: string): void {
    if (this.cancel.signal.aborted) return;
    this.cancel.abort();
    this.endedWith.resolve(reason);
    this.batch?.stop();
  }

  consumerName(): string | undefined {
    return this.consumer?.currentConsumer?.name;
  }

  /** A method, not a field read, so that checks after an await are not narrowed away. */
  cancelled(): boolean {
    return this.cancel.signal.aborted;
  }
}

/**
 * Follows PROOFGATE_STATE into the replica: connects to NATS (retrying forever, never blocking
 * checks), checks the stream is the one the replica was built from (else rebuilds), reads from
 * the replica's revision + 1 with an ordered consumer in sessions (a StreamWatchdog restarts a
 * lost or stalled one), applies records through an ApplyPipeline, and tracks freshness from
 * writer heartbeats and consumer state.
 */
export class Follower {
  private state: FollowerState = { phase: "starting", warned: false };
  private readonly nats: NatsLifecycle;
  private link: Link | undefined;
  private session: Session | undefined;
  private pipeline: ApplyPipeline;
  private following: Promise<void> = Promise.resolve();
  private tickTimer: NodeJS.Timeout | undefined;
  private readonly stopping = new AbortController();
  private readonly startedAt = mono();
  /** Under a CPU quota, fetches wait until the process has room (see CpuGovernor). */
  private readonly governor = CpuGovernor.forThisProcess();

  constructor(
    private readonly replica: Replica,
    private readonly freshness: Freshness,
    private readonly metrics: SidecarMetrics,
    private readonly logger: Logger,
    private readonly options: FollowerOptions,
  ) {
    this.nats = new NatsLifecycle({ ...options, clientName: "proofgate-sidecar", reconnectTimeWaitMs: 500, meanwhile: "serving from the replica" }, logger);
    this.pipeline = this.newPipeline(replica);
    replica.onCorruption((problem) => void this.recoverFromCorruption(problem));
    if (replica.setAsideAtOpen !== undefined) metrics.rebuilds.labels("corrupt replica").inc();
  }

  /** A method, not a field read, so that checks after an await are not narrowed away. */
  private isClosed(): boolean {
    return this.stopping.signal.aborted;
  }

  /** Read through a method for the same reason. */
  private current(): FollowerState {
    return this.state;
  }

  get ready(): boolean {
    return isReady(this.state);
  }

  get connected(): boolean {
    return this.nats.up !== undefined;
  }

  /** The NATS connection while one exists (for the decision log). */
  get connection(): NatsConnection | undefined {
    return this.nats.connection;
  }

  start(): void {
    this.nats.on("connection", (nc) => {
      // One connection at a time: the previous one's sessions end before this one's start.
      this.following = this.following.then(() => this.follow(nc)).catch((err: unknown) => this.logger.error({ err: errorMessage(err) }, "cannot follow the state stream on this connection"));
    });
    this.nats.on("down", () => this.link?.watchdog.forgetProbes());
    this.nats.on("up", (nc) => {
      const link = this.link;
      if (link?.nc !== nc) return;
      link.watchdog.forgetProbes();
      link.watchdog.wantStreamCheck();
      // Verify the consumer came back rather than wait for the next tick.
      this.tick();
    });
    this.nats.start();
    this.scheduleTick();
    // Structural damage a warm start did not trip over is found here, off the event loop; until
    // then answers are stale. A corrupt file is rebuilt (fresh again once the rebuild has caught up).
    this.freshness.verifying(true);
    this.replica
      .verify()
      .catch((err: unknown) => {
        this.logger.warn({ err: errorMessage(err) }, "cannot check the replica file; reads still report corruption as they meet it");
        return true;
      })
      .finally(() => this.freshness.verifying(false))
      .catch(() => undefined);
  }

  async close(): Promise<void> {
    this.stopping.abort();
    const state = this.state;
    this.state = { phase: "closed" };
    if (this.tickTimer) clearTimeout(this.tickTimer);
    this.session?.end("closing");
    this.pipeline.stop();
    await this.nats.close();
    await this.following;
    // A rebuild not finished is started again next time; its file is replaced then.
    if (state.phase === "rebuilding") await state.target.close().catch(() => undefined);
  }

  private enter(next: FollowerState): void {
    if (this.state.phase === "closed") return;
    const was = isReady(this.state);
    this.state = next;
    const now = isReady(next);
    if (was !== now && next.phase !== "closed") this.options.onReady(now);
  }

  private newPipeline(replica: Replica): ApplyPipeline {
    const pipeline: ApplyPipeline = new ApplyPipeline(replica, this.logger, {
      committed: (revision, counts, caughtUpAt) => this.committed(pipeline, revision, counts, caughtUpAt),
      failed: () => this.requestRestart("apply failed"),
    });
    return pipeline;
  }

  // ---------------------------------------------------------------- connection and sessions

  /** Follows the stream over one connection until it closes (or the follower does). */
  private async follow(nc: NatsConnection): Promise<void> {
    if (this.isClosed() || nc.isClosed()) return;
    // Short API timeouts: a request lost in a disconnect must not hold the watchdog for long.
    const jsm = await nc.jetstreamManager({ checkAPI: false, timeout: API_TIMEOUT_MS });
    const heartbeats = nc.subscribe(HEARTBEAT_SUBJECT, { callback: (err, msg) => (err ? undefined : this.onHeartbeat(msg.data)) });
    const link: Link = {
      nc,
      jsm,
      js: nc.jetstream({ timeout: API_TIMEOUT_MS }),
      heartbeats,
      streamMissing: false,
      watchdog: new StreamWatchdog(
        jsm,
        {
          restart: (reason) => this.requestRestart(reason),
          settle: (at) => this.settle(at),
          settleOnceApplied: (seq, at) => this.pipeline.confirmWhenApplied(seq, at),
          streamMissing: () => (link.streamMissing = true),
        },
        this.logger,
      ),
    };
    this.link = link;
    void nc.closed().then(() => {
      if (this.session?.link === link) this.requestRestart("connection closed");
    });
    let failures = 0;
    while (!this.isClosed() && !nc.isClosed()) {
      try {
        const reason = await this.runSession(link);
        failures = 0;
        if (!this.isClosed() && !nc.isClosed()) this.logger.info({ reason, revision: this.replica.revision }, "restarting the state consumer");
      } catch (err) {
        if (this.isClosed() || nc.isClosed()) break;
        const level = ++failures > 3 ? "warn" : "debug";
        this.logger[level]({ err: errorMessage(err), failures }, "state consumer failed; retrying");
        await pause(backoffMs(failures), this.stopping.signal);
      }
    }
    if (this.link === link) this.link = undefined;
    try {
      heartbeats.unsubscribe();
    } catch {
      // the connection is already closed
    }
  }

  /** One consumer session. Resolves with the reason it ended. */
  private async runSession(link: Link): Promise<string> {
    const session = new Session(link, this.pipeline);
    this.session = session;
    try {
      const found = await this.waitForStream(link, session.signal);
      if (!found) return await session.ended;
      let { info, askedAt } = found;
      if (this.replica.revision === 0 && this.pipeline.replica === this.replica && this.options.bootstrap) {
        await this.options.bootstrap(link.nc, info);
        if (session.cancelled()) return await session.ended;
        // The restore took a while: measure the distance to the head from now.
        askedAt = mono();
        info = await link.jsm.streams.info(STATE_STREAM);
      }
      const stream = await this.ensureIncarnation(info);
      if (session.cancelled()) return await session.ended;
      const state = this.current();
      const revision = this.pipeline.replica.revision;
      switch (state.phase) {
        // Confirmations that came before the replica was checked against the stream (a heartbeat
        // can arrive first) may speak of another stream: only later ones count.
        case "starting":
          this.freshness.reset();
          this.enter({ phase: "syncing", stream, progress: new BootstrapProgress(info, revision, this.metrics, this.logger) });
          break;
        case "offline":
          this.freshness.reset();
          this.enter({ phase: "current", stream });
          break;
        case "syncing":
          // Still unbound (nothing applied yet): follow whichever stream is there now.
          if (state.stream !== stream) this.enter({ ...state, stream });
          break;
        case "current":
        case "rebuilding":
          break;
        case "closed":
          return "closing";
      }
      session.stream = stream;
      session.pipeline = this.pipeline;
      // The stream's last sequence now is a target like a heartbeat's head: reaching it means
      // the replica was current as of this moment.
      this.freshness.expect(info.state.last_seq, askedAt, revision);
      this.afterConfirmation();
      const from = Math.max(revision, this.pipeline.lastReceived) + 1;
      const consumer = await link.js.consumers.get(STATE_STREAM, { opt_start_seq: from });
      session.consumer = consumer;
      if (session.cancelled()) return await session.ended;
      link.watchdog.watch(session, askedAt);
      // Detached: creating the consumer retries internally with long back-offs, and a restart or
      // close must not wait for it.
      void this.fetchLoop(session, consumer);
      this.logger.debug({ from, lastSeq: info.state.last_seq }, "following the state stream");
      return await session.ended;
    } finally {
      session.end("ended");
      if (this.session === session) this.session = undefined;
      const name = session.consumerName();
      // Ordered consumers are ephemeral and expire by themselves; deleting is a courtesy.
      if (name && this.connected) void link.jsm.consumers.delete(STATE_STREAM, name).catch(() => undefined);
    }
  }

  /**
   * Reads the stream in fetches of FETCH messages, the next one only once the replica has
   * applied most of what it holds: memory stays bounded and a bootstrap never floods the event
   * loop (a `consume()` would keep pulling however far behind the replica is).
   */
  private async fetchLoop(session: Session, consumer: Consumer): Promise<void> {
    const { pipeline, signal } = session;
    while (!session.cancelled()) {
      if (pipeline.backlog > LOW_WATER) {
        await pipeline.room(signal);
        continue;
      }
      try {
        await this.governor?.admit(signal);
        if (session.cancelled()) return;
        const batch = await consumer.fetch({ max_messages: this.governor ? FETCH_UNDER_QUOTA : FETCH, expires: FETCH_EXPIRES_MS });
        if (session.cancelled()) {
          batch.stop();
          return;
        }
        session.batch = batch;
        for await (const m of batch) {
          if (session.cancelled()) break;
          const { streamSequence, pending } = m.info;
          const state = this.current();
          if (pipeline.receive(streamSequence, m.subject, m.data, pending) && (state.phase === "syncing" || state.phase === "rebuilding")) state.progress.received(pending);
        }
      } catch (err) {
        if (!session.cancelled()) this.requestRestart(`fetch failed: ${errorMessage(err)}`);
        return;
      }
    }
  }

  private requestRestart(reason: string): void {
    const metric = reason.split(":")[0] ?? reason;
    this.metrics.consumerRestarts.labels(metric).inc();
    this.session?.end(reason);
  }

  private async waitForStream(link: Link, signal: AbortSignal): Promise<{ info: StreamInfo; askedAt: number } | undefined> {
    let logged = false;
    while (!signal.aborted) {
      try {
        const askedAt = mono();
        const info = await link.jsm.streams.info(STATE_STREAM);
        link.streamMissing = false;
        return { info, askedAt };
      } catch (err) {
        if (!isStreamNotFound(err)) throw err;
        link.streamMissing = true;
        if (!logged) this.logger.warn({ stream: STATE_STREAM }, "state stream does not exist yet; waiting for the writer to create it");
        logged = true;
        await pause(500, signal);
      }
    }
    return undefined;
  }

  /**
   * A replica resumes only on the stream incarnation it was built from, and only if the stream
   * has not gone back in time. Otherwise it is rebuilt from scratch rather than serve wrong data.
   * Returns the stream's identity.
   */
  private async ensureIncarnation(info: StreamInfo): Promise<string> {
    const identity = streamIdentity(info);
    // The replica being built: the served one, or the one rebuilt beside it.
    const building = this.pipeline.replica;
    let stored = building.streamCreated;
    const revision = building.revision;
    // A replica bound by `created` (before the writer named the stream) adopts the stream's
    // incarnation id if `created` still matches: an upgrade does not rebuild every sidecar.
    if (stored !== undefined && stored !== identity && stored === info.created && identity.startsWith("incarnation=")) {
      await building.setStreamCreated(identity);
      stored = identity;
    }
    const state = this.current();
    const following = state.phase === "syncing" || state.phase === "current" || state.phase === "rebuilding" ? state.stream : undefined;
    let reason: string | undefined;
    if (stored !== undefined && stored !== identity) reason = "stream recreated";
    else if (revision > info.state.last_seq) reason = "replica ahead of the stream";
    // Unbound with data: a bootstrap interrupted before it completed, by another process or on
    // another stream. What it holds is a part of some state, never a replica to resume.
    else if (stored === undefined && revision > 0 && following !== identity) reason = "interrupted bootstrap";
    if (reason) {
      this.logger.warn({ reason, revision, streamLastSeq: info.state.last_seq, stream: identity, replicaStream: stored }, "cannot resume the replica; rebuilding it from the stream");
      await this.rebuild(reason, info, identity);
    }
    return identity;
  }

  /**
   * Starts the replica over from `stream`. A complete replica (bound to the stream it was built
   * from) keeps answering, stale, while the new one is built beside it; anything else (an
   * interrupted bootstrap, an empty replica) is emptied in place.
   */
  private async rebuild(reason: string, info: StreamInfo, stream: string): Promise<void> {
    this.metrics.rebuilds.labels(reason).inc();
    this.pipeline.stop();
    this.freshness.reset();
    this.freshness.forgetHead();
    const state = this.current();
    if (state.phase === "rebuilding") await state.target.discard();
    const served = this.replica;
    if (served.streamCreated !== undefined && served.revision > 0) {
      const target = Replica.openEmpty(`${served.path}.next`, this.logger);
      target.onCorruption(() => void this.abandonRebuild(target));
      this.freshness.servePrevious(true);
      this.pipeline = this.newPipeline(target);
      this.enter({ phase: "rebuilding", stream, progress: new BootstrapProgress(info, 0, this.metrics, this.logger), target, swapping: false });
      this.logger.warn({ reason, revision: served.revision }, "serving the previous replica (every answer stale) while a new one is built beside it");
      return;
    }
    this.freshness.servePrevious(false);
    this.enter({ phase: "starting", warned: false });
    await served.reset();
    this.pipeline = this.newPipeline(served);
    this.options.onRevision(served.revision);
  }

  /** The rebuilt replica caught up: it replaces the served one, and the consumer restarts on it. */
  private async swapIn(state: Extract<FollowerState, { phase: "rebuilding" }>): Promise<void> {
    this.state = { ...state, swapping: true };
    const { target, stream, progress } = state;
    this.pipeline.stop();
    try {
      await target.setStreamCreated(stream);
      await this.replica.adopt(target);
    } catch (err) {
      this.logger.error({ err: errorMessage(err) }, "cannot replace the replica with the rebuilt one; rebuilding in place");
      await this.recoverFromCorruption("swap failed");
      return;
    }
    if (this.isClosed()) return;
    this.freshness.servePrevious(false);
    progress.complete(this.replica.revision);
    this.pipeline = this.newPipeline(this.replica);
    this.enter({ phase: "current", stream });
    this.options.onRevision(this.replica.revision);
    this.logger.info({ revision: this.replica.revision }, "the rebuilt replica replaced the previous one");
    this.requestRestart("rebuilt");
  }

  /** The replica being rebuilt beside the served one is corrupt: drop it; the next session starts another. */
  private async abandonRebuild(target: Replica): Promise<void> {
    const state = this.current();
    if (state.phase !== "rebuilding" || state.target !== target) return;
    this.metrics.rebuilds.labels("corrupt replica").inc();
    this.pipeline.stop();
    this.pipeline = this.newPipeline(this.replica);
    // Still the previous replica, stale: ready, not verified against the stream.
    this.enter({ phase: "offline" });
    await target.discard();
    this.requestRestart("replica corrupt");
  }

  /**
   * The served replica's file is corrupt (found at start, by a read or a write): it was set aside
   * by the replica; start over in place from the stream. Until the new one has caught up the
   * sidecar is not ready and answers are stale.
   */
  private async recoverFromCorruption(problem: string): Promise<void> {
    if (this.isClosed()) return;
    this.metrics.rebuilds.labels("corrupt replica").inc();
    const state = this.current();
    this.pipeline.stop();
    this.freshness.reset();
    this.freshness.forgetHead();
    this.freshness.servePrevious(false);
    this.enter({ phase: "starting", warned: false });
    if (state.phase === "rebuilding") await state.target.discard();
    try {
      await this.replica.recover();
    } catch (err) {
      this.logger.error({ err: errorMessage(err), problem }, "cannot replace the corrupt replica file");
      throw err;
    }
    // A heartbeat that came while the corrupt file was closing was judged against that file's
    // revision and may have confirmed it current: the new replica is empty, and current for none.
    this.freshness.reset();
    this.freshness.forgetHead();
    this.pipeline = this.newPipeline(this.replica);
    this.options.onRevision(this.replica.revision);
    this.requestRestart("replica corrupt");
  }

  // ---------------------------------------------------------------- applying and confirming

  /** A batch committed: metrics, freshness, readiness, waiters. */
  private committed(pipeline: ApplyPipeline, revision: number, counts: ApplyCounts, caughtUpAt: number | undefined): void {
    if (pipeline !== this.pipeline || this.isClosed()) return;
    if (counts.documents) this.metrics.records.labels("document").inc(counts.documents);
    if (counts.erased) this.metrics.records.labels("erased").inc(counts.erased);
    if (counts.catalogs) {
      this.metrics.records.labels("catalog").inc(counts.catalogs);
      this.logger.info({ revision, features: this.replica.catalog.featureKeys.length }, "catalog updated");
    }
    if (counts.invalid) this.metrics.records.labels("invalid").inc(counts.invalid);
    this.freshness.applied(revision);
    // Delivered with nothing pending behind it: the replica was current when it arrived.
    if (caughtUpAt !== undefined) this.settle(caughtUpAt);
    this.afterConfirmation();
    // Waiters wait for the replica that answers, not for one being rebuilt beside it.
    if (pipeline.replica === this.replica) this.options.onRevision(revision);
    const state = this.current();
    if (state.phase === "syncing" || state.phase === "rebuilding") state.progress.committed(revision);
  }

  private onHeartbeat(data: Uint8Array): void {
    let hb: Heartbeat;
    try {
      hb = Heartbeat.decode(data);
    } catch {
      return;
    }
    const applied = this.pipeline.replica.revision;
    this.freshness.heartbeat(hb.headRevision, mono(), applied, hb.snapshotInProgress);
    if (this.freshness.headBehind(applied)) this.link?.watchdog.wantStreamCheck();
    this.afterConfirmation();
  }

  /** NATS confirmed at `at` that nothing was pending: settle heartbeats and purged tails up to then. */
  private settle(at: number): void {
    const head = this.freshness.confirmedAt(at);
    const pipeline = this.pipeline;
    const replica = pipeline.replica;
    if (head > replica.revision) {
      replica.advanceRevision(head).then(
        () => {
          if (pipeline === this.pipeline && replica === this.replica) this.options.onRevision(replica.revision);
        },
        (err: unknown) => this.logger.error({ err: errorMessage(err) }, "cannot write the replica's revision"),
      );
    }
    this.afterConfirmation();
  }

  /** A sync that has caught up (and no snapshot is being republished) binds the replica and is ready. */
  private afterConfirmation(): void {
    const state = this.current();
    if ((state.phase !== "syncing" && state.phase !== "rebuilding") || !this.freshness.everCaughtUp || this.freshness.snapshotInProgress) return;
    if (state.phase === "rebuilding") {
      // Caught up with the stream is not enough to replace a complete replica: an empty stream
      // made while the writer is away is "caught up" at once. The writer's heartbeat must say so.
      if (!state.swapping && this.freshness.everCurrent) void this.swapIn(state);
      return;
    }
    const { stream, progress } = state;
    // The replica is bound to the stream (and so counts as warm) only once it has caught up.
    if (this.replica.streamCreated === undefined) {
      this.replica.setStreamCreated(stream).catch((err: unknown) => this.logger.error({ err: errorMessage(err) }, "cannot record the replica's stream"));
    }
    progress.complete(this.replica.revision);
    this.enter({ phase: "current", stream });
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
    const state = this.state;
    const link = this.link;
    const connected = this.connected;
    const unreachable = !connected || (link?.streamMissing ?? false);
    if ((state.phase === "starting" || state.phase === "syncing") && this.replica.revision > 0 && now - this.startedAt >= this.options.offlineReadyAfterMs && unreachable) {
      // Warm only if it completed a sync once (bound to its stream), never mid-bootstrap.
      if (this.replica.streamCreated !== undefined) {
        this.logger.warn({ revision: this.replica.revision }, "NATS or the state stream is unavailable; serving the warm replica (answers are stale beyond the coherency window)");
        this.enter({ phase: "offline" });
      } else if (state.phase === "starting" && !state.warned && !connected) {
        this.state = { phase: "starting", warned: true };
        this.logger.warn({ revision: this.replica.revision }, "the replica holds an interrupted bootstrap, not a complete state; not ready until it has synced from the stream");
      }
    }
    if (!connected || !link || this.isClosed()) return;
    link.watchdog.tick(!this.ready || this.freshness.caughtUpAgeMs(now) > this.tickMs());
  }
}

function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
