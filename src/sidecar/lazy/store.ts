import { chmodSync, closeSync, existsSync, mkdirSync, openSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import Database, { type Database as Db, type Statement } from "better-sqlite3";
import { CatalogIndex } from "../../catalog/index.js";
import { InvalidArgumentError } from "../../errors/index.js";
import { Catalog } from "../../gen/proofgate/v1/catalog.js";
import type { Logger } from "../../observability/logger.js";
import { customerToken } from "../../replication/subjects.js";

/** Bump when the lazy file's schema changes incompatibly; an older file is then emptied. */
export const LAZY_SCHEMA_VERSION = 1;

/** Counted per kept customer besides its document bytes: the token key, the revision, the row and B-tree cell headers. */
export const ROW_OVERHEAD_BYTES = 64;

const TABLES = `
CREATE TABLE IF NOT EXISTS lazy_meta (
  id               INTEGER PRIMARY KEY CHECK (id = 1),
  schema_version   INTEGER NOT NULL,
  -- Every PROOFGATE_STATE message up to here was seen: applied if it was a kept customer's or the
  -- catalog, skipped otherwise. Written at most once a second, never ahead of the rows.
  applied_revision INTEGER NOT NULL,
  -- The stream incarnation (streamIdentity) the kept rows come from.
  stream_identity  TEXT
);
-- The kept customers, by subject token. A NULL document: the stream has none for this customer
-- (unknown, or erased): kept too, so that asking again costs no fetch.
CREATE TABLE IF NOT EXISTS lazy_documents (
  token    TEXT PRIMARY KEY,
  -- The stream sequence of the message the row came from (0: no message).
  revision INTEGER NOT NULL,
  document BLOB
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lazy_catalog (
  id       INTEGER PRIMARY KEY CHECK (id = 1),
  revision INTEGER NOT NULL,
  catalog  BLOB NOT NULL
);
INSERT OR IGNORE INTO lazy_meta (id, schema_version, applied_revision, stream_identity) VALUES (1, ${LAZY_SCHEMA_VERSION}, 0, NULL);
`;

export interface LazyBounds {
  readonly maxCustomers: number;
  /** Document bytes plus ROW_OVERHEAD_BYTES per customer. */
  readonly maxBytes: number;
}

interface Held {
  revision: number;
  bytes: number;
}

/**
 * The lazy sidecar's store: the customers it has been asked about, on disk (SQLite, WAL), within
 * a count and a byte budget, least recently checked out first. The recency order lives in memory
 * (a Map in use order: a hit moves its key to the end); on disk the rows carry no recency, so a
 * restart starts from the rows' order by token.
 *
 * Writes are few (a miss, a change of a kept customer, the catalog) and small, so they run
 * synchronously on the event loop: no writer thread, and a read always sees every write before it.
 * The revision is held in memory and written at most once a second (`persistRevision`): the file
 * may claim an older revision than its rows, never a newer one, and an older one only means
 * reading a few messages again.
 */
export class LazyStore {
  private readonly db: Db;
  private readonly held = new Map<string, Held>();
  private heldBytes = 0;
  private revisionValue: number;
  private persistedRevision: number;
  private identityValue: string | undefined;
  private catalogIndex = CatalogIndex.empty();
  private catalogRevisionValue = 0;
  private evictedCount = 0;
  /** The last id asked about and its token: a check asks `holds` and then `lookup` for the same id. */
  private lastId = "";
  private lastToken = "";
  private readonly getStmt: Statement<[string], Buffer | null>;
  private readonly upsertStmt: Statement<[string, number, Buffer | null]>;
  private readonly deleteStmt: Statement<[string]>;
  private readonly revisionStmt: Statement<[number]>;

  private constructor(
    readonly path: string,
    readonly bounds: LazyBounds,
    private readonly logger: Logger,
  ) {
    if (path === "" || path === ":memory:") throw new InvalidArgumentError("replica", "must be a file path");
    mkdirSync(dirname(path), { recursive: true });
    ownerOnly(path);
    let db = new Database(path);
    const kind = fileKind(db);
    if (kind !== "empty" && kind !== "lazy") {
      this.logger.warn({ found: kind }, "the replica file is not a lazy store of this version; starting an empty one");
      db.close();
      for (const suffix of ["", "-wal", "-shm", "-journal"]) if (existsSync(path + suffix)) rmSync(path + suffix, { force: true });
      ownerOnly(path);
      db = new Database(path);
    }
    // Set before the first table exists: ~400-byte rows in a WITHOUT ROWID table want pages over 20 times their size.
    db.pragma("page_size = 8192");
    db.pragma("journal_mode = WAL");
    // Every kept row can be fetched again from NATS: a power cut may lose the last commits.
    db.pragma("synchronous = NORMAL");
    // The WAL is part of the disk bound: checkpoint every 128 pages (1 MiB), cut back to 1 MiB after.
    db.pragma("wal_autocheckpoint = 128");
    db.pragma("journal_size_limit = 1048576");
    db.exec(TABLES);
    this.db = db;
    const meta = db.prepare("SELECT applied_revision, stream_identity FROM lazy_meta WHERE id = 1").get() as { applied_revision: number; stream_identity: string | null };
    this.revisionValue = meta.applied_revision;
    this.persistedRevision = meta.applied_revision;
    this.identityValue = meta.stream_identity ?? undefined;
    this.getStmt = db.prepare<[string], Buffer | null>("SELECT document FROM lazy_documents WHERE token = ?").pluck();
    this.upsertStmt = db.prepare<[string, number, Buffer | null]>(
      "INSERT INTO lazy_documents (token, revision, document) VALUES (?, ?, ?) ON CONFLICT (token) DO UPDATE SET revision = excluded.revision, document = excluded.document",
    );
    this.deleteStmt = db.prepare<[string]>("DELETE FROM lazy_documents WHERE token = ?");
    this.revisionStmt = db.prepare<[number]>("UPDATE lazy_meta SET applied_revision = ? WHERE id = 1");
    for (const row of db.prepare("SELECT token, revision, length(document) AS bytes FROM lazy_documents").iterate() as IterableIterator<{ token: string; revision: number; bytes: number | null }>) {
      this.track(row.token, row.revision, row.bytes ?? 0);
    }
    const catalog = db.prepare("SELECT revision, catalog FROM lazy_catalog WHERE id = 1").get() as { revision: number; catalog: Buffer } | undefined;
    if (catalog) {
      try {
        this.catalogIndex = CatalogIndex.from(Catalog.decode(catalog.catalog));
        this.catalogRevisionValue = catalog.revision;
      } catch (err) {
        this.logger.error({ err }, "stored catalog is undecodable; fetching it again from NATS");
      }
    }
    // Bounds may have shrunk since the last run.
    this.evict(undefined);
  }

  static open(path: string, bounds: LazyBounds, logger: Logger): LazyStore {
    return new LazyStore(path, bounds, logger);
  }

  /** Every stream message up to here was seen (applied or skipped). */
  get revision(): number {
    return this.revisionValue;
  }

  get streamIdentity(): string | undefined {
    return this.identityValue;
  }

  get catalog(): CatalogIndex {
    return this.catalogIndex;
  }

  get catalogRevision(): number {
    return this.catalogRevisionValue;
  }

  /** Customers kept. */
  get size(): number {
    return this.held.size;
  }

  /** What counts against --lazy-max-bytes. */
  get bytes(): number {
    return this.heldBytes;
  }

  get evictions(): number {
    return this.evictedCount;
  }

  /** The subject token of a customer (the last one is remembered: a check asks twice). */
  token(customerId: string): string {
    if (customerId !== this.lastId) {
      this.lastToken = customerToken(customerId);
      this.lastId = customerId;
    }
    return this.lastToken;
  }

  /**
   * Whether the customer is kept; if so it becomes the most recently used. Every check asks this
   * first (an answer from the check's answer cache reads nothing else), so it keeps the order.
   */
  holds(customerId: string): boolean {
    const token = this.token(customerId);
    const h = this.held.get(token);
    if (h === undefined) return false;
    this.held.delete(token);
    this.held.set(token, h);
    return true;
  }

  /** The revision of a kept customer's row by token; undefined when not kept. */
  heldRevision(token: string): number | undefined {
    return this.held.get(token)?.revision;
  }

  /** The revision and a customer's document (null: none, or not kept: ask `holds`). The hot path of a check in lazy mode. */
  lookup(customerId: string): [revision: number, document: Buffer | null] {
    const token = this.token(customerId);
    if (!this.held.has(token)) return [this.revisionValue, null];
    return [this.revisionValue, this.getStmt.get(token) ?? null];
  }

  document(customerId: string): Buffer | undefined {
    return this.lookup(customerId)[1] ?? undefined;
  }

  /** Writes run on this thread, so every read sees one state: the revision held in memory. */
  readRevision(): number {
    return this.revisionValue;
  }

  snapshot<T>(fn: () => T): T {
    return fn();
  }

  /**
   * Keeps (or replaces) a customer's row: `document` null when the stream has none. Then evicts
   * the least recently used customers beyond the bounds, never this one.
   */
  put(token: string, revision: number, document: Buffer | null): void {
    this.upsertStmt.run(token, revision, document);
    const old = this.held.get(token);
    if (old) {
      this.heldBytes -= old.bytes + ROW_OVERHEAD_BYTES;
      this.held.delete(token);
    }
    this.track(token, revision, document?.byteLength ?? 0);
    this.evict(token);
  }

  /** A kept customer changed on the stream; the recency order stays as it was. */
  update(token: string, revision: number, document: Buffer | null): void {
    const h = this.held.get(token);
    if (!h) return;
    this.upsertStmt.run(token, revision, document);
    const bytes = document?.byteLength ?? 0;
    this.heldBytes += bytes - h.bytes;
    h.bytes = bytes;
    h.revision = revision;
    this.evict(token);
  }

  setCatalog(revision: number, catalog: Catalog, bytes: Uint8Array): void {
    if (revision <= this.catalogRevisionValue) return;
    this.db
      .prepare("INSERT INTO lazy_catalog (id, revision, catalog) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, catalog = excluded.catalog")
      .run(revision, Buffer.from(bytes));
    this.catalogIndex = CatalogIndex.from(catalog);
    this.catalogRevisionValue = revision;
  }

  /** Every message up to `revision` was seen. Kept in memory; `persistRevision` writes it. */
  advance(revision: number): void {
    if (revision > this.revisionValue) this.revisionValue = revision;
  }

  persistRevision(): void {
    if (this.revisionValue === this.persistedRevision || !this.db.open) return;
    this.revisionStmt.run(this.revisionValue);
    this.persistedRevision = this.revisionValue;
  }

  bind(identity: string): void {
    this.db.prepare("UPDATE lazy_meta SET stream_identity = ? WHERE id = 1").run(identity);
    this.identityValue = identity;
  }

  /** Forgets every kept customer (the catalog stays: it is replaced as soon as a newer one is read). */
  dropDocuments(): void {
    this.db.exec("DELETE FROM lazy_documents");
    this.held.clear();
    this.heldBytes = 0;
  }

  /** Empties the store: another stream incarnation, or one behind it. */
  reset(): void {
    this.db.exec(`DROP TABLE IF EXISTS lazy_documents; DROP TABLE IF EXISTS lazy_catalog; DROP TABLE IF EXISTS lazy_meta; ${TABLES}`);
    this.held.clear();
    this.heldBytes = 0;
    this.revisionValue = 0;
    this.persistedRevision = 0;
    this.identityValue = undefined;
    this.catalogIndex = CatalogIndex.empty();
    this.catalogRevisionValue = 0;
  }

  close(): void {
    if (!this.db.open) return;
    this.persistRevision();
    this.db.close();
  }

  private track(token: string, revision: number, bytes: number): void {
    this.held.set(token, { revision, bytes });
    this.heldBytes += bytes + ROW_OVERHEAD_BYTES;
  }

  /** Least recently used first, until within both bounds; `keep` stays (one document over the byte bound is kept rather than none). */
  private evict(keep: string | undefined): void {
    const { maxCustomers, maxBytes } = this.bounds;
    if (this.held.size <= maxCustomers && this.heldBytes <= maxBytes) return;
    const evict = this.db.transaction(() => {
      for (const [token, h] of this.held) {
        if (this.held.size <= maxCustomers && this.heldBytes <= maxBytes) break;
        if (token === keep) continue;
        this.deleteStmt.run(token);
        this.held.delete(token);
        this.heldBytes -= h.bytes + ROW_OVERHEAD_BYTES;
        this.evictedCount++;
      }
    });
    evict();
  }
}

function fileKind(db: Db): "empty" | "lazy" | "other" {
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all() as string[];
  if (tables.length === 0) return "empty";
  if (!tables.includes("lazy_meta")) return "other";
  const v = db.prepare("SELECT schema_version FROM lazy_meta WHERE id = 1").pluck().get() as number | undefined;
  return v === LAZY_SCHEMA_VERSION ? "lazy" : "other";
}

/** The store holds customer documents: no access for others (SQLite gives -wal and -shm the same mode). */
function ownerOnly(path: string): void {
  closeSync(openSync(path, "a", 0o660));
  chmodSync(path, 0o660);
}
