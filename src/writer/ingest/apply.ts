import { validateEvent, describeEvent, MAX_ID_BYTES } from "../../billing/index.js";
import { InvalidArgumentError, bounded, errorMessage } from "../../errors/index.js";
import { AuditKind } from "../../gen/proofgate/v1/admin.js";
import type { BillingEvent } from "../../gen/proofgate/v1/billing.js";
import { IngestResult } from "../../gen/proofgate/v1/ingest.js";
import { customerToken } from "../../replication/subjects.js";
import type { WriterCore } from "../core.js";
import type { EventOrigin, WriterMetrics } from "../metrics.js";
import { deadLetterBytes } from "../outbox/deadletters.js";

/** One event as received: decoded, or the reason it could not be. */
export interface Incoming {
  /** The decoded event, or undefined when `decodeError` says why not. */
  readonly event: BillingEvent | undefined;
  readonly decodeError?: string;
  /** Where it came from: the NATS subject, or "grpc". */
  readonly origin: string;
  /** The bytes as received (for the dead letter). */
  readonly payload: Uint8Array;
  readonly contentType: string;
  /** The authenticated principal that sent it over gRPC; the audit's actor (the event's source becomes "on behalf of"). */
  readonly principal?: string;
  /** How many times this message has been delivered (NATS redeliveries); 1 when unknown. */
  readonly attempt?: number;
  /**
   * When the event entered the input stream (its JetStream timestamp): the "now" of validation and
   * dead letters, the same on every writer that folds it.
   */
  readonly atMs?: number;
}

/** An event that keeps failing for a reason of ours is dead-lettered after this many deliveries, so it cannot loop forever. */
export const MAX_APPLY_ATTEMPTS = 5;

export interface Applied {
  readonly eventId: string;
  /** ACCEPTED, DUPLICATE or REJECTED; UNSPECIFIED when the writer failed (a bug, logged): retry later. */
  readonly result: IngestResult;
  readonly reason: string;
  /** The outbox row its effect rides on, when the document changed. */
  readonly outboxId: number | undefined;
}

const LABEL: Record<number, "accepted" | "duplicate" | "rejected" | undefined> = {
  [IngestResult.INGEST_RESULT_ACCEPTED]: "accepted",
  [IngestResult.INGEST_RESULT_DUPLICATE]: "duplicate",
  [IngestResult.INGEST_RESULT_REJECTED]: "rejected",
};

/**
 * Applies events in order in ONE ledger transaction (one fsync for the batch), each in its own
 * savepoint so a rejected or failing event leaves no trace but its rejection. Per event:
 * duplicate event_id → DUPLICATE; invalid (or an unknown plan/add-on for the current catalog) →
 * REJECTED, a dead letter and an EVENT_REJECTED audit entry; otherwise the fact is stored, the
 * customer's document re-folded, and EVENT_APPLIED (plus ACCESS_CHANGED) audited.
 * Requires a catalog (callers check first).
 */
export function applyEvents(core: WriterCore, items: readonly Incoming[], source: EventOrigin, metrics: WriterMetrics): Applied[] {
  const ledger = core.ledger;
  const results = ledger.transaction(() =>
    items.map((item) => {
      const start = performance.now();
      const r = applySafely(core, item);
      metrics.applySeconds.observe((performance.now() - start) / 1000);
      return r;
    }),
  );
  for (const r of results) {
    const label = LABEL[r.result];
    if (label) metrics.events.inc({ source, result: label });
  }
  return results;
}

/**
 * One event in its own savepoint: whatever goes wrong with it (a bug, an input no check
 * foresaw) is confined to it, so it can never fail the batch around it. Only a failing ledger
 * (the savepoint itself cannot be written) escapes.
 */
function applySafely(core: WriterCore, item: Incoming): Applied {
  try {
    return core.ledger.transaction(() => applyOne(core, item));
  } catch (err) {
    if (isLedgerFailure(err)) throw err;
    const eventId = typeof item.event?.eventId === "string" ? bounded(item.event.eventId, 256) : "";
    core.logger.error({ err: bounded(errorMessage(err)), eventId, origin: item.origin }, "failed to handle an event");
    const attempt = item.attempt ?? 1;
    const reason = `internal error: ${bounded(errorMessage(err), 256)}`;
    if (attempt < MAX_APPLY_ATTEMPTS) return { eventId, result: IngestResult.INGEST_RESULT_UNSPECIFIED, reason, outboxId: undefined };
    // Dead-lettered with nothing from the event but its bytes, which cannot fail again.
    return core.ledger.transaction(() => reject(core, item, undefined, `could not be applied after ${attempt} attempts: ${reason}`));
  }
}

