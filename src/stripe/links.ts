import Database from "better-sqlite3";
import type { PriceRole } from "./price-map.js";

/**
 * What the adapter remembers between Stripe events, because a later event does not carry it:
 * - which invoice a payment (PaymentIntent `pi_...` or Charge `ch_...`) paid, so a refund or a
 *   dispute months later can be tied to the invoice it reverses (since 2025-03-31.basil a charge
 *   no longer names its invoice; `invoice_payment.paid` does, once);
 * - which subscription and customer an invoice belongs to, and what it bills for, so a
 *   `payment_intent.processing` can say what is being paid for;
 * - which plan or add-on a price id stands for when that was learned from a lookup key or price
 *   metadata on a subscription (invoice lines since basil carry only the price id).
 */
export interface InvoiceLink {
  readonly subscriptionId: string;
  readonly customerId: string;
  /** What the invoice bills for, when it could be resolved. */
  readonly planId?: string | undefined;
  readonly addonIds?: readonly string[] | undefined;
  readonly quantity?: number | undefined;
  /** Unix seconds. */
  readonly periodStart?: number | undefined;
  readonly periodEnd?: number | undefined;
}

export type LinkUpdate =
  | { readonly kind: "payment"; readonly paymentId: string; readonly invoiceId: string }
  | { readonly kind: "invoice"; readonly invoiceId: string; readonly link: InvoiceLink }
  | { readonly kind: "price"; readonly priceId: string; readonly role: PriceRole }
  /** A small value under a key: which event changed a subscription in a given second, reconciliation's checkpoint. */
  | { readonly kind: "note"; readonly key: string; readonly value: string };

export interface LinkReader {
  /** The invoice a PaymentIntent or Charge paid. */
  invoiceOfPayment(paymentId: string): string | undefined;
  invoice(invoiceId: string): InvoiceLink | undefined;
  priceRole(priceId: string): PriceRole | undefined;
  note(key: string): string | undefined;
}

/** A verified Stripe event waiting for a link (see `MapResult.waitFor`), as its JSON text. */
export interface ParkedEvent {
  readonly eventId: string;
  readonly event: string;
}

export interface LinkStore extends LinkReader {
  /** Idempotent; a later update of the same key replaces the earlier one. */
  learn(updates: readonly LinkUpdate[]): void;
  /** Keeps an event until a link for one of `keys` (payment or invoice ids) is learned. */
  park(keys: readonly string[], parked: ParkedEvent): void;
  /** The events waiting for any of `keys`, each once. */
  parked(keys: readonly string[]): ParkedEvent[];
  /** Forgets parked events once they were applied. */
  unpark(eventIds: readonly string[]): void;
  close(): void;
}

/** The keys a batch of updates may release parked events for. */
export function learnedKeys(updates: readonly LinkUpdate[]): string[] {
  return [...new Set(updates.flatMap((u) => (u.kind === "payment" ? [u.paymentId] : u.kind === "invoice" ? [u.invoiceId] : [])))];
}

/** Bounded in-memory links (the oldest are forgotten first). Lost on restart: for tests and `dev`. */
export class MemoryLinkStore implements LinkStore {
  private readonly payments = new Map<string, string>();
  private readonly invoices = new Map<string, InvoiceLink>();
  private readonly prices = new Map<string, PriceRole>();
  private readonly notes = new Map<string, string>();
  private readonly waiting = new Map<string, Map<string, string>>();

  constructor(private readonly maxEntries = 100_000) {}

  park(keys: readonly string[], parked: ParkedEvent): void {
    for (const key of keys) {
      let m = this.waiting.get(key);
      if (!m) {
        m = new Map();
        put(this.waiting, key, m, this.maxEntries);
      }
      m.set(parked.eventId, parked.event);
    }
  }

  parked(keys: readonly string[]): ParkedEvent[] {
    const out = new Map<string, string>();
    for (const key of keys) for (const [eventId, event] of this.waiting.get(key) ?? []) out.set(eventId, event);
    return [...out].map(([eventId, event]) => ({ eventId, event }));
  }

  unpark(eventIds: readonly string[]): void {
    const ids = new Set(eventIds);
    for (const [key, m] of this.waiting) {
      for (const id of ids) m.delete(id);
      if (m.size === 0) this.waiting.delete(key);
    }
  }

  invoiceOfPayment(paymentId: string): string | undefined {
    return this.payments.get(paymentId);
  }
  invoice(invoiceId: string): InvoiceLink | undefined {
    return this.invoices.get(invoiceId);
  }
  priceRole(priceId: string): PriceRole | undefined {
    return this.prices.get(priceId);
  }
  note(key: string): string | undefined {
    return this.notes.get(key);
  }

  learn(updates: readonly LinkUpdate[]): void {
    for (const u of updates) {
      if (u.kind === "payment") put(this.payments, u.paymentId, u.invoiceId, this.maxEntries);
      else if (u.kind === "invoice") put(this.invoices, u.invoiceId, merge(this.invoices.get(u.invoiceId), u.link), this.maxEntries);
      else if (u.kind === "note") put(this.notes, u.key, u.value, this.maxEntries);
      else put(this.prices, u.priceId, u.role, this.maxEntries);
    }
  }

