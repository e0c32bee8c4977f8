import { DeliverPolicy, millis, type ConsumerMessages, type JsMsg } from "nats";
import { decodeEvent, decodeEventList, type DecodedEvent } from "../../billing/index.js";
import { errorMessage, storageError, UnavailableError } from "../../errors/index.js";
import { HEADER_CONTENT_TYPE } from "../../replication/subjects.js";
import type { Logger } from "../../observability/logger.js";
import { applyAdminCommand } from "../admin/commands.js";
import type { WriterCore } from "../core.js";
import { applyEvents, MAX_APPLY_ATTEMPTS, type Applied, type Incoming } from "../ingest/apply.js";
import type { EventOrigin, WriterMetrics } from "../metrics.js";
import type { NatsLink } from "../nats-link.js";
import { pause } from "../../replication/connection.js";
import {
  appendInput,
  decodeAdminCommand,
  ensureInputStream,
  HEADER_INPUT_ORIGIN,
  HEADER_INPUT_PRINCIPAL,
  HEADER_INPUT_RECEIVED_AT,
  INPUT_ADMIN_SUBJECT,
  INPUT_EVENTS_SUBJECT,
  INPUT_STREAM,
} from "./inputs.js";

/** What folding one input message did. */
export interface InputOutcome {
  /** Per-event results of an event message. */
  readonly applied: readonly Applied[];
  /** Outbox rows it enqueued. */
  readonly outboxIds: readonly number[];
  /** The same input was appended before (within JetStream's duplicate window): this is its outcome. */
  readonly duplicate?: boolean;
  /** Why an admin command was refused (a typed error, the same on every writer). */
  readonly error?: Error;
}

export interface FoldOptions {
  readonly logger: Logger;
  readonly metrics: WriterMetrics;
  readonly streamReplicas: number;
}

interface Waiter {
  readonly seq: number;
  readonly resolve: (o: InputOutcome | undefined) => void;
  /** The ledger could not take the batch holding `seq` (disk full, I/O error): it is folded again later. */
  readonly fail: (err: Error) => void;
}

/** Messages applied in one ledger transaction at most. */
const BATCH = 512;
/**
 * A transaction takes no further message once it has run this long (it always takes one): the
 * loop is then free for the publisher, acks and the lease before the next batch, instead of
 * folding a backlog in one block of seconds. Long enough that a commit (its WAL writes and fsync,
 * a few milliseconds here) is shared by tens of messages: at 25 ms, commits took a quarter of the
 * fold's time at 1,000 events/s.
 */
const BATCH_MS = 50;
/** Outcomes kept for callers whose append ack arrives after the fold (bounded). */
const OUTCOMES_KEPT = 4_096;
/** Delay before the fold starts over after a ledger failure. */
const RETRY_MS = 1_000;
/**
 * The consumer's pull expiry: nats.js sends idle heartbeats every half of it and recreates an
 * ordered consumer after two missed ones, so a consumer lost with its NATS server (it lives on the
 * stream's leader) is noticed within about this long, not the default 30 s.
 */
const PULL_EXPIRES_MS = 4_000;
/** Inputs known to exist and nothing delivered for this long: the consumer is re-created. */
const STALL_MS = 5_000;
/** How long creating the consumer may take before it is started over. */
const ATTACH_TIMEOUT_MS = 10_000;

/** Closes a consumer's message flow, giving up after a second (its server may be gone). */
async function closeConsumer(messages: ConsumerMessages | undefined): Promise<void> {
  if (messages) await Promise.race([messages.close().catch(() => undefined), pause(1_000)]);
}

/**
 * The writer's fold of the input stream (docs/writer.md, "High availability"): an ordered consumer
 * from the sequence after the last one folded, applying messages in order, a batch per ledger
 * transaction (group commit) that also records the last sequence folded, so every input is
 * applied exactly once to this ledger whatever crashes. Leader and standbys run the same fold.
 */
export class InputFold {
  private messages: ConsumerMessages | undefined;
  private queue: JsMsg[] = [];
  private scheduled = false;
  private stopped = false;
  private generation = 0;
  private attached = false;
  /** Reached the head once since attaching: from then on this writer counts as current. */
  private current = false;
  private readonly currentListeners: (() => void)[] = [];
  /** The highest input sequence known to exist (from the stream, deliveries and appends). */
  private head = 0;
  private waiters: Waiter[] = [];
  private batchLimit = BATCH;
  private readonly outcomes = new Map<number, InputOutcome>();
  private lastDeliveryAt = 0;
  private watchdog: NodeJS.Timeout | undefined;

  constructor(
    private readonly core: WriterCore,
    private readonly link: NatsLink,
    private readonly options: FoldOptions,
  ) {}

