import { headers, type PubAck } from "nats";
import { UnavailableError, errorMessage } from "../../errors/index.js";
import {
  CATALOG_SUBJECT,
  HEADER_INPUT_POSITION,
  HEADER_LEADER_EPOCH,
  HEADER_LEDGER_ID,
  HEADER_OUTBOX_ID,
  STATE_STREAM,
  customerSubject,
} from "../../replication/subjects.js";
import type { Logger } from "../../observability/logger.js";
import type { InputPosition, Ledger, OutboxRow } from "../ledger/ledger.js";
import type { FaultHooks } from "../core.js";
import type { WriterMetrics } from "../metrics.js";
import type { NatsLink } from "../nats-link.js";
import { backoffMs, isStreamNotFound, messageGets, pause } from "../../replication/connection.js";
import { Signal } from "../signal.js";
import { encodeCatalogRecord, encodeDocumentRecord } from "../../replication/state-record.js";

export interface PublisherOptions {
  readonly now: () => number;
  readonly logger: Logger;
  readonly metrics: WriterMetrics;
  readonly hooks: FaultHooks;
  /** Rows read and pipelined per round. */
  readonly batchSize?: number;
  /** PubAck timeout. */
  readonly ackTimeoutMs?: number;
  /** Published rows older than this are pruned. */
  readonly retentionMs: number;
  /** Leadership (docs/writer.md, "High availability"); without it this writer always leads. */
  readonly lease?: Leadership;
  /** The input stream sequence the ledger has folded through. */
  readonly folded?: () => number;
}

/** What the publisher needs of the lease. */
export interface Leadership {
  /** The epoch while the lease is held and valid by this process's clock. */
  leading(): number | undefined;
  stepDown(reason: string): void;
}

const ALWAYS: Leadership = { leading: () => 1, stepDown: () => undefined };

/** `Proofgate-Input-Position: <seq>.<ord>`. */
export function formatPosition(p: InputPosition): string {
  return `${p.seq}.${p.ord}`;
}

export function parsePosition(v: string | undefined): InputPosition | undefined {
  const m = /^(\d+)\.(\d+)$/.exec(v ?? "");
  if (!m) return undefined;
  const seq = Number(m[1]);
  const ord = Number(m[2]);
  return Number.isSafeInteger(seq) && Number.isSafeInteger(ord) ? { seq, ord } : undefined;
}

interface Waiter {
  readonly id: number;
  readonly resolve: (revision: number) => void;
}

const SNAPSHOT_PAGE = 1_000;
/** Room left for the headers (Nats-Msg-Id, ledger and outbox ids) within max_payload. */
const HEADER_ROOM = 512;
/**
 * Pruning deletes at most PRUNE_CHUNK rows at a time (a few milliseconds of the loop), once a
 * second, or every PRUNE_CATCH_UP_MS while chunks come back full, so it never stalls the loop.
 */
const PRUNE_EVERY_MS = 1_000;
const PRUNE_CATCH_UP_MS = 100;
const PRUNE_CHUNK = 1_000;

/**
 * Publishes outbox rows to PROOFGATE_STATE strictly in id order (docs/writer.md, "Outbox
 * protocol"). Every message carries Nats-Msg-Id `<ledgerId>:<outboxId>`, Proofgate-Ledger-Id and
 * Proofgate-Outbox-Id, and expects the stream's last sequence to be the one this publisher knows,
 * so nothing else can interleave unnoticed. Several rows are pipelined on the one connection;
 * pending rows for the same subject are coalesced (only the latest goes out). On start, after
 * every reconnect and after any publish error, it reconciles with the stream's last message.
 */
export class OutboxPublisher {
  /** The stream's last sequence as far as this publisher knows; undefined → reconcile first. */
  private knownLastSeq: number | undefined;
  /** Every outbox row with an id up to this one has reached the stream. */
  private throughId: number;
  private head: number;
  private waiters: Waiter[] = [];
  private readonly signal = new Signal();
  private readonly stop = new AbortController();
  private readonly stopped = (): boolean => this.stop.signal.aborted;
  private loop: Promise<void> | undefined;
  private nextPruneMs = 0;
  /** The epoch this publisher last reconciled as leader under; undefined while standing by. */
  private epoch: number | undefined;
  /** Standing by: the stream's last sequence and the fold position last lined up with (undefined: not yet on this connection). */
  private followed: { seq: number; folded: number } | undefined;
  private readonly lease: Leadership;

  constructor(
    private readonly ledger: Ledger,
    private readonly link: NatsLink,
    private readonly options: PublisherOptions,
  ) {
    this.throughId = this.computeThroughId();
    this.head = ledger.publishedHigh();
    this.lease = options.lease ?? ALWAYS;
  }