/** SQLite errors mean the ledger (disk, file) failed, not the event: the whole batch is retried. */
function isLedgerFailure(err: unknown): boolean {
  return err instanceof Error && (err.name === "SqliteError" || /^SQLITE_/.test((err as { code?: string }).code ?? ""));
}

/** The principal that sent the event (gRPC), else its billing source (NATS, whose credentials admitted it). */
function actorOf(item: Incoming, e: BillingEvent | undefined): { actor: string; onBehalfOf: string } {
  const source = e?.source ?? "";
  if (item.principal === undefined) return { actor: bounded(source, 256), onBehalfOf: "" };
  return { actor: item.principal, onBehalfOf: source === item.principal ? "" : bounded(source, 256) };
}

function applyOne(core: WriterCore, item: Incoming): Applied {
  const ledger = core.ledger;
  const e = item.event;
  const eventId = e?.eventId ?? "";
  if (!e) return reject(core, item, undefined, item.decodeError ?? "payload: cannot be decoded");
  if (eventId && ledger.isProcessed(eventId)) return { eventId, result: IngestResult.INGEST_RESULT_DUPLICATE, reason: "", outboxId: undefined };
  try {
    validateEvent(e, core.catalog, { now: item.atMs ?? core.now(), maxSkewMs: core.limits.maxEventSkewMs });
  } catch (err) {
    if (err instanceof InvalidArgumentError) return reject(core, item, e, err.message);
    throw err;
  }
  try {
    return ledger.transaction(() => {
      const now = core.now();
      if (!core.addFact(e, item.origin, now)) return { eventId, result: IngestResult.INGEST_RESULT_DUPLICATE, reason: "", outboxId: undefined };
      ledger.appendAudit(
        {
          kind: AuditKind.AUDIT_KIND_EVENT_APPLIED,
          customerId: e.customerId,
          customerToken: customerToken(e.customerId),
          subscriptionId: e.subscriptionId,
          eventId,
          correlationId: e.correlationId,
          ...actorOf(item, e),
          detail: describeEvent(e),
        },
        now,
      );
      const outboxId = core.refreshDocument(e.customerId, { subscriptionId: e.subscriptionId, eventId, correlationId: e.correlationId, ...actorOf(item, e) });
      return { eventId, result: IngestResult.INGEST_RESULT_ACCEPTED, reason: "", outboxId };
    });
  } catch (err) {
    // Too large a document: the savepoint rolled back; the event is refused with the reason.
    if (err instanceof InvalidArgumentError) return reject(core, item, e, err.message);
    if (isLedgerFailure(err)) throw err;
    // A bug (the fold threw): the savepoint rolled back; the event is not rejected, since
    // nothing is wrong with it. The caller retries it later.
    core.logger.error({ err, eventId, customer: customerToken(e.customerId) }, "failed to apply an event");
    const attempt = item.attempt ?? 1;
    if (attempt >= MAX_APPLY_ATTEMPTS) return reject(core, item, e, `could not be applied after ${attempt} attempts: internal error: ${errorMessage(err)}`);
    return { eventId, result: IngestResult.INGEST_RESULT_UNSPECIFIED, reason: `internal error: ${errorMessage(err)}`, outboxId: undefined };
  }
}

function reject(core: WriterCore, item: Incoming, e: BillingEvent | undefined, reason: string): Applied {
  const now = core.now();
  const ledger = core.ledger;
  const eventId = e?.eventId ?? "";
  ledger.enqueueDeadLetter(
    deadLetterBytes({ reason, eventId, origin: item.origin, payload: item.payload, contentType: item.contentType, receivedAt: new Date(item.atMs ?? now) }),
    now,
  );
  const customerId = e?.customerId ?? "";
  if (customerId && Buffer.byteLength(customerId, "utf8") <= MAX_ID_BYTES) {
    ledger.appendAudit(
      {
        kind: AuditKind.AUDIT_KIND_EVENT_REJECTED,
        customerId,
        customerToken: customerToken(customerId),
        subscriptionId: bounded(e?.subscriptionId ?? "", 256),
        eventId: bounded(eventId, 256),
        correlationId: bounded(e?.correlationId ?? "", 256),
        ...actorOf(item, e),
        reason,
        detail: e ? describeEvent(e) : "",
      },
      now,
    );
  }
  core.logger.info({ eventId: bounded(eventId, 256), origin: item.origin, reason: bounded(reason) }, "event rejected and dead-lettered");
  return { eventId: bounded(eventId, 256), result: IngestResult.INGEST_RESULT_REJECTED, reason: bounded(reason), outboxId: undefined };
}
