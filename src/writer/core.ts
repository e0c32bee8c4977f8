import { CatalogIndex } from "../catalog/index.js";
import { InvalidArgumentError } from "../errors/index.js";
import { AuditKind } from "../gen/proofgate/v1/admin.js";
import type { Catalog } from "../gen/proofgate/v1/catalog.js";
import { AccessStatus } from "../gen/proofgate/v1/check.js";
import type { BillingEvent } from "../gen/proofgate/v1/billing.js";
import { AccessDocument, type SubscriptionAccess } from "../gen/proofgate/v1/document.js";
import { encodeCatalogRecord, encodeDocumentRecord } from "../replication/state-record.js";
import { CATALOG_SUBJECT, customerToken, subjectOfToken } from "../replication/subjects.js";
import { evaluateAll, MAX_INVOICES_PER_SUBSCRIPTION } from "../policy/index.js";
import { assembleDocument, foldPart, intentOf, invoiceOf, partOf } from "../policy/fold.js";
import type { Logger } from "../observability/logger.js";
import type { AuditInput, FoldedCustomer, Ledger } from "./ledger/ledger.js";

/** Who or what caused a document change, copied into its ACCESS_CHANGED audit entries. */
export interface ChangeCause {
  readonly subscriptionId?: string;
  readonly eventId?: string;
  readonly correlationId?: string;
  readonly actor?: string;
  /** The caller's own claim of who it acts for, when it differs from the principal in `actor`. */
  readonly onBehalfOf?: string;
}

/**
 * Test-only fault injection, handed in by code (test/harness/faulty-writer.mjs), never by the
 * production entry point.
 */
export interface FaultHooks {
  /** Runs right after a ledger commit that enqueued state changes, before anything is published. */
  readonly afterEventCommit?: () => void;
  /** Runs after PubAcks arrive, before they are recorded in the ledger. */
  readonly afterPublish?: () => void;
}

/** Bounds the writer enforces before a commit (docs/writer.md, "Limits"). */
export interface WriterLimits {
  /**
   * The largest access document the writer commits. It must fit NATS's max_payload (1 MiB by
   * default) with room for headers, or the document could never be replicated.
   */
  readonly maxDocumentBytes: number;
  /** How far ahead of the writer's clock an event's occurred_at may be. */
  readonly maxEventSkewMs: number;
}

export const DEFAULT_LIMITS: WriterLimits = { maxDocumentBytes: 512 * 1024, maxEventSkewMs: 5 * 60_000 };

const encode = (doc: AccessDocument): Uint8Array => AccessDocument.encode(doc).finish();

function bytesEqual(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && Buffer.compare(a, b) === 0;
}

/**
 * The writer's decision state over its ledger: the current catalog (indexed) and the one
 * operation every change goes through, `refreshDocument`. Synchronous; callers run it inside
 * a ledger transaction together with the rest of their change.
 */
export class WriterCore {
  private catalogIndex: CatalogIndex | undefined;

  constructor(
    readonly ledger: Ledger,
    readonly now: () => number,
    readonly logger: Logger,
    readonly hooks: FaultHooks = {},
    readonly limits: WriterLimits = DEFAULT_LIMITS,
  ) {
    const c = ledger.catalog();
    this.catalogIndex = c ? CatalogIndex.from(c) : undefined;
  }

  private readonly committedListeners: (() => void)[] = [];

  /** `fn` runs after every commit (the publishers wake up). */
  onCommit(fn: () => void): void {
    this.committedListeners.push(fn);
  }

  /**
   * The one way a change reaches the ledger: runs `fn` in a transaction; if it throws, nothing is
   * kept and the catalog is reloaded. After the commit the fault hook runs (when the commit
   * enqueued state) and the publishers are woken.
   */
  commit<T>(fn: () => T): T {
    const before = this.ledger.maxOutboxId();
    let result: T;
    try {
      result = this.ledger.transaction(fn);
    } catch (err) {
      this.reloadCatalog();
      throw err;
    }
    if (this.ledger.maxOutboxId() > before) this.hooks.afterEventCommit?.();
    for (const fn of this.committedListeners) fn();
    return result;
  }

  /** The current catalog, or undefined before the first ApplyCatalog. */
  get catalog(): CatalogIndex | undefined {
    return this.catalogIndex;
  }

  /** Stores the catalog and enqueues it; returns the outbox id, or undefined if it did not change. */
  putCatalog(catalog: Catalog): number | undefined {
    const now = this.now();
    const bytes = encodeCatalogRecord(catalog);
    const before = this.ledger.catalog();
    if (before && bytesEqual(encodeCatalogRecord(before), bytes)) return undefined;
    this.ledger.putCatalog(catalog, now);
    const id = this.ledger.enqueue(CATALOG_SUBJECT, bytes, now);
    this.catalogIndex = CatalogIndex.from(catalog);
    return id;
  }

  /** Call when a transaction that ran putCatalog rolled back. */
  reloadCatalog(): void {
    const c = this.ledger.catalog();
    this.catalogIndex = c ? CatalogIndex.from(c) : undefined;
  }

  /**
   * Stores a new fact and folds it into its customer's stored parts: one event reads and writes
   * one part, whatever the customer's history. False (nothing written) for a seen event id.
   */
  addFact(e: BillingEvent, origin: string, atMs: number): boolean {
    const ledger = this.ledger;
    if (!ledger.insertFact(e, origin, atMs)) return false;
    const folded = ledger.foldedCustomer(e.customerId);
    if (!folded) {
      this.refold(e.customerId);
      return true;
    }
    this.foldParts(e.customerId, [e]);
    ledger.putFoldedCustomer(e.customerId, { factCount: folded.factCount + 1, lastEventAtMs: Math.max(folded.lastEventAtMs, e.occurredAt?.getTime() ?? 0) });
    return true;
  }