  /** Leading: reconciled with the stream under a valid lease. */
  get leading(): boolean {
    return this.epoch !== undefined && this.lease.leading() === this.epoch && this.knownLastSeq !== undefined && this.link.ready !== undefined;
  }

  /** The latest PROOFGATE_STATE sequence known to hold this writer's state (the head revision). */
  get headRevision(): number {
    return this.head;
  }

  /** Reconciled as the leader of `epoch` (reconcile may have stepped down or found the lease lapsed). */
  private reconciledAs(epoch: number): boolean {
    return this.epoch === epoch && this.knownLastSeq !== undefined;
  }

  /** True once lined up with the stream on the current connection (as leader, or following it as a standby). */
  get reconciled(): boolean {
    if (this.link.ready === undefined) return false;
    return this.epoch !== undefined ? this.knownLastSeq !== undefined : this.followed !== undefined;
  }

  start(): void {
    this.link.onReady(() => {
      this.knownLastSeq = undefined;
      this.followed = undefined;
      this.signal.kick();
    });
    this.loop = this.run();
  }

  /** New rows were committed. */
  kick(): void {
    this.signal.kick();
  }

  /**
   * Resolves with a revision at which outbox row `id` is visible on the stream (the head revision
   * when it got there, or later). Rejects with UNAVAILABLE after `timeoutMs`; the row stays
   * committed and is published when NATS is back.
   */
  waitFor(id: number, timeoutMs: number): Promise<number> {
    if (id <= this.throughId) return Promise.resolve(this.head);
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(
          new UnavailableError(
            `the change is committed to the ledger but did not reach the state stream within ${timeoutMs} ms (NATS unreachable?); it will replicate when NATS is back, and retrying is safe`,
          ),
        );
      }, timeoutMs);
      const waiter: Waiter = {
        id,
        resolve: (rev) => {
          clearTimeout(timer);
          resolve(rev);
        },
      };
      this.waiters.push(waiter);
      this.signal.kick();
    });
  }

  /** Waits for everything committed so far (for calls that changed nothing). */
  waitForCommitted(timeoutMs: number): Promise<number> {
    return this.waitFor(this.ledger.maxOutboxId(), timeoutMs);
  }

  /** Shutdown: gives pending rows up to `timeoutMs` to go out, then stops the loop. */
  async close(timeoutMs: number): Promise<void> {
    if (this.leading && this.ledger.firstPendingId() !== undefined) {
      await this.waitForCommitted(timeoutMs).catch(() => undefined);
    }
    this.stop.abort();
    this.signal.kick();
    await this.loop;
  }

  private computeThroughId(): number {
    const first = this.ledger.firstPendingId();
    return first === undefined ? this.ledger.maxOutboxId() : first - 1;
  }

  private advance(): void {
    this.throughId = this.computeThroughId();
    if (this.waiters.length === 0) return;
    const done = this.waiters.filter((w) => w.id <= this.throughId);
    if (done.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.id > this.throughId);
    for (const w of done) w.resolve(this.head);
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped()) {
      if (!this.link.ready) {
        await this.signal.wait();
        continue;
      }
      try {
        const epoch = this.lease.leading();
        if (epoch === undefined) {
          // Standing by: the leader publishes; this ledger's rows are marked as the stream shows them.
          if (this.epoch !== undefined) {
            this.epoch = undefined;
            this.knownLastSeq = undefined;
            this.options.logger.warn("not leading: publishing stopped, following the state stream");
          }
          await this.follow();
          this.advance();
          failures = 0;
          await this.signal.wait(this.waiters.length > 0 ? 25 : 250);
          continue;
        }
        if (epoch !== this.epoch) {
          this.epoch = epoch;
          this.knownLastSeq = undefined;
          this.followed = undefined;
        }
        if (this.knownLastSeq === undefined) {
          const behind = await this.reconcile(epoch);
          if (behind) {
            // The stream holds changes this ledger has not folded yet: wait for the fold, briefly.
            await pause(20, this.stop.signal);
            continue;
          }
        }
        if (!this.reconciledAs(epoch)) continue;
        this.maybePrune();
        const rows = this.setAsideUnpublishable(this.ledger.pendingOutbox(this.options.batchSize ?? 256));
        if (rows.length === 0) {
          this.advance();
          // Short: a lapsed lease must stop the heartbeats of a leader that has nothing to publish.
          await this.signal.wait(250);
          continue;
        }
        await this.publish(rows, epoch);
        failures = 0;
      } catch (err) {
        this.knownLastSeq = undefined;
        this.followed = undefined;
        if (this.stopped()) break;
        const level = failures === 0 ? "info" : "warn";
        this.options.logger[level]({ err: errorMessage(err) }, "state stream publish interrupted; reconciling and retrying");
        await pause(backoffMs(failures++), this.stop.signal);
      }
    }
  }

  /**
   * A standby's view of the stream: the last message names, by its input position (or, if this
   * ledger wrote it, its outbox id), how far this ledger's rows are on the stream. Calls that wait
   * for their change to be visible are answered from here on a standby.
   */
  private async follow(): Promise<void> {
    const handles = this.link.ready;
    if (!handles) return;
    let info;
    try {
      info = await handles.jsm.streams.info(STATE_STREAM);
    } catch (err) {
      if (isStreamNotFound(err)) return;
      throw err;
    }
    const lastSeq = info.state.last_seq;
    const folded = this.options.folded?.() ?? 0;
    const seen = this.followed;
    if (seen && seen.seq === lastSeq && seen.folded === folded) return;
    if (info.state.messages > 0) {
      // A standby asks every 250 ms, so it asks by direct get where it can: the stream API's get
      // can crash nats-server 2.9.10 when it races the stream's deletion (messageGets).
      const msg = await messageGets(handles.jsm, info.config.allow_direct).getMessage(STATE_STREAM, { seq: lastSeq }).catch(() => undefined);
      // A replica that has not stored it yet (direct gets need not reach the leader): asked again next time.
      if (!msg) return;
      const through = this.localThrough(msg.header.get(HEADER_LEDGER_ID), msg.header.get(HEADER_OUTBOX_ID), msg.header.get(HEADER_INPUT_POSITION));
      if (through > 0) {
        const now = this.options.now();
        this.ledger.transaction(() => this.ledger.markPublishedThrough(through, lastSeq, now));
      }
    }
    this.head = Math.max(this.head, lastSeq);
    this.followed = { seq: lastSeq, folded };
  }

  /** The last of this ledger's outbox rows a stream message says is on the stream (0: cannot tell). */
  private localThrough(ledgerId: string | undefined, outboxId: string | undefined, position: string | undefined): number {
    if (ledgerId === this.ledger.ledgerId) {
      const id = Number(outboxId ?? NaN);
      return Number.isSafeInteger(id) && id <= this.ledger.maxOutboxId() ? id : 0;
    }
    const pos = parsePosition(position);
    return pos ? this.ledger.outboxIdThrough(pos) : 0;
  }

  /**
   * A row larger than the server's max_payload can never be published; retrying it would hold
   * back every row behind it, for every customer. It is marked published at the stream's current
   * sequence (so nothing waits for it), counted and logged loudly; its subject keeps its previous
   * message. The document limit (--max-document-bytes) keeps this from happening when it is below
   * max_payload; this is the safety net when it is not.
   */
  private setAsideUnpublishable(rows: OutboxRow[]): OutboxRow[] {
    const max = this.link.ready?.nc.info?.max_payload;
    const seq = this.knownLastSeq;
    if (!max || seq === undefined) return rows;
    const limit = max - HEADER_ROOM;
    const tooLarge = rows.filter((r) => r.payload.length > limit);
    if (tooLarge.length === 0) return rows;
    const now = this.options.now();
    this.ledger.transaction(() => this.ledger.markPublished(tooLarge.map((r) => r.id), seq, now));
    for (const r of tooLarge) {
      this.options.logger.error(
        { outboxId: r.id, subject: r.subject, bytes: r.payload.length, maxPayload: max },
        "outbox row exceeds the NATS server's max_payload and can never be published; skipped so the rows behind it are not blocked (lower --max-document-bytes below max_payload)",
      );
    }
    this.options.metrics.unpublishable.inc(tooLarge.length);
    return rows.filter((r) => r.payload.length <= limit);
  }

  private async publish(rows: readonly OutboxRow[], epoch: number): Promise<void> {
    const handles = this.link.ready;
    const expected = this.knownLastSeq;
    if (!handles || expected === undefined) throw new Error("not connected");
    // Checked by this process's own clock right before every batch: a writer resumed after a
    // pause longer than its lease publishes nothing.
    if (this.lease.leading() !== epoch) return;
    const ledgerId = this.ledger.ledgerId;
    // Coalesce: only the latest pending row of each subject goes out; earlier ones ride on it.
    const latest = new Map<string, number>();
    rows.forEach((r, i) => latest.set(r.subject, i));
    const sends = rows.filter((r, i) => latest.get(r.subject) === i);
    const acks = await Promise.allSettled(
      sends.map((r, i) => {
        const h = headers();
        h.set(HEADER_LEDGER_ID, ledgerId);
        h.set(HEADER_OUTBOX_ID, String(r.id));
        h.set(HEADER_LEADER_EPOCH, String(epoch));
        if (r.position) h.set(HEADER_INPUT_POSITION, formatPosition(r.position));
        return handles.js.publish(r.subject, r.payload, {
          msgID: `${ledgerId}:${r.id}`,
          headers: h,
          expect: { lastSequence: expected + i },
          timeout: this.options.ackTimeoutMs ?? 5_000,
        });
      }),
    );
    const ok: PubAck[] = [];
    let failure: unknown;
    for (const a of acks) {
      if (a.status === "rejected") {
        failure = a.reason;
        break;
      }
      ok.push(a.value);
    }
    this.options.hooks.afterPublish?.();
    if (ok.length > 0) {
      // A row is on the stream once the send that carries its subject's latest state is.
      const sendOfSubject = new Map(sends.map((r, i) => [r.subject, i]));
      const bySeq = new Map<number, number[]>();
      for (const r of rows) {
        const ack = ok[sendOfSubject.get(r.subject) ?? ok.length];
        if (!ack) continue;
        const ids = bySeq.get(ack.seq) ?? [];
        ids.push(r.id);
        bySeq.set(ack.seq, ids);
      }
      const now = this.options.now();
      // Not synced: after a crash, reconcile finds the published rows from the stream's last message.
      this.ledger.transactionNoSync(() => {
        for (const [seq, ids] of bySeq) this.ledger.markPublished(ids, seq, now);
      });
      const last = ok[ok.length - 1];
      if (last) {
        this.head = Math.max(this.head, last.seq);
        this.knownLastSeq = last.seq;
      }
      this.options.metrics.published.inc(ok.length);
      // A duplicate did not grow the stream: the expectations of later sends are now off.
      if (ok.some((a) => a.duplicate)) this.knownLastSeq = undefined;
      this.advance();
    }
    if (failure !== undefined) throw failure instanceof Error ? failure : new Error(errorMessage(failure));
  }

  /**
   * Lines the ledger up with the stream as the leader of `epoch` (docs/writer.md). The stream's
   * last message names the last row that reached it: by outbox id when this ledger wrote it, by
   * input position when another writer did (a takeover). A message of a newer epoch means another
   * writer leads: this one steps down. After a takeover the new leader fences the stream before
   * anything else: it re-publishes the catalog (the same bytes) under its epoch, moving the
   * stream's last sequence so that any publish the old leader still has in flight fails its
   * expected-last-sequence check. If the stream is empty while this ledger published before, or
   * its last message is from a writer that gives no position, or it is behind what this ledger
   * recorded, the stream was recreated or replaced: a full snapshot is enqueued.
   */
  private async reconcile(epoch: number): Promise<boolean> {
    const handles = this.link.ready;
    if (!handles) throw new Error("not connected");
    let info;
    try {
      info = await handles.jsm.streams.info(STATE_STREAM);
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
      await this.link.ensureStreams();
      info = await handles.jsm.streams.info(STATE_STREAM);
    }
    let lastSeq = info.state.last_seq;
    const high = this.ledger.publishedHigh();
    const hasState = this.ledger.catalogBytes() !== undefined || this.ledger.hasDocuments();
    const log = this.options.logger;
    let snapshotReason: string | undefined;
    let rotate = false;
    let fence: { through: number; position: InputPosition } | undefined;
    if (info.state.messages === 0) {
      if (high > 0 && hasState) snapshotReason = "the state stream is empty but this ledger had published to it";
    } else {
      const msg = await handles.jsm.streams.getMessage(STATE_STREAM, { seq: lastSeq }).catch(() => undefined);
      const theirEpoch = Number(msg?.header.get(HEADER_LEADER_EPOCH) ?? 0);
      if (theirEpoch > epoch) {
        this.lease.stepDown(`a newer leader (epoch ${theirEpoch}) published to the state stream`);
        this.epoch = undefined;
        return false;
      }
      const ledgerId = msg?.header.get(HEADER_LEDGER_ID);
      const outboxId = Number(msg?.header.get(HEADER_OUTBOX_ID) ?? NaN);
      const position = parsePosition(msg?.header.get(HEADER_INPUT_POSITION));
      if (ledgerId !== this.ledger.ledgerId && position) {
        const folded = this.options.folded?.() ?? 0;
        if (folded < position.seq) return true;
        const through = this.ledger.outboxIdThrough(position);
        const now = this.options.now();
        this.ledger.transaction(() => this.ledger.markPublishedThrough(through, lastSeq, now));
        fence = { through, position };
      } else if (ledgerId !== this.ledger.ledgerId) {
        if (hasState) snapshotReason = "the state stream's last message was not written by this ledger";
      } else if (!Number.isSafeInteger(outboxId) || outboxId > this.ledger.maxOutboxId()) {
        snapshotReason = "the state stream is ahead of this ledger (restored from an older copy?)";
        rotate = true;
      } else if (lastSeq < high) {
        snapshotReason = "the state stream is behind what this ledger recorded (recreated?)";
      } else {
        const now = this.options.now();
        this.ledger.transaction(() => this.ledger.markPublishedThrough(outboxId, lastSeq, now));
      }
    }
    const catalog = this.ledger.catalog();
    if (fence && catalog) {
      const h = headers();
      h.set(HEADER_LEDGER_ID, this.ledger.ledgerId);
      h.set(HEADER_OUTBOX_ID, String(fence.through));
      h.set(HEADER_LEADER_EPOCH, String(epoch));
      h.set(HEADER_INPUT_POSITION, formatPosition(fence.position));
      if (this.lease.leading() !== epoch) {
        this.epoch = undefined;
        return false;
      }
      const ack = await handles.js.publish(CATALOG_SUBJECT, encodeCatalogRecord(catalog), {
        headers: h,
        expect: { lastSequence: lastSeq },
        timeout: this.options.ackTimeoutMs ?? 5_000,
      });
      lastSeq = ack.seq;
      log.info({ epoch, fence: ack.seq }, "took over the state stream: fenced it under this epoch");
    }
    if (snapshotReason) {
      const first = this.ledger.firstPendingId();
      if (first !== undefined && first <= this.ledger.snapshotThrough()) {
        log.info({ lastSeq }, "a snapshot is still on its way to the state stream");
      } else {
        log.warn({ lastSeq, publishedHigh: high }, `${snapshotReason}: republishing a full snapshot`);
        if (rotate) log.warn({ ledgerId: this.ledger.rotateLedgerId() }, "new ledger id, so the next outbox ids cannot collide with the ones on the stream");
        this.enqueueSnapshot(lastSeq);
        this.options.metrics.snapshots.inc();
      }
    }
    this.knownLastSeq = lastSeq;
    this.head = lastSeq;
    log.info({ lastSeq, firstPending: this.ledger.firstPendingId(), epoch }, "reconciled with the state stream");
    this.advance();
    return false;
  }

  /** The catalog and every current document, appended to the outbox (tombstones are not needed). */
  private enqueueSnapshot(lastSeq: number): void {
    const ledger = this.ledger;
    const now = this.options.now();
    ledger.transaction(() => {
      // From now on the stream's own sequence is the reference for "behind".
      ledger.resetPublishedHigh(lastSeq);
      const catalog = ledger.catalog();
      if (catalog) ledger.enqueue(CATALOG_SUBJECT, encodeCatalogRecord(catalog), now);
      let after = "";
      for (;;) {
        const page = ledger.documentsPage(after, SNAPSHOT_PAGE);
        // The subject from the id, not the stored token: after a token key rotation (docs/security.md) the stream is rebuilt under the new key.
        for (const d of page) ledger.enqueue(customerSubject(d.customerId), encodeDocumentRecord(d.document), now);
        const last = page[page.length - 1];
        if (!last || page.length < SNAPSHOT_PAGE) break;
        after = last.customerId;
      }
      // Kept in the ledger: a writer restarted mid-snapshot still says it is in progress.
      ledger.setSnapshotThrough(ledger.maxOutboxId());
    });
  }

  /** A full snapshot is still on its way to the stream (heartbeats say so: replicas are not complete yet). */
  get snapshotInProgress(): boolean {
    const first = this.ledger.firstPendingId();
    return first !== undefined && first <= this.ledger.snapshotThrough();
  }

  private maybePrune(): void {
    const now = this.options.now();
    if (now < this.nextPruneMs) return;
    // Not synced: rows a crash brings back are pruned again.
    const n = this.ledger.transactionNoSync(() => this.ledger.pruneOutbox(now - this.options.retentionMs, PRUNE_CHUNK));
    this.nextPruneMs = now + (n === PRUNE_CHUNK ? PRUNE_CATCH_UP_MS : PRUNE_EVERY_MS);
    if (n > 0) this.options.logger.debug({ rows: n }, "pruned published outbox rows");
  }
}
