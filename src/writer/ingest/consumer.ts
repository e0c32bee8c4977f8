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
  private attaching: Promise<void> | undefined;

  constructor(
    private readonly core: WriterCore,
    private readonly link: NatsLink,
    private readonly options: ConsumerOptions,
  ) {}

  start(): void {
    this.link.onReady(() => this.attach());
    this.attach();
  }

  /** (Re)attaches the consumer; call when a catalog becomes available. */
  attach(): void {
    if (this.stopped || !this.link.ready || !this.core.catalog || this.attaching) return;
    this.attaching = this.doAttach().finally(() => {
      this.attaching = undefined;
    });
  }

  private async doAttach(): Promise<void> {
    const handles = this.link.ready;
    if (!handles) return;
    const log = this.options.logger;
    try {
      await this.messages?.close();
      this.messages = undefined;
      const name = this.options.name;
      try {
        await handles.jsm.consumers.info(BILLING_STREAM, name);
      } catch {
        await this.link.ensureStreams();
        await handles.jsm.consumers.add(BILLING_STREAM, {
          durable_name: name,
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          ack_wait: nanos(30_000),
          max_deliver: -1,
          max_ack_pending: 4 * BATCH,
        });
      }
      const consumer = await handles.js.consumers.get(BILLING_STREAM, name);
      if (this.stopped) return;
      const messages = await consumer.consume({ max_messages: BATCH, callback: (m) => this.enqueue(m) });
      this.messages = messages;
      log.info({ consumer: name }, "consuming billing events");
      void this.watch(messages);
    } catch (err) {
      log.warn({ err: errorMessage(err) }, "cannot attach the billing consumer yet; retrying on the next reconnect or in 2 s");
      setTimeout(() => this.attach(), 2_000).unref();
    }
  }

  private async watch(messages: ConsumerMessages): Promise<void> {
    for await (const s of await messages.status()) {
      if (s.type === ConsumerEvents.ConsumerNotFound || s.type === ConsumerEvents.StreamNotFound || s.type === ConsumerEvents.ConsumerDeleted) {
        if (this.messages !== messages) return;
        this.options.logger.warn({ event: s.type }, "billing consumer lost; recreating it");
        this.messages = undefined;
        await messages.close();
        this.attach();
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
        return { event: decodeEvent(m.data, contentType || undefined), origin: m.subject, payload: m.data, contentType };
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
    await this.attaching;
    const pending = this.queue.splice(0);
    for (const m of pending) m.nak();
    await this.messages?.close();
    this.messages = undefined;
  }
}
