import { AckPolicy, ConsumerEvents, DeliverPolicy, nanos, type ConsumerMessages, type JsMsg } from "nats";
import { decodeEvent } from "../../billing/index.js";
import { errorMessage } from "../../errors/index.js";
import { IngestResult } from "../../gen/proofgate/v1/ingest.js";
import { BILLING_STREAM, HEADER_CONTENT_TYPE } from "../../replication/subjects.js";
import type { Logger } from "../../observability/logger.js";
import type { WriterCore } from "../core.js";
import type { WriterMetrics } from "../metrics.js";
import type { NatsLink } from "../nats-link.js";
import { applyEvents, type Incoming } from "./apply.js";

export interface ConsumerOptions {
  /** Durable consumer name on PROOFGATE_BILLING. */
  readonly name: string;
  /** Redelivery delay for events a dead writer received but never committed (or acked). */
  readonly ackWaitMs: number;
  readonly logger: Logger;
  readonly metrics: WriterMetrics;
  /** Called after each commit that changed something (wakes the publishers). */
  readonly committed: () => void;
}

/** Messages pulled and buffered at a time; also the most applied in one transaction. */
const BATCH = 512;
/** Redelivery delay for an event that hit a writer error (not the event's fault). */
const RETRY_MS = 5_000;

/**
 * The durable pull consumer on PROOFGATE_BILLING. Messages are buffered as they arrive and
 * applied in batches, one ledger transaction per batch (group commit); each message is acked
 * only after that commit. Poison events are dead-lettered (in the same commit) and acked, so
 * they never block the ones behind them. Consumption starts once a catalog exists: events
 * cannot be validated without one, and they wait safely in the stream.
 */
export class BillingConsumer {
  private messages: ConsumerMessages | undefined;
  private queue: JsMsg[] = [];
  private scheduled = false;
  private stopped = false;
  private attaching = false;
  private generation = 0;

  constructor(
    private readonly core: WriterCore,
    private readonly link: NatsLink,
    private readonly options: ConsumerOptions,
  ) {}

  start(): void {
    // After a reconnect a request of a running attempt may be lost with the old connection:
    // start over at once rather than wait for its timeout.
    this.link.onReady(() => this.attach(true));
    this.attach();
  }

  /**
   * Attaches the consumer if it is not attached (or being attached); `force` starts over even
   * if it is. Called at start, on every reconnect, and when a catalog becomes available.
   */
  attach(force = false): void {
    if (this.stopped || !this.link.ready || !this.core.catalog) return;
    if (!force && (this.messages || this.attaching)) return;
    const gen = ++this.generation;
    this.attaching = true;
    void this.doAttach(gen).finally(() => {
      if (gen === this.generation) this.attaching = false;
    });
  }

  private async doAttach(gen: number): Promise<void> {
    const handles = this.link.ready;
    if (!handles) return;
    const log = this.options.logger;
    const superseded = (): boolean => this.stopped || gen !== this.generation;
    try {
      const old = this.messages;
      this.messages = undefined;
      await old?.close();
      const name = this.options.name;
      try {
        const info = await handles.jsm.consumers.info(BILLING_STREAM, name);
        // A consumer created by an older writer (or by hand) follows this writer's --ack-wait.
        if (info.config.ack_wait !== nanos(this.options.ackWaitMs)) {
          await handles.jsm.consumers.update(BILLING_STREAM, name, { ack_wait: nanos(this.options.ackWaitMs) });
        }
      } catch {
        if (superseded()) return;
        await this.link.ensureStreams();
        await handles.jsm.consumers.add(BILLING_STREAM, {
          durable_name: name,
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          ack_wait: nanos(this.options.ackWaitMs),
          max_deliver: -1,
          max_ack_pending: 4 * BATCH,
        });
      }
      if (superseded()) return;
      const consumer = await handles.js.consumers.get(BILLING_STREAM, name);
      if (superseded()) return;
      const messages = await consumer.consume({ max_messages: BATCH, callback: (m) => this.enqueue(m) });
      if (superseded()) {
        await messages.close();
        return;
      }
      this.messages = messages;
      log.info({ consumer: name }, "consuming billing events");
      void this.watch(messages);
    } catch (err) {
      if (superseded()) return;
      log.warn({ err: errorMessage(err) }, "cannot attach the billing consumer yet; retrying");
      setTimeout(() => {
        if (gen === this.generation) this.attach(true);
      }, 1_000).unref();
    }
  }

  private async watch(messages: ConsumerMessages): Promise<void> {
    for await (const s of await messages.status()) {
      if (s.type === ConsumerEvents.ConsumerNotFound || s.type === ConsumerEvents.StreamNotFound || s.type === ConsumerEvents.ConsumerDeleted) {
        if (this.messages !== messages) return;
        this.options.logger.warn({ event: s.type }, "billing consumer lost; recreating it");
        this.messages = undefined;
        await messages.close();
        this.attach(true);
        return;
      }
    }
  }

  private enqueue(m: JsMsg): void {
    if (this.stopped) {
      m.nak();
      return;
    }
    this.queue.push(m);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.drain());
    }
  }

  private drain(): void {
    this.scheduled = false;
    while (this.queue.length > 0 && !this.stopped) {
      const batch = this.queue.splice(0, BATCH);
      this.process(batch);
    }
  }

  private process(batch: JsMsg[]): void {
    const items: Incoming[] = batch.map((m) => {
      const contentType = m.headers?.get(HEADER_CONTENT_TYPE) ?? "";
      try {
        return { event: decodeEvent(m.data, contentType || undefined), origin: m.subject, payload: m.data, contentType, attempt: m.info.deliveryCount };
      } catch (err) {
        return { event: undefined, decodeError: errorMessage(err), origin: m.subject, payload: m.data, contentType };
      }
    });
    let results;
    try {
      results = applyEvents(this.core, items, "nats", this.options.metrics);
    } catch (err) {
      // The ledger itself failed (disk full, I/O error): nothing was committed; retry later.
      this.options.logger.error({ err }, "ledger transaction failed; billing events will be redelivered");
      for (const m of batch) m.nak(RETRY_MS);
      return;
    }
    if (results.some((r) => r.outboxId !== undefined)) this.core.hooks.afterEventCommit?.();
    this.options.committed();
    results.forEach((r, i) => {
      const m = batch[i];
      if (!m) return;
      if (r.result === IngestResult.INGEST_RESULT_UNSPECIFIED) m.nak(RETRY_MS);
      else m.ack();
    });
  }

  /** Stops pulling; buffered but unapplied messages are handed back for prompt redelivery. */
  async stop(): Promise<void> {
    this.stopped = true;
    // An attempt in flight may be stuck on a lost request; it closes what it opens once it sees
    // `stopped`, so there is no need to wait for it.
    const pending = this.queue.splice(0);
    for (const m of pending) m.nak();
    await this.messages?.close();
    this.messages = undefined;
  }
}