  /** Folds facts of one customer into the stored parts they belong to. */
  private foldParts(customerId: string, facts: readonly BillingEvent[]): void {
    const ledger = this.ledger;
    const parts = new Map<string, BillingEvent[]>();
    for (const e of facts) {
      const { subscriptionId, invoiceId } = partOf(e);
      const key = JSON.stringify([subscriptionId, invoiceId ?? null]);
      const group = parts.get(key);
      if (group) group.push(e);
      else parts.set(key, [e]);
    }
    for (const group of parts.values()) {
      const { subscriptionId, invoiceId } = partOf(group[0] as BillingEvent);
      const intent = ledger.foldedIntent(customerId, subscriptionId);
      if (invoiceId === undefined) {
        ledger.putFoldedIntent(customerId, subscriptionId, foldPart(intent ?? [], group));
        continue;
      }
      // Any event names its subscription, which then appears in the document.
      if (intent === undefined) ledger.putFoldedIntent(customerId, subscriptionId, []);
      const deciding = foldPart(ledger.foldedInvoice(customerId, subscriptionId, invoiceId) ?? [], group);
      ledger.putFoldedInvoice(customerId, subscriptionId, deciding, invoiceOf(invoiceId, deciding));
    }
  }

  /** Folds the customer's parts again from all its facts (a ledger from before folded parts were stored). */
  private refold(customerId: string): FoldedCustomer {
    const ledger = this.ledger;
    const facts = ledger.facts(customerId);
    ledger.deleteFold(customerId);
    this.foldParts(customerId, facts);
    const folded = { factCount: facts.length, lastEventAtMs: facts.reduce((m, e) => Math.max(m, e.occurredAt?.getTime() ?? 0), 0) };
    ledger.putFoldedCustomer(customerId, folded);
    return folded;
  }

  /** The customer's document as its stored parts and overrides make it (`foldDocument` of all its facts, byte for byte). */
  foldedDocument(customerId: string): AccessDocument {
    const ledger = this.ledger;
    const folded = ledger.foldedCustomer(customerId) ?? (ledger.factCount(customerId) > 0 ? this.refold(customerId) : { factCount: 0, lastEventAtMs: 0 });
    const subscriptions: SubscriptionAccess[] = ledger.foldedSubscriptions(customerId).map(({ subscriptionId, intent }) => ({
      subscriptionId,
      intent: intentOf(intent),
      invoices: ledger.latestInvoices(customerId, subscriptionId, MAX_INVOICES_PER_SUBSCRIPTION),
    }));
    return assembleDocument(customerId, subscriptions, ledger.overrides(customerId), folded.factCount, folded.lastEventAtMs);
  }

  currentDocument(customerId: string): AccessDocument | undefined {
    const bytes = this.ledger.document(customerId);
    return bytes ? AccessDocument.decode(bytes) : undefined;
  }

  /**
   * Assembles the customer's document from its folded parts and overrides. If its bytes differ from the stored
   * one: stores it, enqueues it for the state stream, and audits one ACCESS_CHANGED entry per
   * catalog feature whose status changed at the writer's current time. Returns the outbox id, or
   * undefined when nothing changed.
   */
  refreshDocument(customerId: string, cause: ChangeCause): number | undefined {
    const now = this.now();
    const ledger = this.ledger;
    const doc = this.foldedDocument(customerId);
    const bytes = encode(doc);
    const beforeBytes = ledger.document(customerId);
    if (bytesEqual(beforeBytes, bytes)) return undefined;
    // Checked before commit: a document too large to publish would never reach any sidecar.
    // The caller's transaction rolls back, so the change that grew it is refused, not applied.
    if (bytes.length > this.limits.maxDocumentBytes)
      throw new InvalidArgumentError(
        "customer_id",
        `this change would make the customer's access document ${bytes.length} bytes, above the limit of ${this.limits.maxDocumentBytes} (--max-document-bytes)`,
      );
    const token = customerToken(customerId);
    ledger.putDocument(customerId, token, bytes, now);
    const id = ledger.enqueue(subjectOfToken(token), encodeDocumentRecord(bytes), now);
    const catalog = this.catalogIndex;
    if (catalog) {
      const before = evaluateAll(beforeBytes ? AccessDocument.decode(beforeBytes) : undefined, catalog, now);
      const after = evaluateAll(doc, catalog, now);
      const changed: AuditInput[] = [];
      after.forEach(({ feature, decision }, i) => {
        const old = before[i]?.decision;
        if (old?.status === decision.status) return;
        changed.push({
          kind: AuditKind.AUDIT_KIND_ACCESS_CHANGED,
          customerId,
          customerToken: token,
          subscriptionId: cause.subscriptionId ?? "",
          feature,
          fromStatus: old?.status ?? AccessStatus.ACCESS_STATUS_UNSPECIFIED,
          toStatus: decision.status,
          eventId: cause.eventId ?? "",
          correlationId: cause.correlationId ?? "",
          actor: cause.actor ?? "",
          onBehalfOf: cause.onBehalfOf ?? "",
          reason: decision.reason,
        });
      });
      ledger.appendAudits(changed, now);
    }
    return id;
  }
}
