import { performance } from "node:perf_hooks";
import { ErrorCode, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg, type NatsConnection, type StoredMsg } from "nats";
import { Heartbeat } from "../../gen/proofgate/v1/document.js";
import { CATALOG_SUBJECT, HEARTBEAT_SUBJECT, STATE_STREAM, customerSubject, tokenOfSubject } from "../../replication/subjects.js";
import { streamIdentity } from "../../replication/streams.js";
import { messageGets, isConsumerNotFound, isStreamNotFound, NatsLifecycle, type NatsOptions } from "../../replication/connection.js";
import { errorMessage } from "../../errors/index.js";
import type { Logger } from "../../observability/logger.js";
import { decodeStateRecord } from "../../replication/state-record.js";
import type { Freshness } from "../follow/freshness.js";
import type { SidecarMetrics } from "../metrics.js";
import type { LazyMetrics } from "./metrics.js";
import type { LazyStore } from "./store.js";

const mono = (): number => performance.now();

/** A direct get waits at most this long (less if the call's deadline is nearer). */
export const FETCH_TIMEOUT_MS = 1_000;
/** Distinct customers being fetched at once, at most; more misses are answered stale at once. */
export const MAX_FETCHES_IN_FLIGHT = 1_000;
/** The consumer's pull size: a lazy sidecar reads every message of the stream, but keeps few. */
const PULL = 1_000;
const STREAM_CHECK_MS = 5_000;
const API_TIMEOUT_MS = 2_000;
const PERSIST_MS = 1_000;

export interface LazyFollowerOptions extends NatsOptions {
  readonly coherencyWindowMs: () => number;
  /** The store's revision moved. */
  readonly onRevision: (revision: number) => void;
}

/** A message of a customer being fetched, delivered by the consumer before the fetch answered. */
interface Fetching {
  readonly promise: Promise<boolean>;
  seen?: { seq: number; subject: string; data: Uint8Array };
}

/**
 * Keeps the lazy store current: connects to NATS (retrying forever, never blocking checks),
 * fetches a customer missing from the store with one direct get of the last message on its
 * subject, and follows PROOFGATE_STATE with an ordered consumer from the store's revision,
 * applying only messages of kept customers and the catalog. Freshness is dated exactly as in
 * full mode: by writer heartbeats whose head the store's revision (every message seen) has
 * reached, and by NATS saying nothing is pending.
 */
export class LazyFollower {
  private nc: NatsConnection | undefined;
  private jsm: JetStreamManager | undefined;
  private js: JetStreamClient | undefined;
  private connectedNow = false;
  private closedFlag = false;
  private messages: ConsumerMessages | undefined;
  /** The ordered consumer; `currentConsumer` is the server-side consumer it runs now. */
  private consumer: { readonly currentConsumer?: { readonly name: string } | null } | undefined;
  private epoch = 0;
  private lastReceived = 0;
  private lastReceiveAt = 0;
  private streamVerified = false;
  private everVerified = false;
  /** Resolved once the store has been checked against the stream (after each consumer restart). */
  private verified = deferred();
  private lastStreamCheckAt = 0;
  private restarting = false;
  private probing = false;
  private stalledProbes = 0;
  /** The stream allows direct gets (`allow_direct`), as of the last stream info. */
  private directAllowed: boolean | undefined;
  private readonly fetching = new Map<string, Fetching>();
  private tickTimer: NodeJS.Timeout | undefined;
  private persistTimer: NodeJS.Timeout | undefined;
  private readonly lifecycle: NatsLifecycle;
  private wakeSleep: (() => void) | undefined;

  constructor(
    private readonly store: LazyStore,
    private readonly freshness: Freshness,
    private readonly metrics: SidecarMetrics,
    private readonly lazyMetrics: LazyMetrics,
    private readonly logger: Logger,
    private readonly options: LazyFollowerOptions,
  ) {
    this.lifecycle = new NatsLifecycle(
      { ...options, clientName: "proofgate-sidecar-lazy", reconnectTimeWaitMs: 500, meanwhile: "kept customers are served, misses answered stale" },
      logger,
    );
  }