  close(): void {
    this.payments.clear();
    this.invoices.clear();
    this.prices.clear();
    this.notes.clear();
    this.waiting.clear();
  }
}

function put<V>(map: Map<string, V>, key: string, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > max) {
    const oldest = map.keys().next().value;
    if (oldest !== undefined) map.delete(oldest);
  }
}

/** A later sighting of an invoice may lack what an earlier one resolved (e.g. items): keep both. */
function merge(before: InvoiceLink | undefined, after: InvoiceLink): InvoiceLink {
  if (!before) return after;
  return {
    subscriptionId: after.subscriptionId || before.subscriptionId,
    customerId: after.customerId || before.customerId,
    planId: after.planId ?? before.planId,
    addonIds: after.planId !== undefined || after.addonIds?.length ? after.addonIds : before.addonIds,
    quantity: after.quantity ?? before.quantity,
    periodStart: after.periodStart ?? before.periodStart,
    periodEnd: after.periodEnd ?? before.periodEnd,
  };
}

/**
 * Links in a small SQLite file of their own (not the writer's ledger: they are a cache of what
 * Stripe said, rebuilt by replaying Stripe events, and never decide anything by themselves).
 * Entries older than `retentionMs` are pruned: refunds and disputes come within months.
 */
export class SqliteLinkStore implements LinkStore {
  private readonly db: Database.Database;
  private readonly getStmt: Database.Statement<[string, string], { value: string }>;
  private readonly putStmt: Database.Statement<[string, string, string, number]>;
  private writes = 0;

  constructor(
    path: string,
    private readonly now: () => number = Date.now,
    private readonly retentionMs = 400 * 86_400_000,
  ) {
    this.db = new Database(path);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.exec(
      "CREATE TABLE IF NOT EXISTS stripe_links (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID",
    );
    this.db.exec("CREATE INDEX IF NOT EXISTS stripe_links_at ON stripe_links (at_ms)");
    this.db.exec(
      "CREATE TABLE IF NOT EXISTS stripe_parked (key TEXT NOT NULL, event_id TEXT NOT NULL, event TEXT NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (key, event_id)) WITHOUT ROWID",
    );
    this.db.exec("CREATE INDEX IF NOT EXISTS stripe_parked_event ON stripe_parked (event_id)");
    this.getStmt = this.db.prepare("SELECT value FROM stripe_links WHERE kind = ? AND key = ?");
    this.putStmt = this.db.prepare("INSERT INTO stripe_links (kind, key, value, at_ms) VALUES (?, ?, ?, ?) ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, at_ms = excluded.at_ms");
  }

  private get(kind: string, key: string): string | undefined {
    return this.getStmt.get(kind, key)?.value;
  }

  invoiceOfPayment(paymentId: string): string | undefined {
    return this.get("payment", paymentId);
  }
  invoice(invoiceId: string): InvoiceLink | undefined {
    const v = this.get("invoice", invoiceId);
    return v === undefined ? undefined : (JSON.parse(v) as InvoiceLink);
  }
  priceRole(priceId: string): PriceRole | undefined {
    const v = this.get("price", priceId);
    return v === undefined ? undefined : (JSON.parse(v) as PriceRole);
  }
  note(key: string): string | undefined {
    return this.get("note", key);
  }

  park(keys: readonly string[], parked: ParkedEvent): void {
    const at = this.now();
    const stmt = this.db.prepare("INSERT OR REPLACE INTO stripe_parked (key, event_id, event, at_ms) VALUES (?, ?, ?, ?)");
    this.db.transaction(() => {
      for (const key of keys) stmt.run(key, parked.eventId, parked.event, at);
    })();
  }

  parked(keys: readonly string[]): ParkedEvent[] {
    const stmt = this.db.prepare<[string], { event_id: string; event: string }>("SELECT event_id, event FROM stripe_parked WHERE key = ?");
    const out = new Map<string, string>();
    for (const key of keys) for (const row of stmt.all(key)) out.set(row.event_id, row.event);
    return [...out].map(([eventId, event]) => ({ eventId, event }));
  }

  unpark(eventIds: readonly string[]): void {
    const stmt = this.db.prepare("DELETE FROM stripe_parked WHERE event_id = ?");
    this.db.transaction(() => {
      for (const id of eventIds) stmt.run(id);
    })();
  }

  learn(updates: readonly LinkUpdate[]): void {
    if (updates.length === 0) return;
    const at = this.now();
    this.db.transaction(() => {
      for (const u of updates) {
        if (u.kind === "payment") this.putStmt.run("payment", u.paymentId, u.invoiceId, at);
        else if (u.kind === "invoice") this.putStmt.run("invoice", u.invoiceId, JSON.stringify(merge(this.invoice(u.invoiceId), u.link)), at);
        else if (u.kind === "note") this.putStmt.run("note", u.key, u.value, at);
        else this.putStmt.run("price", u.priceId, JSON.stringify(u.role), at);
      }
    })();
    this.writes += updates.length;
    if (this.writes >= 10_000) {
      this.writes = 0;
      this.db.prepare("DELETE FROM stripe_links WHERE at_ms < ?").run(at - this.retentionMs);
      this.db.prepare("DELETE FROM stripe_parked WHERE at_ms < ?").run(at - this.retentionMs);
    }
  }

  close(): void {
    this.db.close();
  }
}
