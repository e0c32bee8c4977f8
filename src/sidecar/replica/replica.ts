import { chmodSync, closeSync, existsSync, mkdirSync, openSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import Database, { type Database as Db, type Statement } from "better-sqlite3";
import { CatalogIndex } from "../../catalog/index.js";
import { InvalidArgumentError } from "../../errors/index.js";
import { Catalog } from "../../gen/proofgate/v1/catalog.js";
import type { Logger } from "../../observability/logger.js";
import { customerDigest } from "../../replication/subjects.js";
import { documentIsFor, type ReplicaRecord } from "./record.js";
import { ReplicaWriter, type WriteRow, type WriterSql } from "./writer-thread.js";

/** Bump when the schema changes incompatibly; an older file is then rebuilt from the stream. */
export const SCHEMA_VERSION = 3;

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
-- Keyed by the first 64 bits of HMAC-SHA-256(key, customer id), the customer's subject token: the rowid is
-- the key (no second B-tree, no customer id stored twice: the document's field 1 is the id), and
-- a tombstone, which names only the token, finds its row directly.
CREATE TABLE IF NOT EXISTS documents (
  k        INTEGER PRIMARY KEY,
  -- The stream sequence of the message this row came from.
  revision INTEGER NOT NULL,
  -- AccessDocument, protobuf encoding, exactly as published.
  document BLOB NOT NULL
);
-- A customer whose key is already taken by another customer (about one in 10^5 regions of 10M
-- customers ever has one): kept here, by id. Almost always empty.
CREATE TABLE IF NOT EXISTS spill (
  customer_id TEXT PRIMARY KEY,
  k           INTEGER NOT NULL,
  revision    INTEGER NOT NULL,
  document    BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS catalog (
  id       INTEGER PRIMARY KEY CHECK (id = 1),
  revision INTEGER NOT NULL,
  catalog  BLOB NOT NULL
);
-- For readers in other processes (the client's local mode): the wall-clock time (Unix ms) the
-- sidecar last confirmed the replica current, NULL when it has not since it started. With the
-- catalog's coherency window and stale policy it gives the sidecar's own staleness.
CREATE TABLE IF NOT EXISTS freshness (
  id            INTEGER PRIMARY KEY CHECK (id = 1),
  current_at_ms INTEGER
);
`;

const PAGE_SIZE = 8192;

const INIT_META = `INSERT OR IGNORE INTO meta (id, schema_version, applied_revision, stream_created) VALUES (1, ${SCHEMA_VERSION}, 0, NULL);`;

const WRITER_SQL: WriterSql = {
  pragmas: [
    "journal_mode = WAL",
    // A replica can always be rebuilt from the stream, and the revision commits with the rows:
    // losing the last transactions in a power cut only means reading them again.
    "synchronous = NORMAL",
    // Fewer, larger checkpoints while a bootstrap writes a million rows (the WAL may reach ~40 MB)...
    "wal_autocheckpoint = 5000",
    // ...but the WAL file is cut back after a checkpoint instead of keeping its largest size.
    "journal_size_limit = 4194304",
    "busy_timeout = 5000",
  ],
  current: "SELECT document FROM documents WHERE k = ?",
  upsert: "INSERT INTO documents (k, revision, document) VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE SET revision = excluded.revision, document = excluded.document",
  eraseKey: "DELETE FROM documents WHERE k = ?",
  spillUpsert:
    "INSERT INTO spill (customer_id, k, revision, document) VALUES (?, ?, ?, ?) " +
    "ON CONFLICT (customer_id) DO UPDATE SET revision = excluded.revision, document = excluded.document",
  spillCandidates: "SELECT customer_id FROM spill WHERE k = ?",
  spillErase: "DELETE FROM spill WHERE customer_id = ?",
  putCatalog: "INSERT INTO catalog (id, revision, catalog) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, catalog = excluded.catalog",
  setRevision: "UPDATE meta SET applied_revision = ? WHERE id = 1",
  setStreamCreated: "UPDATE meta SET stream_created = ? WHERE id = 1",
  setFreshness: "INSERT INTO freshness (id, current_at_ms) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET current_at_ms = excluded.current_at_ms",
  // DROP is proportional to pages, not rows: fast even for a million documents.
  reset: `DROP TABLE IF EXISTS documents; DROP TABLE IF EXISTS spill; DROP TABLE IF EXISTS catalog; DROP TABLE IF EXISTS meta; ${TABLES} ${INIT_META}`,
  schemaVersion: SCHEMA_VERSION,
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
  private readonly get: Statement<[bigint, string], [Buffer | null, Buffer | null]>;
  private readonly lookupStmt: Statement<[bigint, string], [number, Buffer | null, Buffer | null]>;
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
    // Set before the first table exists (no effect on an existing file): ~370-byte rows fill 8 KiB
    // pages better than 4 KiB ones (2% slack when packed instead of 9%), at one page per lookup still.
    db.pragma(`page_size = ${PAGE_SIZE}`);
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
    // The row under the customer's key, and the customer's spilled row (nearly always none): the
    // key's row is the customer's unless it names another customer.
    this.get = db
      .prepare<[bigint, string], [Buffer | null, Buffer | null]>("SELECT (SELECT document FROM documents WHERE k = ?), (SELECT document FROM spill WHERE customer_id = ?)")
      .raw();
    // One statement, so one snapshot: the revision the answer is evaluated at, exactly.
    this.lookupStmt = db
      .prepare<[bigint, string], [number, Buffer | null, Buffer | null]>(
        "SELECT (SELECT applied_revision FROM meta WHERE id = 1), (SELECT document FROM documents WHERE k = ?), (SELECT document FROM spill WHERE customer_id = ?)",
      )
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
    const row = this.get.get(customerKey(customerId), customerId);
    if (!row) return undefined;
    return pick(row[0], row[1], customerId) ?? undefined;
  }

  /**
   * The committed revision and a customer's encoded AccessDocument (null if none), read in one
   * statement so they agree: the hot path of every check. The revision can be ahead of
   * `revision`, which follows commits a moment later.
   */
  lookup(customerId: string): [revision: number, document: Buffer | null] {
    const row = this.lookupStmt.get(customerKey(customerId), customerId);
    if (!row) return [this.revisionValue, null];
    return [row[0], pick(row[1], row[2], customerId)];
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
    return (this.db.prepare("SELECT (SELECT count(*) FROM documents) + (SELECT count(*) FROM spill)").pluck().get() as number | undefined) ?? 0;
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
          rows.push([0, seq, record.customerId, offset, record.document.byteLength]);
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

  /** Records for readers in other processes when the replica was last confirmed current (wall-clock Unix ms; undefined: not since start). */
  async recordFreshness(currentAtMs: number | undefined): Promise<void> {
    await this.writer.write({ op: "freshness", currentAtMs: currentAtMs === undefined ? null : Math.round(currentAtMs) });
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

  /**
   * Fills an empty replica from a snapshot file (a replica file of the same schema, as written by
   * `snapshotTo`) in one transaction: its documents, catalog, revision and stream identity.
   * Rejects, leaving the replica empty, if the replica is not empty or the file is not a readable
   * snapshot of this schema.
   */
  async restore(file: string): Promise<{ revision: number; streamCreated: string | undefined }> {
    if (this.revisionValue > 0) throw new Error("a snapshot is only restored into an empty replica");
    const incarnation = this.incarnation;
    const state = await this.writer.request({ op: "restore", file });
    if (!state) throw new Error("restore reported nothing");
    if (incarnation === this.incarnation) {
      this.revisionValue = state.revision;
      this.streamCreatedValue = state.streamCreated ?? undefined;
      this.loadCatalog();
    }
    return { revision: state.revision, streamCreated: state.streamCreated ?? undefined };
  }

  /**
   * Writes a compact copy of the replica as committed once the writes queued before this call
   * are (`VACUUM INTO`: full pages, no WAL) to `file`, which must not exist.
   */
  async snapshotTo(file: string): Promise<{ revision: number; streamCreated: string | undefined }> {
    const state = await this.writer.request({ op: "snapshot", file });
    if (!state) throw new Error("snapshot reported nothing");
    return { revision: state.revision, streamCreated: state.streamCreated ?? undefined };
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

/** A customer's row key: the first 64 bits of its subject token (base64url HMAC-SHA-256), signed like a rowid. */
export function tokenKey(token: string): bigint {
  // 11 base64 characters carry 66 bits: the first 8 bytes.
  return Buffer.from(token.slice(0, 11), "base64url").readBigInt64BE(0);
}

/** `tokenKey(customerToken(customerId))`, without the base64 round trip: computed on every read. */
export function customerKey(customerId: string): bigint {
  return customerDigest(customerId).readBigInt64BE(0);
}

/** The key's row if it is this customer's, else the customer's spilled row. */
function pick(keyed: Buffer | null, spilled: Buffer | null, customerId: string): Buffer | null {
  if (keyed && documentIsFor(keyed, customerId)) return keyed;
  return spilled;
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

/** What a reader sees of the replica besides documents, read in one statement. */
export interface ReplicaState {
  readonly revision: number;
  /** When the sidecar last confirmed the replica current (wall-clock Unix ms); undefined: not since it started. */
  readonly currentAtMs: number | undefined;
  /** The revision of the stored catalog; 0 when there is none. */
  readonly catalogRevision: number;
}

/**
 * A read-only view of a sidecar's replica file from another process (the client's local mode).
 * It never writes the database: the connection is opened read-only. In WAL mode SQLite readers
 * still record their read marks in the `-shm` file, so that file (or its directory) should be
 * writable by the reader; when it is not, SQLite falls back to a slower read-only-shm mode.
 *
 * The reads mirror `Replica`'s: the same statements over the same schema, so a change of format
 * changes both here.
 */
export class ReplicaReader {
  private readonly lookupStmt: Statement<[bigint, string], [number, number | null, Buffer | null, number | null, Buffer | null]>;
  private readonly stateStmt: Statement<[], [number, number | null, number | null]>;
  private readonly catalogStmt: Statement<[], Buffer>;
  private readonly dataVersionStmt: Statement<[], number>;

  private constructor(
    readonly path: string,
    private readonly db: Db,
  ) {
    const version = readSchemaVersion(db);
    if (version !== SCHEMA_VERSION) throw new Error(`replica schema version ${version ?? "none"}, this reader reads ${SCHEMA_VERSION}`);
    // One statement, so one snapshot: the revision, and the document with the revision that wrote it.
    // The row under the customer's key and the customer's spilled row, as the sidecar reads them.
    this.lookupStmt = db
      .prepare<[bigint, string], [number, number | null, Buffer | null, number | null, Buffer | null]>(
        `SELECT (SELECT applied_revision FROM meta WHERE id = 1), d.revision, d.document, s.revision, s.document
           FROM (SELECT 1) LEFT JOIN documents d ON d.k = ? LEFT JOIN spill s ON s.customer_id = ?`,
      )
      .raw();
    this.stateStmt = db
      .prepare<[], [number, number | null, number | null]>(
        "SELECT (SELECT applied_revision FROM meta WHERE id = 1), (SELECT current_at_ms FROM freshness WHERE id = 1), (SELECT revision FROM catalog WHERE id = 1)",
      )
      .raw();
    this.catalogStmt = db.prepare<[], Buffer>("SELECT catalog FROM catalog WHERE id = 1").pluck();
    this.dataVersionStmt = db.prepare<[], number>("PRAGMA data_version").pluck();
  }

  /** Opens an existing replica file read-only; throws if it is missing, unreadable or of another schema version. */
  static open(path: string): ReplicaReader {
    const db = new Database(path, { readonly: true, fileMustExist: true });
    try {
      return new ReplicaReader(path, db);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /** Changes whenever another connection (the sidecar) commits: a cheap "has anything changed?". */
  dataVersion(): number {
    return this.dataVersionStmt.get() ?? 0;
  }

  state(): ReplicaState {
    const [revision, currentAt, catalogRevision] = this.stateStmt.get() ?? [0, null, null];
    return { revision, currentAtMs: currentAt ?? undefined, catalogRevision: catalogRevision ?? 0 };
  }

  /** The stored catalog, decoded; undefined when there is none. */
  catalog(): Catalog | undefined {
    const stored = this.catalogStmt.get();
    return stored ? Catalog.decode(stored) : undefined;
  }

  /**
   * The applied revision, and a customer's document with the revision that last wrote it (nulls
   * if none), in one statement so they agree.
   */
  lookup(customerId: string): [revision: number, documentRevision: number | null, document: Buffer | null] {
    const row = this.lookupStmt.get(customerKey(customerId), customerId);
    if (!row) return [0, null, null];
    const [revision, keyedRevision, keyed, spilledRevision, spilled] = row;
    if (keyed && documentIsFor(keyed, customerId)) return [revision, keyedRevision, keyed];
    return [revision, spilled ? spilledRevision : null, spilled];
  }

  /** The encoded AccessDocument of a customer, or undefined. */
  document(customerId: string): Buffer | undefined {
    return this.lookup(customerId)[2] ?? undefined;
  }

  /** Runs `fn` on one snapshot of the file (a read transaction). */
  snapshot<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

/**
 * The replica holds customer ids: no access for others (SQLite gives -wal and -shm the same mode).
 * The group keeps read and write so that an application container of the same pod (fsGroup) can
 * read it in the client's local mode, which also writes read marks to -shm.
 */
function ownerOnly(path: string): void {
  closeSync(openSync(path, "a", 0o660));
  chmodSync(path, 0o660);
}
