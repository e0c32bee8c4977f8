import { chmodSync, closeSync, existsSync, mkdirSync, openSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import Database, { type Database as Db, type Statement } from "better-sqlite3";
import { CatalogIndex } from "../../catalog/index.js";
import { InvalidArgumentError } from "../../errors/index.js";
import { Catalog } from "../../gen/proofgate/v1/catalog.js";
import type { Logger } from "../../observability/logger.js";
import type { ReplicaRecord } from "./record.js";
import { ReplicaWriter, type WriteRow, type WriterSql } from "./writer-thread.js";

/** Bump when the schema changes incompatibly; an older file is then rebuilt from the stream. */
export const SCHEMA_VERSION = 2;

const TABLES = `
CREATE TABLE IF NOT EXISTS meta (
  id               INTEGER PRIMARY KEY CHECK (id = 1),
  schema_version   INTEGER NOT NULL,
  -- The PROOFGATE_STATE sequence of the last message applied: the replica's revision.
  applied_revision INTEGER NOT NULL,
  -- The stream's creation time when this replica started following it; a different value
  -- means the stream was recreated and the replica must be rebuilt.
  stream_created   TEXT
);
CREATE TABLE IF NOT EXISTS documents (
  customer_id TEXT PRIMARY KEY,
  -- The first 48 bits of the customer's subject token (SHA-256 of the id), so a tombstone, which
  -- names only the token, finds its row through a small integer index. Not unique: candidates
  -- are confirmed by hashing their customer_id.
  token_key   INTEGER NOT NULL,
  revision    INTEGER NOT NULL,
  -- AccessDocument, protobuf encoding, exactly as published.
  document    BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS documents_token_key ON documents (token_key);
CREATE TABLE IF NOT EXISTS catalog (
  id       INTEGER PRIMARY KEY CHECK (id = 1),
  revision INTEGER NOT NULL,
  catalog  BLOB NOT NULL
);
`;

const INIT_META = `INSERT OR IGNORE INTO meta (id, schema_version, applied_revision, stream_created) VALUES (1, ${SCHEMA_VERSION}, 0, NULL);`;

const WRITER_SQL: WriterSql = {
  pragmas: [
    "journal_mode = WAL",
    // A replica can always be rebuilt from the stream, and the revision commits with the rows:
    // losing the last transactions in a power cut only means reading them again.
    "synchronous = NORMAL",
    // Fewer, larger checkpoints while a bootstrap writes a million rows (the WAL may reach ~40 MB).
    "wal_autocheckpoint = 10000",
    "busy_timeout = 5000",
  ],
  upsert:
    "INSERT INTO documents (customer_id, token_key, revision, document) VALUES (?, ?, ?, ?) " +
    "ON CONFLICT (customer_id) DO UPDATE SET token_key = excluded.token_key, revision = excluded.revision, document = excluded.document",
  candidates: "SELECT customer_id FROM documents WHERE token_key = ?",
  erase: "DELETE FROM documents WHERE customer_id = ?",
  putCatalog: "INSERT INTO catalog (id, revision, catalog) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, catalog = excluded.catalog",
  setRevision: "UPDATE meta SET applied_revision = ? WHERE id = 1",
  setStreamCreated: "UPDATE meta SET stream_created = ? WHERE id = 1",
  // DROP is proportional to pages, not rows: fast even for a million documents.
  reset: `DROP TABLE IF EXISTS documents; DROP TABLE IF EXISTS catalog; DROP TABLE IF EXISTS meta; ${TABLES} ${INIT_META}`,
};

export interface ApplyCounts {
  documents: number;
  erased: number;
  catalogs: number;
  invalid: number;
}

/**
 * The sidecar's SQLite replica: every access document, the catalog and the applied revision.
 *
 * Reads (the hot path of every check) use a connection on the calling thread: one prepared point
 * lookup. Writes go to a writer thread with its own connection (see writer-thread.ts), in order,
 * each resolved when committed; the revision, stream identity and catalog held here follow the
 * commits. The catalog is held decoded as a `CatalogIndex`, replaced in one assignment.
 */
export class Replica {
  private readonly db: Db;
  private readonly get: Statement<[string], Buffer>;
  private readonly lookupStmt: Statement<[string], [number, Buffer | null]>;
  private readonly revisionStmt: Statement<[], number>;
  private readonly writer: ReplicaWriter;
  private revisionValue = 0;
  private streamCreatedValue: string | undefined;
  private catalogIndex = CatalogIndex.empty();
  private catalogLoaded = false;
  /** Bumped by `reset`: commits of writes sent before it no longer describe this replica. */
  private incarnation = 0;
  /** True when the file held a replica (revision > 0) when opened: a warm start. */
  readonly warm: boolean;

  private constructor(
    readonly path: string,
    private readonly logger: Logger,
  ) {
    if (path === "" || path === ":memory:") throw new InvalidArgumentError("replica", "must be a file path");
    mkdirSync(dirname(path), { recursive: true });
    ownerOnly(path);
    let db = new Database(path);
    const version = readSchemaVersion(db);
    if (version !== undefined && version !== SCHEMA_VERSION) {
      this.logger.warn({ found: version, expected: SCHEMA_VERSION }, "replica schema changed; rebuilding it from the stream");
      db.close();
      removeDatabaseFiles(path);
      ownerOnly(path);
      db = new Database(path);
    }
    db.pragma("journal_mode = WAL");
    db.exec(TABLES + INIT_META);
    const meta = db.prepare("SELECT applied_revision, stream_created FROM meta WHERE id = 1").get() as {
      applied_revision: number;
      stream_created: string | null;
    };
    this.db = db;
    this.revisionValue = meta.applied_revision;
    this.streamCreatedValue = meta.stream_created ?? undefined;
    this.warm = this.revisionValue > 0;
    this.get = db.prepare<[string], Buffer>("SELECT document FROM documents WHERE customer_id = ?").pluck();
    // One statement, so one snapshot: the revision the answer is evaluated at, exactly.
    this.lookupStmt = db
      .prepare<[string], [number, Buffer | null]>("SELECT (SELECT applied_revision FROM meta WHERE id = 1), (SELECT document FROM documents WHERE customer_id = ?)")
      .raw();
    this.revisionStmt = db.prepare<[], number>("SELECT applied_revision FROM meta WHERE id = 1").pluck();
    this.loadCatalog();
    this.writer = ReplicaWriter.start(path, WRITER_SQL);
  }

  /** Opens (or creates) the replica file and starts its writer thread. */
  static open(path: string, logger: Logger): Replica {
    return new Replica(path, logger);
  }

  get revision(): number {
    return this.revisionValue;
  }

  get streamCreated(): string | undefined {
    return this.streamCreatedValue;
  }

  get catalog(): CatalogIndex {
    return this.catalogIndex;
  }

  get hasCatalog(): boolean {
    return this.catalogLoaded;
  }

  /** The encoded AccessDocument of a customer, or undefined. The hot path of every check. */
  document(customerId: string): Buffer | undefined {
    return this.get.get(customerId);
  }

  /**
   * The committed revision and a customer's encoded AccessDocument (null if none), read in one
   * statement so they agree: the hot path of every check. The revision can be ahead of
   * `revision`, which follows commits a moment later.
   */
  lookup(customerId: string): [revision: number, document: Buffer | null] {
    return this.lookupStmt.get(customerId) ?? [this.revisionValue, null];
  }

  /** The committed revision as the reading connection sees it (inside `snapshot`, the snapshot's). */
  readRevision(): number {
    return this.revisionStmt.get() ?? this.revisionValue;
  }

  /** Runs `fn` on one snapshot of the replica (a read transaction): for answers that must agree. */
  snapshot<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  documentCount(): number {
    return (this.db.prepare("SELECT count(*) FROM documents").pluck().get() as number | undefined) ?? 0;
  }

  /**
   * Applies records in one transaction on the writer thread, with `revision` (the stream
   * sequence of the last one), so the file never holds a revision whose changes it lacks.
   * Invalid records are skipped (the caller logs them). Resolves once committed, after which
   * `revision` (and the catalog, if the batch had one) reflect it. Batches commit in call order.
   */
  async apply(records: readonly { seq: number; record: ReplicaRecord }[], revision: number): Promise<ApplyCounts> {
    const counts: ApplyCounts = { documents: 0, erased: 0, catalogs: 0, invalid: 0 };
    let size = 0;
    for (const { record } of records) {
      if (record.kind === "document") size += record.document.byteLength;
      else if (record.kind === "catalog") size += record.bytes.byteLength;
    }
    // One buffer for every payload, handed to the thread without a copy.
    const blob = new Uint8Array(size);
    const rows: WriteRow[] = [];
    let offset = 0;
    let catalog: Catalog | undefined;
    for (const { seq, record } of records) {
      switch (record.kind) {
        case "document":
          blob.set(record.document, offset);
          rows.push([0, seq, record.customerId, tokenKey(record.token), offset, record.document.byteLength]);
          offset += record.document.byteLength;
          counts.documents++;
          break;
        case "erased":
          rows.push([1, seq, record.token, tokenKey(record.token)]);
          counts.erased++;
          break;
        case "catalog":
          blob.set(record.bytes, offset);
          rows.push([2, seq, offset, record.bytes.byteLength]);
          offset += record.bytes.byteLength;
          catalog = record.catalog;
          counts.catalogs++;
          break;
        case "invalid":
          counts.invalid++;
          break;
      }
    }
    const incarnation = this.incarnation;
    await this.writer.write({ op: "apply", rows, blob, revision: Math.max(revision, this.revisionValue) });
    if (incarnation !== this.incarnation) return counts;
    if (revision > this.revisionValue) this.revisionValue = revision;
    if (catalog) this.swapCatalog(catalog);
    return counts;
  }

  /**
   * Moves the revision forward with no record: the stream was confirmed to hold nothing more
   * for this replica up to `revision` (the messages in between were purged).
   */
  async advanceRevision(revision: number): Promise<void> {
    if (revision <= this.revisionValue) return;
    const incarnation = this.incarnation;
    await this.writer.write({ op: "advance", revision });
    if (incarnation === this.incarnation && revision > this.revisionValue) this.revisionValue = revision;
  }

  /** Binds the replica to a stream incarnation (its creation time). */
  async setStreamCreated(created: string): Promise<void> {
    await this.writer.write({ op: "streamCreated", created });
    this.streamCreatedValue = created;
  }

  /**
   * Empties the replica (documents, catalog, revision, stream identity): used when the stream
   * cannot be resumed. From the call on, reads and `revision` describe an empty replica once the
   * writes queued before it have committed.
   */
  async reset(): Promise<void> {
    this.incarnation++;
    const incarnation = this.incarnation;
    await this.writer.write({ op: "reset" });
    if (incarnation !== this.incarnation) return;
    this.revisionValue = 0;
    this.streamCreatedValue = undefined;
    this.catalogIndex = CatalogIndex.empty();
    this.catalogLoaded = false;
  }

  /** Lets queued writes commit, then closes both connections. */
  async close(): Promise<void> {
    await this.writer.close();
    if (this.db.open) this.db.close();
  }

  private loadCatalog(): void {
    const stored = this.db.prepare("SELECT catalog FROM catalog WHERE id = 1").pluck().get() as Buffer | undefined;
    if (!stored) return;
    try {
      this.swapCatalog(Catalog.decode(stored));
    } catch (err) {
      this.logger.error({ err }, "stored catalog is undecodable; waiting for the next one from the stream");
    }
  }

  private swapCatalog(catalog: Catalog): void {
    this.catalogIndex = CatalogIndex.from(catalog);
    this.catalogLoaded = true;
  }
}

/** The first 48 bits of a base64url SHA-256 token, as a safe integer. */
export function tokenKey(token: string): number {
  return Buffer.from(token.slice(0, 8), "base64url").readIntBE(0, 6);
}

function readSchemaVersion(db: Db): number | undefined {
  const table = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'").get();
  if (!table) return undefined;
  const row = db.prepare("SELECT schema_version FROM meta WHERE id = 1").get() as { schema_version: number } | undefined;
  return row?.schema_version;
}

function removeDatabaseFiles(path: string): void {
  for (const suffix of ["", "-wal", "-shm", "-journal"]) {
    const file = path + suffix;
    if (existsSync(file)) rmSync(file, { force: true });
  }
}

/** The replica holds customer ids: readable by its owner only (SQLite gives -wal and -shm the same mode). */
function ownerOnly(path: string): void {
  closeSync(openSync(path, "a", 0o600));
  chmodSync(path, 0o600);
}
