import { existsSync, mkdirSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import Database, { type Database as Db, type Statement } from "better-sqlite3";
import { CatalogIndex } from "../../catalog/index.js";
import { Catalog } from "../../gen/proofgate/v1/catalog.js";
import type { Logger } from "../../observability/logger.js";
import type { ReplicaRecord } from "./record.js";

/** Bump when the schema changes incompatibly; an older file is then rebuilt from the stream. */
export const SCHEMA_VERSION = 1;

const SCHEMA = `
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
  customer_id TEXT NOT NULL UNIQUE,
  -- customerToken(customer_id): the subject token, what tombstones name.
  token       TEXT NOT NULL,
  revision    INTEGER NOT NULL,
  -- AccessDocument, protobuf encoding, exactly as published.
  document    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_token ON documents (token);
CREATE TABLE IF NOT EXISTS catalog (
  id       INTEGER PRIMARY KEY CHECK (id = 1),
  revision INTEGER NOT NULL,
  catalog  BLOB NOT NULL
);
`;

export interface ApplyCounts {
  documents: number;
  erased: number;
  catalogs: number;
  invalid: number;
}

interface Statements {
  get: Statement<[string], Buffer>;
  upsert: Statement<[string, string, number, Buffer]>;
  erase: Statement<[string]>;
  putCatalog: Statement<[number, Buffer]>;
  setRevision: Statement<[number]>;
}

/**
 * The sidecar's SQLite replica: every access document, the catalog and the applied revision.
 * One connection on the event loop; writes are short transactions (see `apply`), reads are one
 * prepared point lookup. The catalog is also held decoded as a `CatalogIndex`, replaced in one
 * assignment when a new one is applied.
 */
export class Replica {
  private db!: Db;
  private stmts!: Statements;
  private revisionValue = 0;
  private streamCreatedValue: string | undefined;
  private catalogIndex = CatalogIndex.empty();
  private catalogLoaded = false;
  /** True when the file held a replica (revision > 0) when opened: a warm start. */
  readonly warm: boolean;

  private constructor(
    readonly path: string,
    private readonly logger: Logger,
  ) {
    this.open();
    this.warm = this.revisionValue > 0;
  }

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
    return this.stmts.get.get(customerId);
  }

  documentCount(): number {
    return (this.db.prepare("SELECT count(*) FROM documents").pluck().get() as number | undefined) ?? 0;
  }

  /**
   * Applies records in one transaction and records `revision` (the stream sequence of the last
   * one) with them, so the file never holds a revision whose changes it lacks. Invalid records
   * are skipped (the caller logs them). Returns what was applied; a catalog in the batch is
   * swapped in after the commit.
   */
  apply(records: readonly { seq: number; record: ReplicaRecord }[], revision: number): ApplyCounts {
    const counts: ApplyCounts = { documents: 0, erased: 0, catalogs: 0, invalid: 0 };
    let catalog: Catalog | undefined;
    const { upsert, erase, putCatalog, setRevision } = this.stmts;
    this.db.transaction(() => {
      for (const { seq, record } of records) {
        switch (record.kind) {
          case "document":
            upsert.run(record.customerId, record.token, seq, record.document);
            counts.documents++;
            break;
          case "erased":
            erase.run(record.token);
            counts.erased++;
            break;
          case "catalog":
            putCatalog.run(seq, record.bytes);
            catalog = record.catalog;
            counts.catalogs++;
            break;
          case "invalid":
            counts.invalid++;
            break;
        }
      }
      if (revision > this.revisionValue) setRevision.run(revision);
    })();
    if (revision > this.revisionValue) this.revisionValue = revision;
    if (catalog) this.swapCatalog(catalog);
    return counts;
  }

  /**
   * Moves the revision forward with no record: the stream was confirmed to hold nothing more
   * for this replica up to `revision` (the messages in between were purged, e.g. after an erasure).
   */
  advanceRevision(revision: number): void {
    if (revision <= this.revisionValue) return;
    this.stmts.setRevision.run(revision);
    this.revisionValue = revision;
  }

  /** Binds the replica to a stream incarnation (its creation time). */
  setStreamCreated(created: string): void {
    this.db.prepare("UPDATE meta SET stream_created = ? WHERE id = 1").run(created);
    this.streamCreatedValue = created;
  }

  /**
   * Drops everything (the file and its WAL) and starts an empty replica: used when the stream
   * cannot be resumed. Deleting the files is O(1), unlike deleting a million rows.
   */
  reset(): void {
    this.db.close();
    removeDatabaseFiles(this.path);
    this.catalogIndex = CatalogIndex.empty();
    this.catalogLoaded = false;
    this.open();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  private open(): void {
    if (this.path !== ":memory:") mkdirSync(dirname(this.path), { recursive: true });
    let db = new Database(this.path);
    const version = readSchemaVersion(db);
    if (version !== undefined && version !== SCHEMA_VERSION) {
      this.logger.warn({ found: version, expected: SCHEMA_VERSION }, "replica schema changed; rebuilding it from the stream");
      db.close();
      removeDatabaseFiles(this.path);
      db = new Database(this.path);
    }
    db.pragma("journal_mode = WAL");
    // A replica can always be rebuilt from the stream, and the revision commits with the rows:
    // losing the last transactions in a power cut only means re-reading them.
    db.pragma("synchronous = NORMAL");
    db.exec(SCHEMA);
    db.prepare("INSERT OR IGNORE INTO meta (id, schema_version, applied_revision, stream_created) VALUES (1, ?, 0, NULL)").run(SCHEMA_VERSION);
    const meta = db.prepare("SELECT applied_revision, stream_created FROM meta WHERE id = 1").get() as {
      applied_revision: number;
      stream_created: string | null;
    };
    this.db = db;
    this.revisionValue = meta.applied_revision;
    this.streamCreatedValue = meta.stream_created ?? undefined;
    this.stmts = {
      get: db.prepare<[string], Buffer>("SELECT document FROM documents WHERE customer_id = ?").pluck(),
      upsert: db.prepare(
        "INSERT INTO documents (customer_id, token, revision, document) VALUES (?, ?, ?, ?) " +
          "ON CONFLICT (customer_id) DO UPDATE SET token = excluded.token, revision = excluded.revision, document = excluded.document",
      ),
      erase: db.prepare("DELETE FROM documents WHERE token = ?"),
      putCatalog: db.prepare("INSERT INTO catalog (id, revision, catalog) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, catalog = excluded.catalog"),
      setRevision: db.prepare("UPDATE meta SET applied_revision = ? WHERE id = 1"),
    };
    const stored = db.prepare("SELECT catalog FROM catalog WHERE id = 1").pluck().get() as Buffer | undefined;
    if (stored) {
      try {
        this.swapCatalog(Catalog.decode(stored));
      } catch (err) {
        this.logger.error({ err }, "stored catalog is undecodable; waiting for the next one from the stream");
      }
    }
  }

  private swapCatalog(catalog: Catalog): void {
    this.catalogIndex = CatalogIndex.from(catalog);
    this.catalogLoaded = true;
  }
}

function readSchemaVersion(db: Db): number | undefined {
  const table = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'").get();
  if (!table) return undefined;
  const row = db.prepare("SELECT schema_version FROM meta WHERE id = 1").get() as { schema_version: number } | undefined;
  return row?.schema_version;
}

function removeDatabaseFiles(path: string): void {
  if (path === ":memory:") return;
  for (const suffix of ["", "-wal", "-shm", "-journal"]) {
    const file = path + suffix;
    if (existsSync(file)) rmSync(file, { force: true });
  }
}