  /** The last input sequence folded into the ledger. */
  get folded(): number {
    return this.core.ledger.inputFolded();
  }

  /**
   * Attached to the input stream and, since attaching, has once folded everything it was known to
   * hold (a writer that keeps up stays current while new inputs are in flight).
   */
  get caughtUp(): boolean {
    return this.attached && this.link.ready !== undefined && this.current;
  }

  /** `fn` runs whenever the fold becomes current (the lease can be taken at once). */
  onCurrent(fn: () => void): void {
    this.currentListeners.push(fn);
  }

  private checkCurrent(): void {
    if (this.current || !this.attached || this.folded < this.head) return;
    this.current = true;
    for (const fn of this.currentListeners) fn();
  }

  /** The largest input message the server takes (its max_payload less room for headers), when connected. */
  get maxInputBytes(): number | undefined {
    const max = this.link.ready?.nc.info?.max_payload;
    return max === undefined ? undefined : max - 1_024;
  }

  /** How many known input messages are not folded yet. */
  get lag(): number {
    return Math.max(0, this.head - this.folded);
  }

  start(): void {
    this.link.onReady(() => this.attach());
    this.link.onDown(() => (this.attached = false));
    this.attach();
    this.watchdog = setInterval(() => void this.checkStalled(), STALL_MS / 2);
    this.watchdog.unref();
  }

