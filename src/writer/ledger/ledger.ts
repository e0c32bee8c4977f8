import { randomBytes, randomUUID } from "node:crypto";
import { chmodSync, closeSync, openSync } from "node:fs";
import Database from "better-sqlite3";
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { BillingEvent } from "../../gen/proofgate/v1/billing.js";
import { Catalog } from "../../gen/proofgate/v1/catalog.js";
import { InvoiceState, Override } from "../../gen/proofgate/v1/document.js";
import type { AuditEntry, AuditKind } from "../../gen/proofgate/v1/admin.js";
import type { AccessStatus } from "../../gen/proofgate/v1/check.js";
import { migrate } from "./schema.js";
import { GENESIS_HASH, entryHash, personalDigest, verifyAuditChain, type AuditChainRow, type AuditVerification } from "./audit-chain.js";

export interface OutboxRow {
  readonly id: number;
  readonly subject: string;
  readonly payload: Uint8Array;
  readonly createdAtMs: number;
  /** Where in the input fold the row was made (absent for snapshot rows). */
  readonly position: InputPosition | undefined;
}

/**
 * An outbox row's place in the input fold: the input stream sequence of the message that made it
 * and its index among that message's rows. Every writer folds the same inputs into the same rows,
 * so a position names the same row in every writer's ledger.
 */
export interface InputPosition {
  readonly seq: number;
  readonly ord: number;
}

/** An input message parked until a catalog exists. */
export interface ParkedInput {
  readonly seq: number;
  readonly subject: string;
  readonly payload: Uint8Array;
  readonly contentType: string;
  readonly atMs: number;
}

export interface AuditInput {
  readonly kind: AuditKind;
  readonly customerId?: string;
  readonly customerToken?: string;
  readonly subscriptionId?: string;
  readonly feature?: string;
  readonly fromStatus?: AccessStatus;
  readonly toStatus?: AccessStatus;
  readonly eventId?: string;
  readonly correlationId?: string;
  /** The authenticated principal (or the billing source of a NATS event). */
  readonly actor?: string;
  /** What the caller claimed in its own actor field, when it differs from `actor`. */
  readonly onBehalfOf?: string;
  readonly reason?: string;
  readonly detail?: string;
}

export interface StoredDocument {
  readonly customerId: string;
  readonly token: string;
  readonly document: Uint8Array;
}

/** A customer's folded state, as stored (see "Incremental folding" in policy/fold.ts). */
export interface FoldedCustomer {
  readonly factCount: number;
  readonly lastEventAtMs: number;
}

/** Deciding facts as stored: field 1, repeated BillingEvent (the layout of a `repeated` field). */
function encodeFacts(facts: readonly BillingEvent[]): Uint8Array {
  const w = new BinaryWriter();
  for (const f of facts) BillingEvent.encode(f, w.uint32(10).fork()).join();
  return w.finish();
}

function decodeFacts(bytes: Uint8Array): BillingEvent[] {
  const r = new BinaryReader(bytes);
  const out: BillingEvent[] = [];
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag !== 10) throw new Error(`folded facts: unexpected tag ${tag}`);
    out.push(BillingEvent.decode(r, r.uint32()));
  }
  return out;
}

interface AuditRow {
  seq: number;
  at_ms: number;
  kind: AuditKind;
  customer_id: string;
  subscription_id: string;
  feature: string;
  from_status: AccessStatus;
  to_status: AccessStatus;
  event_id: string;
  correlation_id: string;
  actor: string;
  on_behalf_of: string;
  reason: string;
  detail: string;
}

function auditEntry(r: AuditRow): AuditEntry {
  return {
    seq: r.seq,
    at: new Date(r.at_ms),
    kind: r.kind,
    customerId: r.customer_id,
    subscriptionId: r.subscription_id,
    feature: r.feature,
    fromStatus: r.from_status,
    toStatus: r.to_status,
    eventId: r.event_id,
    correlationId: r.correlation_id,
    actor: r.actor,
    reason: r.reason,
    detail: r.detail,
    onBehalfOf: r.on_behalf_of,
  };
}

/**
 * The writer's SQLite ledger: facts, documents, overrides, catalog, audit log, outbox and dead
 * letters. WAL with synchronous=FULL, so a returned commit survives a crash or power loss. The
 * file is locked exclusively: one writer per ledger. All methods are synchronous; callers group
 * them with `transaction` (nested calls become savepoints).
 */