  get connected(): boolean {
    return this.connectedNow;
  }

  get connection(): NatsConnection | undefined {
    return this.nc;
  }

  start(): void {
    this.persistTimer = setInterval(() => this.store.persistRevision(), PERSIST_MS);
    this.persistTimer.unref();
    let first = true;
    this.lifecycle.on("connection", (nc) => this.attach(nc));
    this.lifecycle.on("up", (nc) => {
      void this.up(nc, first ? "connected" : "reconnected").catch((err: unknown) => this.logger.warn({ err: errorMessage(err) }, "cannot use JetStream yet"));
      first = false;
    });
    this.lifecycle.on("down", () => {
      this.connectedNow = false;
      this.stopConsumer();
    });
    this.lifecycle.start();
    this.scheduleTick();
  }

  async close(): Promise<void> {
    this.closedFlag = true;
    clearInterval(this.persistTimer);
    if (this.tickTimer) clearTimeout(this.tickTimer);
    this.wakeSleep?.();
    this.stopConsumer();
    this.nc = undefined;
    await this.lifecycle.close();
    await Promise.allSettled([...this.fetching.values()].map((f) => f.promise));
  }

  private isClosed(): boolean {
    return this.closedFlag;
  }

  // ---------------------------------------------------------------- misses

  /**
   * Fetches a customer not in the store: one direct get of the last message on its subject.
   * Resolves true once the customer is kept (with its document, or with none when the stream has
   * no message for it), false when NATS could not answer. Concurrent misses of one customer share
   * one fetch.
   */
  fetch(customerId: string, timeoutMs: number): Promise<boolean> {
    const token = this.store.token(customerId);
    const existing = this.fetching.get(token);
    if (existing) return existing.promise;
    if (!this.connectedNow || !this.jsm || this.fetching.size >= MAX_FETCHES_IN_FLIGHT) {
      this.lazyMetrics.misses.labels(this.connectedNow ? "busy" : "offline").inc();
      return Promise.resolve(false);
    }
    const entry: Fetching = { promise: Promise.resolve(false) };
    const deadline = mono() + timeoutMs;
    const subject = customerSubject(customerId);
    const get = async (): Promise<{ message: StoredMsg | undefined; identity: string | undefined }> => {
      // Not before the store was checked against the stream: a document must not land in a
      // store that is about to be emptied, nor make a cold store replay the stream from its start.
      if (!this.streamVerified) await Promise.race([this.verified.promise, sleepMs(timeoutMs)]);
      const jsm = this.jsm;
      if (!this.streamVerified || !jsm) throw new Error("the state stream could not be checked in time");
      const identity = this.store.streamIdentity;
      return { message: await this.lastMessage(jsm, subject, deadline - mono()), identity };
    };
    (entry as { promise: Promise<boolean> }).promise = get().then(
      ({ message: m, identity }) => {
        this.fetching.delete(token);
        if (this.isClosed() || identity !== this.store.streamIdentity) return this.failed("stream changed");
        // A message the consumer delivered while the answer was on its way is newer: it wins.
        const seen = entry.seen;
        if (seen && (!m || seen.seq > m.seq)) this.keep(token, seen.seq, seen.subject, seen.data);
        else if (m) this.keep(token, m.seq, m.subject, m.data);
        else this.store.put(token, 0, null);
        this.lazyMetrics.misses.labels("fetched").inc();
        return true;
      },
      (err: unknown) => {
        this.fetching.delete(token);
        this.logger.debug({ err: errorMessage(err), customer: token }, "cannot fetch a customer's document");
        return this.failed("error");
      },
    );
    this.fetching.set(token, entry);
    return entry.promise;
  }

  private failed(result: string): false {
    this.lazyMetrics.misses.labels(result).inc();
    return false;
  }