  /**
   * Belt and braces behind nats.js's own recovery: when inputs are known to exist (the stream's
   * last sequence, read here, or an append's) and nothing has been delivered for STALL_MS, the
   * consumer is re-created from the last folded sequence.
   */
  private async checkStalled(): Promise<void> {
    const handles = this.link.ready;
    if (this.stopped || !this.attached || !handles) return;
    const info = await handles.jsm.streams.info(INPUT_STREAM).catch(() => undefined);
    if (info) this.head = Math.max(this.head, info.state.last_seq);
    if (this.folded >= this.head || performance.now() - this.lastDeliveryAt < STALL_MS || this.queue.length > 0) return;
    this.options.logger.warn({ folded: this.folded, head: this.head }, "nothing delivered from the input stream for a while; re-creating its consumer");
    this.attach();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.watchdog);
    this.generation++;
    this.queue = [];
    await closeConsumer(this.messages);
    this.messages = undefined;
    for (const w of this.waiters.splice(0)) w.resolve(undefined);
  }

  /**
   * Appends an input and waits until this writer has folded it: the outcome, or undefined when it
   * was folded before (a duplicate append). UNAVAILABLE when NATS cannot take it or this writer
   * does not get to it within `timeoutMs`.
   */
  async submit(subject: string, data: Uint8Array, meta: Readonly<Record<string, string>>, timeoutMs: number): Promise<InputOutcome | undefined> {
    const deadline = Date.now() + timeoutMs;
    // Just started, or reconnecting: NATS gets the rest of the time to come up.
    while (!this.link.ready && !this.stopped && Date.now() < deadline) await pause(Math.min(50, deadline - Date.now()));
    const h = this.link.ready;
    const { seq, duplicate } = await appendInput(h?.js, h?.nc.info?.max_payload, subject, data, meta, Math.max(1, deadline - Date.now()));
    this.head = Math.max(this.head, seq);
    const outcome = await this.outcome(seq, Math.max(1, deadline - Date.now()));
    return outcome && duplicate ? { ...outcome, duplicate } : outcome;
  }

  private outcome(seq: number, timeoutMs: number): Promise<InputOutcome | undefined> {
    const known = this.outcomes.get(seq);
    if (known) return Promise.resolve(known);
    if (seq <= this.folded) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(
          new UnavailableError(
            `the change is on the input stream (sequence ${seq}) but this writer did not apply it within ${timeoutMs} ms (catching up?); it will be applied, and retrying is safe`,
          ),
        );
      }, timeoutMs);
      const waiter: Waiter = {
        seq,
        resolve: (o) => {
          clearTimeout(timer);
          resolve(o);
        },
        fail: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.waiters.push(waiter);
    });
  }

  private attach(): void {
    if (this.stopped || !this.link.ready) return;
    const gen = ++this.generation;
    void this.doAttach(gen);
  }

  private async doAttach(gen: number): Promise<void> {
    const handles = this.link.ready;
    if (!handles) return;
    const log = this.options.logger;
    const superseded = (): boolean => this.stopped || gen !== this.generation;
    try {
      const old = this.messages;
      this.messages = undefined;
      this.attached = false;
      this.current = false;
      this.queue = [];
      // Not awaited: closing a consumer whose server died can wait forever; its messages are
      // dropped by generation anyway.
      void closeConsumer(old);
      await ensureInputStream(handles.jsm, this.options.streamReplicas);
      const info = await handles.jsm.streams.info(INPUT_STREAM);
      if (superseded()) return;
      this.head = Math.max(this.head, info.state.last_seq);
      const from = this.folded + 1;
      const consumer = await handles.js.consumers.get(INPUT_STREAM, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from });
      if (superseded()) return;
      this.lastDeliveryAt = performance.now();
      // nats.js retries creating an ordered consumer for minutes without a word (while a JetStream
      // leader is being elected, say): bounded here, so the wait is logged and starts over.
      const consuming = consumer.consume({ max_messages: BATCH, expires: PULL_EXPIRES_MS, callback: (m) => this.enqueue(m, gen) });
      consuming.then(
        (m) => {
          if (superseded()) void closeConsumer(m);
        },
        () => undefined,
      );
      const messages = await Promise.race([
        consuming,
        pause(ATTACH_TIMEOUT_MS).then((): never => {
          // The server asked, and the stream's leader as it saw it: what tells a slow election from a lost node.
          throw new Error(
            `no consumer on ${INPUT_STREAM} after ${ATTACH_TIMEOUT_MS} ms (a JetStream leader election?); asked server ${handles.nc.info?.server_name ?? "?"}, stream leader ${info.cluster?.leader ?? "none"}`,
          );
        }),
      ]);
      if (superseded()) {
        void closeConsumer(messages);
        return;
      }
      this.messages = messages;
      this.attached = true;
      this.checkCurrent();
      log.info({ from, head: this.head }, this.head >= from ? "folding the input stream (catching up)" : "folding the input stream");
    } catch (err) {
      if (superseded()) return;
      log.warn({ err: errorMessage(err) }, "cannot follow the input stream yet; retrying");
      // A consumer that comes after all belongs to no one: closed (its messages are dropped by generation).
      this.generation++;
      const retry = this.generation;
      setTimeout(() => {
        if (retry === this.generation) this.attach();
      }, RETRY_MS).unref();
    }
  }

  private enqueue(m: JsMsg, gen: number): void {
    if (this.stopped || gen !== this.generation) return;
    this.lastDeliveryAt = performance.now();
    this.head = Math.max(this.head, m.seq + m.info.pending);
    this.queue.push(m);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.drain());
    }
  }

  /**
   * One transaction per turn of the event loop, then the next turn (setImmediate) if more is
   * queued: what the batch enqueued is published meanwhile. Messages of a superseded consumer
   * never enter the queue (enqueue checks), so the queue is always current.
   */
  private drain(): void {
    this.scheduled = false;
    if (this.queue.length === 0 || this.stopped) return;
    const batch = this.queue.splice(0, this.batchLimit);
    const taken = this.process(batch);
    if (taken === undefined) {
      // Smaller transactions after a failure, growing back as they succeed: a ledger short of
      // space may take one message at a time (a transaction needs room for all it writes, WAL
      // included) where 512 do not fit.
      this.batchLimit = 1;
      // The ledger failed (disk full, I/O error): nothing of the batch was kept. Start over from
      // the last folded sequence after a pause.
      this.queue = [];
      this.attached = false;
      this.generation++;
      setTimeout(() => this.attach(), RETRY_MS).unref();
      return;
    }
    this.batchLimit = Math.min(BATCH, this.batchLimit * 2);
    // What the time budget left for the next transaction goes back to the front, in order.
    if (taken < batch.length) this.queue = batch.slice(taken).concat(this.queue);
    if (this.queue.length > 0) {
      this.scheduled = true;
      setImmediate(() => this.drain());
    }
  }

  /** Folds messages of `batch` in order in one transaction, until BATCH_MS is spent: how many it took, or undefined when the ledger failed. */
  private process(batch: readonly JsMsg[]): number | undefined {
    const core = this.core;
    const ledger = core.ledger;
    const done: [number, InputOutcome][] = [];
    let taken = 0;
    try {
      core.commit(() => {
        const start = performance.now();
        let last = ledger.inputFolded();
        for (const m of batch) {
          if (taken > 0 && performance.now() - start >= BATCH_MS) break;
          taken++;
          // A redelivery after a consumer reset: already in the ledger.
          if (m.seq <= last) continue;
          done.push([m.seq, ledger.foldingInput(m.seq, () => this.applyMessage(m.seq, m.subject, m.data, m.headers?.get(HEADER_CONTENT_TYPE) ?? "", millis(m.info.timestampNanos), m.headers))]);
          last = m.seq;
        }
        ledger.setInputFolded(last);
      });
    } catch (err) {
      this.options.logger.error({ err: errorMessage(err) }, "ledger transaction failed; the inputs will be folded again");
      // Callers waiting on this batch hear why now (e.g. RESOURCE_EXHAUSTED for a full disk), not a timeout.
      const failed = storageError(err, "ledger", "the change is on the input stream and is applied once the ledger can be written; retrying is safe");
      const last = batch[batch.length - 1]?.seq ?? 0;
      if (failed) {
        const hit = this.waiters.filter((w) => w.seq <= last);
        this.waiters = this.waiters.filter((w) => w.seq > last);
        for (const w of hit) w.fail(failed);
      }
      return undefined;
    }
    for (const [seq, o] of done) {
      this.outcomes.set(seq, o);
      if (this.outcomes.size > OUTCOMES_KEPT) this.outcomes.delete(this.outcomes.keys().next().value as number);
    }
    const folded = this.folded;
    this.checkCurrent();
    if (this.waiters.length > 0) {
      const ready = this.waiters.filter((w) => w.seq <= folded);
      this.waiters = this.waiters.filter((w) => w.seq > folded);
      for (const w of ready) w.resolve(this.outcomes.get(w.seq));
    }
    return taken;
  }

  /** One input message, inside the batch's transaction and the message's fold position. */
  private applyMessage(seq: number, subject: string, data: Uint8Array, contentType: string, atMs: number, hdrs: JsMsg["headers"]): InputOutcome {
    const core = this.core;
    const metrics = this.options.metrics;
    const events = (items: Incoming[], source: EventOrigin): InputOutcome => {
      if (!core.catalog) {
        // Events cannot be validated without a catalog: they wait, in order, for the first one.
        core.ledger.parkInput({ seq, subject, payload: data, contentType, atMs });
        return { applied: [], outboxIds: [] };
      }
      const applied = applyEvents(core, items, source, metrics);
      return { applied, outboxIds: applied.flatMap((r) => (r.outboxId === undefined ? [] : [r.outboxId])) };
    };
    if (subject === INPUT_EVENTS_SUBJECT) {
      // Each event decoded apart, as Publish received it: a malformed one is rejected alone, alike in every writer.
      let decoded: DecodedEvent[];
      try {
        decoded = decodeEventList(data, 1, "events");
      } catch (err) {
        this.options.logger.error({ seq, err: errorMessage(err) }, "unreadable event batch on the input stream; skipped");
        return { applied: [], outboxIds: [] };
      }
      const origin = hdrs?.get(HEADER_INPUT_ORIGIN) === "webhook" ? "webhook" : "grpc";
      const principal = hdrs?.get(HEADER_INPUT_PRINCIPAL) || undefined;
      const receivedAt = Number(hdrs?.get(HEADER_INPUT_RECEIVED_AT) ?? NaN);
      const at = Number.isSafeInteger(receivedAt) ? receivedAt : atMs;
      return events(
        decoded.map((d) => ({
          event: d.event,
          ...(d.error ? { decodeError: d.error.message } : {}),
          origin,
          ...(principal === undefined ? {} : { principal }),
          payload: d.payload,
          contentType: "application/protobuf",
          attempt: MAX_APPLY_ATTEMPTS,
          atMs: at,
        })),
        origin,
      );
    }
    if (subject === INPUT_ADMIN_SUBJECT) {
      try {
        const command = decodeAdminCommand(data);
        const id = core.ledger.transaction(() => applyAdminCommand(core, command));
        if (command.kind === "catalog") this.unpark();
        return { applied: [], outboxIds: id === undefined ? [] : [id] };
      } catch (err) {
        // The ledger itself failed: the batch is retried. Anything else is the command's answer.
        if (err instanceof Error && err.name === "SqliteError") throw err;
        return { applied: [], outboxIds: [], error: err instanceof Error ? err : new Error(String(err)) };
      }
    }
    // A billing event published to PROOFGATE_BILLING, sourced into the input stream.
    let item: Incoming;
    try {
      item = { event: decodeEvent(data, contentType || undefined), origin: subject, payload: data, contentType, attempt: MAX_APPLY_ATTEMPTS, atMs };
    } catch (err) {
      item = { event: undefined, decodeError: errorMessage(err), origin: subject, payload: data, contentType, attempt: MAX_APPLY_ATTEMPTS, atMs };
    }
    return events([item], "nats");
  }

  /** After the first catalog: the inputs that waited for it, in order, at the catalog's position. */
  private unpark(): void {
    if (!this.core.catalog) return;
    for (const p of this.core.ledger.takeParkedInputs()) this.applyMessage(p.seq, p.subject, p.payload, p.contentType, p.atMs, undefined);
  }
}