export class Ledger {
  private id: string;
  private readonly s;
  /** The input message being folded (its rows get positions), or undefined. */
  private folding: { seq: number; ord: number } | undefined;
  /**
   * One wrapper for every transaction: better-sqlite3 builds four wrapper functions per
   * `db.transaction(fn)` call, which cost more than the savepoint itself (several per event).
   */
  private readonly tx: <T>(fn: () => T) => T;

  private constructor(private readonly db: Database.Database) {
    this.tx = db.transaction(<T>(fn: () => T): T => fn()) as <T>(fn: () => T) => T;
    this.s = {
      getMeta: db.prepare<[string], { value: string }>("SELECT value FROM meta WHERE key = ?"),
      setMeta: db.prepare<[string, string]>("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
      isProcessed: db.prepare<[string], { one: number }>("SELECT 1 AS one FROM processed_events WHERE event_id = ?"),
      markProcessed: db.prepare<[string, number]>("INSERT OR IGNORE INTO processed_events (event_id, received_at_ms) VALUES (?, ?)"),
      insertFact: db.prepare<[string, string, string, number, Uint8Array]>(
        "INSERT INTO facts (event_id, customer_id, origin, received_at_ms, event) VALUES (?, ?, ?, ?, ?)",
      ),
      facts: db.prepare<[string], { event: Buffer }>("SELECT event FROM facts WHERE customer_id = ? ORDER BY seq"),
      factCount: db.prepare<[string], { n: number }>("SELECT count(*) AS n FROM facts WHERE customer_id = ?"),
      deleteFacts: db.prepare<[string]>("DELETE FROM facts WHERE customer_id = ?"),
      foldCustomer: db.prepare<[string], { fact_count: number; last_event_at_ms: number }>(
        "SELECT fact_count, last_event_at_ms FROM fold_customers WHERE customer_id = ?",
      ),
      putFoldCustomer: db.prepare<[string, number, number]>(
        `INSERT INTO fold_customers (customer_id, fact_count, last_event_at_ms) VALUES (?, ?, ?)
         ON CONFLICT (customer_id) DO UPDATE SET fact_count = excluded.fact_count, last_event_at_ms = excluded.last_event_at_ms`,
      ),
      foldSubscriptions: db.prepare<[string], { subscription_id: string; intent: Buffer }>(
        "SELECT subscription_id, intent FROM fold_subscriptions WHERE customer_id = ? ORDER BY subscription_id",
      ),
      foldIntent: db.prepare<[string, string], { intent: Buffer }>("SELECT intent FROM fold_subscriptions WHERE customer_id = ? AND subscription_id = ?"),
      putFoldSubscription: db.prepare<[string, string, Uint8Array]>(
        `INSERT INTO fold_subscriptions (customer_id, subscription_id, intent) VALUES (?, ?, ?)
         ON CONFLICT (customer_id, subscription_id) DO UPDATE SET intent = excluded.intent`,
      ),
      foldInvoice: db.prepare<[string, string, string], { facts: Buffer }>(
        "SELECT facts FROM fold_invoices WHERE customer_id = ? AND subscription_id = ? AND invoice_id = ?",
      ),
      putFoldInvoice: db.prepare<[string, string, string, number, Uint8Array, Uint8Array]>(
        `INSERT INTO fold_invoices (customer_id, subscription_id, invoice_id, period_end_ms, facts, state) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (customer_id, subscription_id, invoice_id) DO UPDATE SET period_end_ms = excluded.period_end_ms, facts = excluded.facts, state = excluded.state`,
      ),
      // The latest `limit` invoices by period end, and every invoice tied with the last of them
      // (the document breaks ties by invoice id in code-unit order, which is not SQLite's).
      latestInvoices: db.prepare<[string, string, string, string, number], { state: Buffer }>(
        `SELECT state FROM fold_invoices WHERE customer_id = ? AND subscription_id = ? AND period_end_ms >= coalesce(
           (SELECT period_end_ms FROM fold_invoices WHERE customer_id = ? AND subscription_id = ? ORDER BY period_end_ms DESC LIMIT 1 OFFSET ?),
           -9223372036854775808)`,
      ),
      deleteFoldCustomer: db.prepare<[string]>("DELETE FROM fold_customers WHERE customer_id = ?"),
      deleteFoldSubscriptions: db.prepare<[string]>("DELETE FROM fold_subscriptions WHERE customer_id = ?"),
      deleteFoldInvoices: db.prepare<[string]>("DELETE FROM fold_invoices WHERE customer_id = ?"),
      document: db.prepare<[string], { document: Buffer }>("SELECT document FROM documents WHERE customer_id = ?"),
      putDocument: db.prepare<[string, string, Uint8Array, number]>(
        `INSERT INTO documents (customer_id, token, document, updated_at_ms) VALUES (?, ?, ?, ?)
         ON CONFLICT (customer_id) DO UPDATE SET document = excluded.document, updated_at_ms = excluded.updated_at_ms`,
      ),
      deleteDocument: db.prepare<[string]>("DELETE FROM documents WHERE customer_id = ?"),
      documentsPage: db.prepare<[string, number], { customer_id: string; token: string; document: Buffer }>(
        "SELECT customer_id, token, document FROM documents WHERE customer_id > ? ORDER BY customer_id LIMIT ?",
      ),
      hasDocuments: db.prepare<[], { one: number }>("SELECT 1 AS one FROM documents LIMIT 1"),
      overrides: db.prepare<[string], { override: Buffer }>("SELECT override FROM overrides WHERE customer_id = ? ORDER BY override_id"),
      putOverride: db.prepare<[string, string, Uint8Array]>(
        "INSERT INTO overrides (customer_id, override_id, override) VALUES (?, ?, ?) ON CONFLICT (customer_id, override_id) DO UPDATE SET override = excluded.override",
      ),
      deleteOverride: db.prepare<[string, string]>("DELETE FROM overrides WHERE customer_id = ? AND override_id = ?"),
      deleteOverrides: db.prepare<[string]>("DELETE FROM overrides WHERE customer_id = ?"),
      catalog: db.prepare<[], { catalog: Buffer }>("SELECT catalog FROM catalog WHERE id = 1"),
      putCatalog: db.prepare<[Uint8Array, number]>(
        "INSERT INTO catalog (id, catalog, applied_at_ms) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET catalog = excluded.catalog, applied_at_ms = excluded.applied_at_ms",
      ),
      appendAudit: db.prepare<[AuditChainRow]>(
        `INSERT INTO audit (seq, at_ms, kind, customer_token, customer_id, subscription_id, feature, from_status, to_status,
                            event_id, correlation_id, actor, on_behalf_of, reason, detail, personal_digest, hash)
         VALUES (@seq, @at_ms, @kind, @customer_token, @customer_id, @subscription_id, @feature, @from_status, @to_status,
                 @event_id, @correlation_id, @actor, @on_behalf_of, @reason, @detail, @personal_digest, @hash)`,
      ),
      auditHead: db.prepare<[], { seq: number; hash: string }>("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"),
      auditKey: db.prepare<[string], { key: Buffer }>("SELECT key FROM audit_keys WHERE customer_token = ?"),
      putAuditKey: db.prepare<[string, Buffer]>("INSERT INTO audit_keys (customer_token, key) VALUES (?, ?)"),
      deleteAuditKey: db.prepare<[string]>("DELETE FROM audit_keys WHERE customer_token = ?"),
      timeline: db.prepare<[string], AuditRow>("SELECT * FROM audit WHERE customer_token = ? ORDER BY seq"),
      auditBefore: db.prepare<[number, number], AuditRow>("SELECT * FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT ?"),
      auditBeforeForCustomer: db.prepare<[string, number, number], AuditRow>(
        "SELECT * FROM audit WHERE customer_token = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
      ),
      auditAtOrAfter: db.prepare<[number], { seq: number; at_ms: number }>("SELECT seq, at_ms FROM audit WHERE seq >= ? ORDER BY seq LIMIT 1"),
      auditBounds: db.prepare<[], { lo: number | null; hi: number | null }>("SELECT min(seq) AS lo, max(seq) AS hi FROM audit"),
      anonymizeAudit: db.prepare<[string]>("UPDATE audit SET customer_id = '', subscription_id = '' WHERE customer_token = ?"),
      enqueue: db.prepare<[string, Uint8Array, number, number | null, number | null]>(
        "INSERT INTO outbox (subject, payload, created_at_ms, input_seq, input_ord) VALUES (?, ?, ?, ?, ?)",
      ),
      pending: db.prepare<[number], { id: number; subject: string; payload: Buffer; created_at_ms: number; input_seq: number | null; input_ord: number | null }>(
        "SELECT id, subject, payload, created_at_ms, input_seq, input_ord FROM outbox WHERE published_seq IS NULL ORDER BY id LIMIT ?",
      ),
      outboxIdThrough: db.prepare<[number, number, number], { id: number | null }>(
        "SELECT max(id) AS id FROM outbox WHERE input_seq IS NOT NULL AND (input_seq < ? OR (input_seq = ? AND input_ord <= ?))",
      ),
      park: db.prepare<[number, string, Uint8Array, string, number]>("INSERT OR IGNORE INTO parked_inputs (seq, subject, payload, content_type, at_ms) VALUES (?, ?, ?, ?, ?)"),
      parked: db.prepare<[], { seq: number; subject: string; payload: Buffer; content_type: string; at_ms: number }>("SELECT * FROM parked_inputs ORDER BY seq"),
      clearParked: db.prepare("DELETE FROM parked_inputs"),
      pruneDeadLetters: db.prepare<[number]>("DELETE FROM deadletters WHERE created_at_ms < ?"),
      markPublished: db.prepare<[number, number, number]>("UPDATE outbox SET published_seq = ?, published_at_ms = ? WHERE id = ? AND published_seq IS NULL"),
      // Reconcile: rows up to the stream's last outbox id reached the stream, except those whose
      // subject still has a pending row after it (they may have been coalesced into that row,
      // which has not gone out yet; they are published together with it).
      markPublishedThrough: db.prepare<[number, number, number, number]>(
        `UPDATE outbox SET published_seq = ?, published_at_ms = ?
         WHERE published_seq IS NULL AND id <= ?
           AND NOT EXISTS (SELECT 1 FROM outbox later WHERE later.subject = outbox.subject AND later.id > ? AND later.published_seq IS NULL)`,
      ),
      firstPending: db.prepare<[], { id: number | null }>("SELECT min(id) AS id FROM outbox WHERE published_seq IS NULL"),
      createdAt: db.prepare<[number], { at: number }>("SELECT created_at_ms AS at FROM outbox WHERE id = ?"),
      pendingCount: db.prepare<[], { n: number }>("SELECT count(*) AS n FROM outbox WHERE published_seq IS NULL"),
      maxOutboxId: db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"),
      latestForSubject: db.prepare<[string], { id: number; published_seq: number | null }>(
        "SELECT id, published_seq FROM outbox WHERE subject = ? ORDER BY id DESC LIMIT 1",
      ),
      deleteOutboxForSubject: db.prepare<[string]>("DELETE FROM outbox WHERE subject = ?"),
      prune: db.prepare<[number, number]>(
        `DELETE FROM outbox WHERE id IN (
           SELECT id FROM outbox WHERE published_seq IS NOT NULL AND published_at_ms < ?
             AND id < (SELECT max(id) FROM outbox WHERE published_seq IS NOT NULL)
           LIMIT ?)`,
      ),
      enqueueDeadLetter: db.prepare<[Uint8Array, number]>("INSERT INTO deadletters (payload, created_at_ms) VALUES (?, ?)"),
      pendingDeadLetters: db.prepare<[number], { id: number; payload: Buffer }>("SELECT id, payload FROM deadletters ORDER BY id LIMIT ?"),
      deleteDeadLetter: db.prepare<[number]>("DELETE FROM deadletters WHERE id = ?"),
    };
    this.id = this.meta("ledger_id") ?? this.newLedgerId();
  }

  /** Opens (creating and migrating as needed) the ledger at `path`. */
  static open(path: string): Ledger {
    // It holds customer ids: readable by its owner only. SQLite gives the -wal and -shm files the
    // database file's mode.
    if (path !== ":memory:") {
      closeSync(openSync(path, "a", 0o600));
      chmodSync(path, 0o600);
    }
    const db = new Database(path);
    try {
      // One writer per ledger: the lock is taken at the first access and held until close, so a
      // second process on the same file fails here instead of interleaving outbox ids. The short
      // busy timeout covers a previous process that is still closing.
      db.pragma("busy_timeout = 1000");
      db.pragma("locking_mode = EXCLUSIVE");
      db.pragma("journal_mode = WAL");
      db.pragma("synchronous = FULL");
      // Erasure must not leave a customer's bytes in free pages.
      db.pragma("secure_delete = ON");
      // Every event runs in its own savepoint, whose undo pages (about 20 per event) SQLite keeps in a
      // statement journal that spills to a temporary file past 64 KiB: ~40 writes per event to disk.
      // In memory it is emptied at each savepoint's release, so it stays one event's size.
      db.pragma("temp_store = MEMORY");
      migrate(db);
      return new Ledger(db);
    } catch (err) {
      db.close();
      if (err instanceof Database.SqliteError && err.code.startsWith("SQLITE_BUSY"))
        throw new Error(`ledger ${path} is locked by another writer (one writer per ledger file)`, { cause: err });
      throw err;
    }
  }

  /** Runs `fn` in a transaction (a savepoint when nested); throws roll it back. */
  transaction<T>(fn: () => T): T {
    return this.tx(fn);
  }

  /**
   * A transaction whose commit does not wait for the disk (no fsync): for records that can be
   * derived again, such as which outbox rows reached the stream (a restart reconciles them with
   * the stream's last message). It stays atomic and in order: the next durable commit syncs the
   * WAL, and everything before it with it.
   */
  transactionNoSync<T>(fn: () => T): T {
    if (this.db.inTransaction) return this.tx(fn);
    this.db.pragma("synchronous = NORMAL");
    try {
      return this.tx(fn);
    } finally {
      this.db.pragma("synchronous = FULL");
    }
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  get open(): boolean {
    return this.db.open;
  }

  private meta(key: string): string | undefined {
    return this.s.getMeta.get(key)?.value;
  }

  /** Random id of this ledger file; outbox ids are only meaningful together with it. */
  get ledgerId(): string {
    return this.id;
  }

  private newLedgerId(): string {
    const id = randomUUID();
    this.s.setMeta.run("ledger_id", id);
    return id;
  }

  /**
   * A new ledger id, for a ledger found to be behind the stream it published to (restored from
   * an older copy): its next outbox ids were already used, and must not look like duplicates.
   */
  rotateLedgerId(): string {
    this.id = this.newLedgerId();
    return this.id;
  }

  // Facts

  isProcessed(eventId: string): boolean {
    return this.s.isProcessed.get(eventId) !== undefined;
  }

  /** Records a new fact; false (and nothing written) if its event_id was seen before. */
  insertFact(event: BillingEvent, origin: string, atMs: number): boolean {
    if (this.s.markProcessed.run(event.eventId, atMs).changes === 0) return false;
    this.s.insertFact.run(event.eventId, event.customerId, origin, atMs, BillingEvent.encode(event).finish());
    return true;
  }

  /** The customer's facts in receive order. */
  facts(customerId: string): BillingEvent[] {
    return this.s.facts.all(customerId).map((r) => BillingEvent.decode(r.event));
  }

  factCount(customerId: string): number {
    return this.s.factCount.get(customerId)?.n ?? 0;
  }

  /** Deletes the customer's facts and everything folded from them. */
  deleteFacts(customerId: string): void {
    this.s.deleteFacts.run(customerId);
    this.deleteFold(customerId);
  }

  // Folded parts (derived from facts; see policy/fold.ts)

  foldedCustomer(customerId: string): FoldedCustomer | undefined {
    const r = this.s.foldCustomer.get(customerId);
    return r ? { factCount: r.fact_count, lastEventAtMs: r.last_event_at_ms } : undefined;
  }

  putFoldedCustomer(customerId: string, c: FoldedCustomer): void {
    this.s.putFoldCustomer.run(customerId, c.factCount, c.lastEventAtMs);
  }

  /** Every subscription of the customer with its intent's deciding facts. */
  foldedSubscriptions(customerId: string): { subscriptionId: string; intent: BillingEvent[] }[] {
    return this.s.foldSubscriptions.all(customerId).map((r) => ({ subscriptionId: r.subscription_id, intent: decodeFacts(r.intent) }));
  }

  /** The intent's deciding facts, or undefined if the subscription has no folded part yet. */
  foldedIntent(customerId: string, subscriptionId: string): BillingEvent[] | undefined {
    const r = this.s.foldIntent.get(customerId, subscriptionId);
    return r ? decodeFacts(r.intent) : undefined;
  }

  putFoldedIntent(customerId: string, subscriptionId: string, deciding: readonly BillingEvent[]): void {
    this.s.putFoldSubscription.run(customerId, subscriptionId, encodeFacts(deciding));
  }

  foldedInvoice(customerId: string, subscriptionId: string, invoiceId: string): BillingEvent[] | undefined {
    const r = this.s.foldInvoice.get(customerId, subscriptionId, invoiceId);
    return r ? decodeFacts(r.facts) : undefined;
  }

  putFoldedInvoice(customerId: string, subscriptionId: string, deciding: readonly BillingEvent[], state: InvoiceState): void {
    this.s.putFoldInvoice.run(customerId, subscriptionId, state.invoiceId, state.periodEndMs, encodeFacts(deciding), InvoiceState.encode(state).finish());
  }

  /** The subscription's latest `limit` invoice states by period end, plus any tied with the last (unordered). */
  latestInvoices(customerId: string, subscriptionId: string, limit: number): InvoiceState[] {
    return this.s.latestInvoices.all(customerId, subscriptionId, customerId, subscriptionId, limit - 1).map((r) => InvoiceState.decode(r.state));
  }

  deleteFold(customerId: string): void {
    this.s.deleteFoldCustomer.run(customerId);
    this.s.deleteFoldSubscriptions.run(customerId);
    this.s.deleteFoldInvoices.run(customerId);
  }

  // Documents

  document(customerId: string): Uint8Array | undefined {
    return this.s.document.get(customerId)?.document;
  }

  putDocument(customerId: string, token: string, document: Uint8Array, atMs: number): void {
    this.s.putDocument.run(customerId, token, document, atMs);
  }

  deleteDocument(customerId: string): void {
    this.s.deleteDocument.run(customerId);
  }

  /** Documents ordered by customer id, after `afterCustomerId` ("" for the first page). */
  documentsPage(afterCustomerId: string, limit: number): StoredDocument[] {
    return this.s.documentsPage.all(afterCustomerId, limit).map((r) => ({ customerId: r.customer_id, token: r.token, document: r.document }));
  }

  hasDocuments(): boolean {
    return this.s.hasDocuments.get() !== undefined;
  }

  // Overrides

  overrides(customerId: string): Override[] {
    return this.s.overrides.all(customerId).map((r) => Override.decode(r.override));
  }

  putOverride(customerId: string, o: Override): void {
    this.s.putOverride.run(customerId, o.overrideId, Override.encode(o).finish());
  }

  deleteOverride(customerId: string, overrideId: string): boolean {
    return this.s.deleteOverride.run(customerId, overrideId).changes > 0;
  }

  deleteOverrides(customerId: string): void {
    this.s.deleteOverrides.run(customerId);
  }

  // Catalog

  catalog(): Catalog | undefined {
    const row = this.s.catalog.get();
    return row ? Catalog.decode(row.catalog) : undefined;
  }

  catalogBytes(): Uint8Array | undefined {
    return this.s.catalog.get()?.catalog;
  }

  putCatalog(catalog: Catalog, atMs: number): void {
    this.s.putCatalog.run(Catalog.encode(catalog).finish(), atMs);
  }

  // Audit

  /** Appends an entry to the hash chain (audit-chain.ts); call inside the change's transaction. */
  appendAudit(e: AuditInput, atMs: number): void {
    this.appendAudits([e], atMs);
  }

  /**
   * Appends entries to the hash chain in order, in one go: the chain's head is read once and the
   * customer's key and digest once per customer (an event that changes several features writes
   * one ACCESS_CHANGED entry each). Call inside the change's transaction.
   */
  appendAudits(entries: readonly AuditInput[], atMs: number): void {
    if (entries.length === 0) return;
    const digests = new Map<string, string>();
    const digestOf = (token: string, customerId: string, subscriptionId: string): string => {
      if (!customerId && !subscriptionId) return "";
      if (!token) throw new Error("audit: customer fields need the customer token");
      const memo = JSON.stringify([token, customerId, subscriptionId]);
      let d = digests.get(memo);
      if (d === undefined) {
        let key = this.s.auditKey.get(token)?.key;
        if (!key) this.s.putAuditKey.run(token, (key = randomBytes(32)));
        digests.set(memo, (d = personalDigest(key, customerId, subscriptionId)));
      }
      return d;
    };
    const head = this.s.auditHead.get();
    let seq = head?.seq ?? 0;
    let prev = head?.hash ?? GENESIS_HASH;
    for (const e of entries) {
      const customerTokenValue = e.customerToken ?? "";
      const customerId = e.customerId ?? "";
      const subscriptionId = e.subscriptionId ?? "";
      const row = {
        seq: ++seq,
        at_ms: atMs,
        kind: e.kind,
        customer_token: customerTokenValue,
        customer_id: customerId,
        subscription_id: subscriptionId,
        feature: e.feature ?? "",
        from_status: e.fromStatus ?? 0,
        to_status: e.toStatus ?? 0,
        event_id: e.eventId ?? "",
        correlation_id: e.correlationId ?? "",
        actor: e.actor ?? "",
        on_behalf_of: e.onBehalfOf ?? "",
        reason: e.reason ?? "",
        detail: e.detail ?? "",
        personal_digest: digestOf(customerTokenValue, customerId, subscriptionId),
      };
      prev = entryHash(prev, row);
      this.s.appendAudit.run({ ...row, hash: prev });
    }
  }

  /** The last audit entry's sequence and hash (what the writer publishes to NATS). */
  auditHead(): { seq: number; hash: string } | undefined {
    return this.s.auditHead.get();
  }

  /** Checks the whole audit hash chain (see audit-chain.ts). */
  verifyAuditChain(): AuditVerification {
    return verifyAuditChain(this.db);
  }

  /** Every audit entry of the customer with this token, oldest first. */
  timeline(customerToken: string): AuditEntry[] {
    return this.s.timeline.all(customerToken).map(auditEntry);
  }

  /**
   * Up to `limit` audit entries with seq below `beforeSeq`, newest first; only the customer's
   * when `customerToken` is given. Both walk an index (the primary key or audit_by_customer).
   */
  auditBefore(beforeSeq: number, limit: number, customerToken?: string): AuditEntry[] {
    const rows = customerToken === undefined ? this.s.auditBefore.all(beforeSeq, limit) : this.s.auditBeforeForCustomer.all(customerToken, beforeSeq, limit);
    return rows.map(auditEntry);
  }

  /**
   * The first seq after every entry written before `atMs`, found by bisecting the primary key
   * (entries are appended in the writer's clock order). A seq bound for a time filter.
   */
  auditSeqAfter(atMs: number): number {
    const { lo, hi } = this.s.auditBounds.get() ?? { lo: null, hi: null };
    if (lo === null || hi === null) return 1;
    let a = lo;
    let b = hi + 1;
    while (a < b) {
      const mid = Math.floor((a + b) / 2);
      const row = this.s.auditAtOrAfter.get(mid);
      if (row && row.at_ms < atMs) a = row.seq + 1;
      else b = mid;
    }
    return a;
  }

  /** The highest audit seq so far (0 when empty). */
  auditHighSeq(): number {
    return this.s.auditBounds.get()?.hi ?? 0;
  }

  /**
   * Erasure: the customer's audit entries keep only the token; their personal fields and the key
   * of their digests go, and the chain still verifies (it commits to the digests).
   */
  anonymizeAudit(customerToken: string): void {
    this.s.anonymizeAudit.run(customerToken);
    this.s.deleteAuditKey.run(customerToken);
  }

  // Outbox

  enqueue(subject: string, payload: Uint8Array, atMs: number): number {
    const pos = this.folding;
    const id = Number(this.s.enqueue.run(subject, payload, atMs, pos?.seq ?? null, pos ? pos.ord++ : null).lastInsertRowid);
    return id;
  }

  pendingOutbox(limit: number): OutboxRow[] {
    return this.s.pending.all(limit).map((r) => ({
      id: r.id,
      subject: r.subject,
      payload: r.payload,
      createdAtMs: r.created_at_ms,
      position: r.input_seq === null ? undefined : { seq: r.input_seq, ord: r.input_ord ?? 0 },
    }));
  }

  // Input fold (docs/writer.md, "High availability")

  /** Runs `fn` as the fold of input message `seq`: rows it enqueues get positions (seq, 0), (seq, 1)… */
  foldingInput<T>(seq: number, fn: () => T): T {
    const outer = this.folding;
    this.folding = { seq, ord: 0 };
    try {
      return fn();
    } finally {
      this.folding = outer;
    }
  }

  /** The input stream sequence folded so far (0: nothing). */
  inputFolded(): number {
    return Number(this.meta("input_folded") ?? "0");
  }

  setInputFolded(seq: number): void {
    this.s.setMeta.run("input_folded", String(seq));
  }

  /** The last outbox id at or before `position` in fold order (0 if none). */
  outboxIdThrough(position: InputPosition): number {
    return this.s.outboxIdThrough.get(position.seq, position.seq, position.ord)?.id ?? 0;
  }

  parkInput(p: ParkedInput): void {
    this.s.park.run(p.seq, p.subject, p.payload, p.contentType, p.atMs);
  }

  /** Every parked input, in input order, removed from the table. */
  takeParkedInputs(): ParkedInput[] {
    const rows = this.s.parked.all().map((r) => ({ seq: r.seq, subject: r.subject, payload: r.payload, contentType: r.content_type, atMs: r.at_ms }));
    if (rows.length > 0) this.s.clearParked.run();
    return rows;
  }

  /** Records rows as published at stream sequence `seq`. */
  markPublished(ids: readonly number[], seq: number, atMs: number): void {
    for (const id of ids) this.s.markPublished.run(seq, atMs, id);
    this.raisePublishedHigh(seq);
  }

  /** Reconcile: every row up to `outboxId` is on the stream (see the statement's comment). */
  markPublishedThrough(outboxId: number, seq: number, atMs: number): void {
    this.s.markPublishedThrough.run(seq, atMs, outboxId, outboxId);
    this.raisePublishedHigh(seq);
  }

  /** The oldest unpublished row's id (cheap: an index lookup). */
  firstPendingId(): number | undefined {
    return this.s.firstPending.get()?.id ?? undefined;
  }

  /** How many rows are unpublished and when the oldest was committed (for metrics: counts them). */
  pendingStats(): { count: number; oldestAtMs: number | undefined } {
    const first = this.firstPendingId();
    if (first === undefined) return { count: 0, oldestAtMs: undefined };
    return { count: this.s.pendingCount.get()?.n ?? 0, oldestAtMs: this.s.createdAt.get(first)?.at };
  }

  /** The highest outbox id ever assigned (ids are never reused). */
  maxOutboxId(): number {
    return this.s.maxOutboxId.get()?.seq ?? 0;
  }

  /** The latest outbox row for a subject, if not pruned: its id and stream sequence (null while pending). */
  latestForSubject(subject: string): { id: number; publishedSeq: number | null } | undefined {
    const r = this.s.latestForSubject.get(subject);
    return r ? { id: r.id, publishedSeq: r.published_seq } : undefined;
  }

  deleteOutboxForSubject(subject: string): void {
    this.s.deleteOutboxForSubject.run(subject);
  }

  /** The highest stream sequence ever recorded for this ledger's published rows. */
  publishedHigh(): number {
    return Number(this.meta("published_high") ?? "0");
  }

  /** The last outbox id of the latest full snapshot (0 if none): while rows up to it are pending, a snapshot is in progress. */
  snapshotThrough(): number {
    return Number(this.meta("snapshot_through") ?? "0");
  }

  setSnapshotThrough(outboxId: number): void {
    this.s.setMeta.run("snapshot_through", String(outboxId));
  }

  /** After a snapshot onto a new or foreign stream, its sequence is the one that counts. */
  resetPublishedHigh(seq: number): void {
    this.s.setMeta.run("published_high", String(seq));
  }

  private raisePublishedHigh(seq: number): void {
    if (seq > this.publishedHigh()) this.s.setMeta.run("published_high", String(seq));
  }

  /** Deletes up to `limit` published rows older than `beforeMs` (always keeping the latest published row). */
  pruneOutbox(beforeMs: number, limit: number): number {
    return this.s.prune.run(beforeMs, limit).changes;
  }

  // Dead letters

  enqueueDeadLetter(payload: Uint8Array, atMs: number): number {
    return Number(this.s.enqueueDeadLetter.run(payload, atMs).lastInsertRowid);
  }

  pendingDeadLetters(limit: number): { id: number; payload: Uint8Array }[] {
    return this.s.pendingDeadLetters.all(limit);
  }

  deleteDeadLetter(id: number): void {
    this.s.deleteDeadLetter.run(id);
  }

  /** A standby's dead letters are the leader's to publish: dropped once long published by it. */
  pruneDeadLetters(beforeMs: number): number {
    return this.s.pruneDeadLetters.run(beforeMs).changes;
  }
}