  /** The last message on `subject`, undefined when there is none. */
  private async lastMessage(jsm: JetStreamManager, subject: string, timeoutMs: number): Promise<StoredMsg | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer from NATS within ${Math.round(timeoutMs)} ms`)), Math.max(1, timeoutMs));
    });
    const get = async (): Promise<StoredMsg | undefined> => {
      try {
        // A stream created before allow_direct (an older writer) is read through the stream API.
        return await messageGets(jsm, this.directAllowed).getMessage(STATE_STREAM, { last_by_subj: subject });
      } catch (err) {
        if (isNoMessage(err)) return undefined;
        throw err;
      }
    };
    try {
      return await Promise.race([get(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private keep(token: string, seq: number, subject: string, data: Uint8Array): void {
    const record = decodeStateRecord(subject, data);
    if (record.kind === "document") this.store.put(token, seq, record.document);
    else {
      if (record.kind === "invalid") this.logger.error({ seq, problem: record.problem }, "an invalid state record; the customer is kept as having no document");
      this.store.put(token, seq, null);
    }
  }

  // ---------------------------------------------------------------- connection

  /** A new connection (the first, or after the client gave up on one): its handles and the heartbeat subscription. */
  private attach(nc: NatsConnection): void {
    this.nc = nc;
    this.jsm = undefined;
    this.js = nc.jetstream({ timeout: API_TIMEOUT_MS });
    nc.subscribe(HEARTBEAT_SUBJECT, { callback: (err, msg) => (err ? undefined : this.onHeartbeat(msg.data)) });
  }

  /** Connected or reconnected: do not trust the consumer across a server restart, start it again from the revision. */
  private async up(nc: NatsConnection, why: string): Promise<void> {
    this.jsm ??= await nc.jetstreamManager({ checkAPI: false, timeout: API_TIMEOUT_MS });
    if (this.nc !== nc || this.isClosed()) return;
    this.connectedNow = true;
    void this.startConsumer(why);
  }

  // ---------------------------------------------------------------- following

  /**
   * Checks the stream against the store, then follows it from the store's revision. A store of
   * another incarnation, or ahead of the stream, is emptied. A store that keeps no customer (or
   * is too far behind to be worth catching up) starts at the stream's head: there is nothing of
   * its own to read before it.
   */
  private async startConsumer(why: string): Promise<void> {
    if (this.restarting) return;
    this.restarting = true;
    const epoch = ++this.epoch;
    this.stopConsumer();
    if (this.streamVerified) this.verified = deferred();
    this.streamVerified = false;
    try {
      for (let failures = 0; !this.isClosed() && epoch === this.epoch; failures++) {
        try {
          await this.follow(epoch, why);
          return;
        } catch (err) {
          if (failures === 3) this.logger.warn({ err: errorMessage(err) }, "cannot start following the state stream; retrying");
          await this.sleep(Math.min(250 * 2 ** Math.min(failures, 3), 2_000));
          if (!this.connectedNow) return;
        }
      }
    } finally {
      this.restarting = false;
    }
  }

  private async follow(epoch: number, why: string): Promise<void> {
    const jsm = this.jsm;
    const js = this.js;
    if (!jsm || !js) throw new Error("not connected");
    let info;
    const askedAt = mono();
    try {
      info = await jsm.streams.info(STATE_STREAM);
    } catch (err) {
      if (isStreamNotFound(err)) throw new Error("the state stream does not exist yet");
      throw err;
    }
    if (epoch !== this.epoch) return;
    const identity = streamIdentity(info);
    const last = info.state.last_seq;
    this.allowDirect(info.config.allow_direct);
    const store = this.store;
    if ((store.streamIdentity !== undefined && store.streamIdentity !== identity) || store.revision > last) {
      this.logger.warn({ stream: identity, storeStream: store.streamIdentity, revision: store.revision, streamLastSeq: last }, "another state stream; emptying the lazy store");
      store.reset();
      this.freshness.reset();
      this.freshness.forgetHead();
    }
    if (store.streamIdentity === undefined) store.bind(identity);
    // Far behind (a long stop): catching up would read most of the region for a few customers.
    if (store.size > 0 && last - store.revision > Math.max(10_000, 10 * store.bounds.maxCustomers)) {
      this.logger.info({ revision: store.revision, streamLastSeq: last, customers: store.size }, "far behind the stream; forgetting the kept customers, they are fetched again when asked for");
      store.dropDocuments();
    }
    // The catalog, read after the stream's head: at least as new as that head.
    const catalog = await this.lastMessage(jsm, CATALOG_SUBJECT, API_TIMEOUT_MS);
    if (epoch !== this.epoch) return;
    if (catalog) this.applyCatalog(catalog.seq, catalog.subject, catalog.data);
    if (store.size === 0) store.advance(last);
    // Confirmations before the store was first checked against the stream may speak of another one.
    if (!this.everVerified) this.freshness.reset();
    this.everVerified = true;
    this.streamVerified = true;
    this.verified.resolve();
    this.lastStreamCheckAt = askedAt;
    this.lastReceived = store.revision;
    this.stalledProbes = 0;
    // Reaching the stream's head as of now means current as of now, like a heartbeat's.
    this.freshness.expect(last, askedAt, store.revision);
    this.options.onRevision(store.revision);
    const from = store.revision + 1;
    const consumer = await js.consumers.get(STATE_STREAM, { opt_start_seq: from });
    if (epoch !== this.epoch || this.isClosed()) return;
    const messages = await consumer.consume({ max_messages: PULL });
    if (epoch !== this.epoch || this.isClosed()) {
      messages.stop();
      return;
    }
    this.messages = messages;
    this.consumer = consumer as { readonly currentConsumer?: { readonly name: string } | null };
    this.logger.info({ from, streamLastSeq: last, customers: store.size, why }, "following the state stream (lazy)");
    void (async () => {
      try {
        for await (const m of messages) {
          if (epoch !== this.epoch) break;
          this.receive(m);
        }
      } catch (err) {
        if (epoch === this.epoch && !this.isClosed()) this.logger.debug({ err: errorMessage(err) }, "the state consumer ended");
      }
    })();
  }

  private stopConsumer(): void {
    const m = this.messages;
    this.messages = undefined;
    if (m) {
      try {
        m.stop();
      } catch {
        // already stopped
      }
    }
  }

  /** Every message moves the revision; only the catalog and kept customers' messages are written. */
  private receive(m: JsMsg): void {
    const seq = m.seq;
    if (seq <= this.store.revision) return;
    this.lastReceived = seq;
    this.lastReceiveAt = mono();
    const subject = m.subject;
    if (subject === CATALOG_SUBJECT) this.applyCatalog(seq, subject, m.data);
    else {
      const token = tokenOfSubject(subject);
      if (token !== undefined) {
        const kept = this.store.heldRevision(token);
        if (kept !== undefined) {
          if (seq > kept) this.applyCustomer(token, seq, subject, m.data);
        } else {
          const f = this.fetching.get(token);
          if (f && (!f.seen || f.seen.seq < seq)) f.seen = { seq, subject, data: m.data };
        }
      }
    }
    this.store.advance(seq);
    this.freshness.applied(seq);
    if (m.info.pending === 0) this.settle(this.lastReceiveAt);
    this.options.onRevision(this.store.revision);
  }

  private applyCustomer(token: string, seq: number, subject: string, data: Uint8Array): void {
    const record = decodeStateRecord(subject, data);
    switch (record.kind) {
      case "document":
        this.store.update(token, seq, record.document);
        this.metrics.records.labels("document").inc();
        break;
      case "erased":
        this.store.update(token, seq, null);
        this.metrics.records.labels("erased").inc();
        break;
      default:
        this.metrics.records.labels("invalid").inc();
        this.logger.error({ seq, problem: record.kind === "invalid" ? record.problem : "not a customer record" }, "skipping an invalid state record");
    }
  }

  private applyCatalog(seq: number, subject: string, data: Uint8Array): void {
    if (seq <= this.store.catalogRevision) return;
    const record = decodeStateRecord(subject, data);
    if (record.kind !== "catalog") {
      this.metrics.records.labels("invalid").inc();
      this.logger.error({ seq, problem: record.kind === "invalid" ? record.problem : "not a catalog" }, "skipping an invalid catalog record");
      return;
    }
    this.store.setCatalog(seq, record.catalog, record.bytes);
    this.metrics.records.labels("catalog").inc();
    this.logger.info({ revision: seq, features: this.store.catalog.featureKeys.length }, "catalog updated");
  }

  private onHeartbeat(data: Uint8Array): void {
    let hb: Heartbeat;
    try {
      hb = Heartbeat.decode(data);
    } catch {
      return;
    }
    const applied = this.store.revision;
    // Before the store was checked against the stream, a heartbeat may speak of another one.
    if (!this.streamVerified) return;
    this.freshness.heartbeat(hb.headRevision, mono(), applied, hb.snapshotInProgress);
    if (this.freshness.headBehind(applied)) this.lastStreamCheckAt = 0;
  }

  /** NATS confirmed at `at` that nothing was pending: heartbeats before then are settled, a purged tail skipped. */
  private settle(at: number): void {
    const head = this.freshness.confirmedAt(at);
    if (head > this.store.revision) {
      this.store.advance(head);
      this.options.onRevision(this.store.revision);
    }
  }

  // ---------------------------------------------------------------- watchdog

  private tickMs(): number {
    return Math.max(100, Math.min(1_000, Math.floor(this.options.coherencyWindowMs() / 4)));
  }

  private scheduleTick(): void {
    if (this.isClosed()) return;
    this.tickTimer = setTimeout(() => {
      void this.tick().finally(() => this.scheduleTick());
    }, this.tickMs());
    this.tickTimer.unref();
  }

  /** Asks JetStream about the stream and the consumer: a changed stream or a lost or stalled consumer restarts it. */
  private async tick(): Promise<void> {
    const jsm = this.jsm;
    const messages = this.messages;
    if (!this.connectedNow || !jsm || this.restarting || this.probing || this.isClosed()) return;
    if (!messages) {
      void this.startConsumer("not following");
      return;
    }
    this.probing = true;
    const epoch = this.epoch;
    const at = mono();
    const receivedBefore = this.lastReceiveAt;
    try {
      if (at - this.lastStreamCheckAt > STREAM_CHECK_MS) {
        const info = await jsm.streams.info(STATE_STREAM);
        this.lastStreamCheckAt = mono();
        if (epoch !== this.epoch) return;
        this.allowDirect(info.config.allow_direct);
        if (streamIdentity(info) !== this.store.streamIdentity || info.state.last_seq < this.store.revision) {
          void this.startConsumer("stream changed");
          return;
        }
      }
      const name = this.consumer?.currentConsumer?.name;
      if (!name) return;
      const ci = await jsm.consumers.info(STATE_STREAM, name);
      if (epoch !== this.epoch) return;
      const missing = ci.delivered.consumer_seq > 0 && ci.delivered.stream_seq > this.lastReceived;
      if (ci.num_pending === 0 && !missing) {
        this.stalledProbes = 0;
        this.settle(at);
      } else if (this.lastReceiveAt === receivedBefore && ++this.stalledProbes >= 3) {
        this.metrics.consumerRestarts.labels(missing ? "lost messages" : "stalled").inc();
        void this.startConsumer(missing ? "lost messages" : "stalled");
      }
    } catch (err) {
      if (epoch !== this.epoch) return;
      const message = errorMessage(err);
      if (isStreamNotFound(err) || isConsumerNotFound(err)) {
        this.metrics.consumerRestarts.labels(isStreamNotFound(err) ? "stream not found" : "consumer lost").inc();
        void this.startConsumer(message);
      }
    } finally {
      this.probing = false;
    }
  }

  private allowDirect(allowed: boolean | undefined): void {
    if (!allowed && this.directAllowed !== false) this.logger.warn("the state stream does not allow direct gets (an older writer created it); misses use the stream API");
    this.directAllowed = allowed === true;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wakeSleep = undefined;
        resolve();
      }, ms);
      this.wakeSleep = () => {
        clearTimeout(t);
        this.wakeSleep = undefined;
        resolve();
      };
    });
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)).unref());
}

function isNoMessage(err: unknown): boolean {
  return err instanceof Error && ((err as { code?: string }).code === ErrorCode.JetStream404NoMessages || /no message found|message not found/i.test(err.message));
}
