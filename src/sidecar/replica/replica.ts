import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname } from "node:path";
import Database, { type Database as Db, type Statement } from "better-sqlite3";
import { CatalogIndex } from "../../catalog/index.js";
import { errorMessage, InvalidArgumentError, UnavailableError } from "../../errors/index.js";
import { Catalog } from "../../gen/proofgate/v1/catalog.js";
import type { Logger } from "../../observability/logger.js";
import { customerDigest } from "../../replication/subjects.js";
import { documentIsFor, type StateRecordView } from "../../replication/state-record.js";
import { ReplicaWriter, ReplicaWriteError, type WriteRow, type WriterSql } from "./writer-thread.js";

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
  private db!: Db;
  private get!: Statement<[bigint, string], [Buffer | null, Buffer | null]>;
  private lookupStmt!: Statement<[bigint, string], [number, Buffer | null, Buffer | null]>;
  private revisionStmt!: Statement<[], number>;
  private writer!: ReplicaWriter;
  private revisionValue = 0;
  private streamCreatedValue: string | undefined;
  private catalogIndex = CatalogIndex.empty();
  private catalogLoaded = false;
  /** Bumped by `reset`: commits of writes sent before it no longer describe this replica. */
  private incarnation = 0;
  /** Set while the file is known corrupt: reads fail with UNAVAILABLE until `recover`. */
  private corruption: string | undefined;
  private corruptionListener: ((problem: string) => void) | undefined;
  /** True when the file held a replica (revision > 0) when opened: a warm start. */
  readonly warm: boolean;
  /** Why the file found at open was corrupt and set aside (the replica then starts empty). */
  readonly setAsideAtOpen: string | undefined;

  private constructor(
    readonly path: string,
    private readonly logger: Logger,
  ) {
    if (path === "" || path === ":memory:") throw new InvalidArgumentError("replica", "must be a file path");
    mkdirSync(dirname(path), { recursive: true });
    this.setAsideAtOpen = this.load();
    this.warm = this.revisionValue > 0;
  }

  /**
   * Opens the file (creating it if needed) and starts a writer thread. A file that is not a
   * readable SQLite database (bad header, truncated, SQLITE_NOTADB or SQLITE_CORRUPT on the first
   * reads) is set aside and replaced by an empty replica: returns why. One of another schema
   * version is deleted.
   */
  private load(): string | undefined {
    const opened = openReplicaFile(this.path, this.logger);
    const db = opened.db;
    const meta = db.prepare("SELECT applied_revision, stream_created FROM meta WHERE id = 1").get() as {
      applied_revision: number;
      stream_created: string | null;
    };
    this.db = db;
    this.revisionValue = meta.applied_revision;
    this.streamCreatedValue = meta.stream_created ?? undefined;
    this.catalogIndex = CatalogIndex.empty();
    this.catalogLoaded = false;
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
    this.writer = ReplicaWriter.start(this.path, WRITER_SQL);
    return opened.setAside;
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
    this.usable();
    try {
      const row = this.get.get(customerKey(customerId), customerId);
      if (!row) return undefined;
      return pick(row[0], row[1], customerId) ?? undefined;
    } catch (err) {
      throw this.readFailed(err);
    }
  }

  /**
   * The committed revision and a customer's encoded AccessDocument (null if none), read in one
   * statement so they agree: the hot path of every check. The revision can be ahead of
   * `revision`, which follows commits a moment later.
   */
  lookup(customerId: string): [revision: number, document: Buffer | null] {
    this.usable();
    try {
      const row = this.lookupStmt.get(customerKey(customerId), customerId);
      if (!row) return [this.revisionValue, null];
      return [row[0], pick(row[1], row[2], customerId)];
    } catch (err) {
      throw this.readFailed(err);
    }
  }

  /** The committed revision as the reading connection sees it (inside `snapshot`, the snapshot's). */
  readRevision(): number {
    this.usable();
    try {
      return this.revisionStmt.get() ?? this.revisionValue;
    } catch (err) {
      throw this.readFailed(err);
    }
  }

  /** Runs `fn` on one snapshot of the replica (a read transaction): for answers that must agree. */
  snapshot<T>(fn: () => T): T {
    this.usable();
    try {
      return this.db.transaction(fn)();
    } catch (err) {
      throw this.readFailed(err);
    }
  }

  documentCount(): number {
    this.usable();
    try {
      return (this.db.prepare("SELECT (SELECT count(*) FROM documents) + (SELECT count(*) FROM spill)").pluck().get() as number | undefined) ?? 0;
    } catch (err) {
      throw this.readFailed(err);
    }
  }

  // ---------------------------------------------------------------- corruption

  /** Called once when the file is found corrupt (at run time, or by `verify`); the listener rebuilds. */
  onCorruption(listener: (problem: string) => void): void {
    this.corruptionListener = listener;
  }

  /**
   * Checks the file's structure on the writer thread (`PRAGMA quick_check`: every page and
   * index, not the payloads), off the event loop so a warm start answers at once. Resolves true
   * if it is sound; a corrupt file is reported to the corruption listener.
   */
  async verify(): Promise<boolean> {
    let problems: readonly string[];
    try {
      problems = await this.writer.quickCheck();
    } catch (err) {
      if (!this.noteCorruption(err, "checking the file")) throw err;
      return false;
    }
    if (problems.length === 1 && problems[0] === "ok") return true;
    this.markCorrupt(`quick_check: ${problems.slice(0, 3).join("; ")}`);
    return false;
  }

  /**
   * Sets the corrupt file aside (as `<path>.corrupt`, replacing an older one) and starts over with
   * an empty replica at the same path, to be rebuilt from the stream.
   */
  async recover(): Promise<void> {
    this.incarnation++;
    // Writes queued behind the corruption fail fast; only then is the thread's connection closed.
    await this.writer.close();
    if (this.db.open) this.db.close();
    setAside(this.path, this.logger, this.corruption ?? "corrupt");
    this.load();
    this.corruption = undefined;
  }

  /** True (and the replica marked corrupt) if `err` says the file is corrupt. */
  noteCorruption(err: unknown, doing: string): boolean {
    const code = corruptionCode(err);
    if (code === undefined) return false;
    this.markCorrupt(`${code} ${doing}`);
    return true;
  }

  private usable(): void {
    if (this.corruption !== undefined) throw new UnavailableError("the replica file is corrupt; the sidecar is rebuilding it from the stream");
  }

  private readFailed(err: unknown): unknown {
    return this.noteCorruption(err, "reading") ? new UnavailableError("the replica file is corrupt; the sidecar is rebuilding it from the stream", { cause: err }) : err;
  }

  private markCorrupt(problem: string): void {
    if (this.corruption !== undefined) return;
    this.corruption = problem;
    this.logger.error({ problem, replica: this.path }, "the replica file is corrupt; setting it aside and rebuilding it from the stream");
    this.corruptionListener?.(problem);
  }

  // ---------------------------------------------------------------- rebuilding beside

  /**
   * Opens an empty replica at `path`, deleting whatever is there: a replica being rebuilt beside
   * the one that is served, until it replaces it (`adopt`).
   */
  static openEmpty(path: string, logger: Logger): Replica {
    removeDatabaseFiles(path);
    return new Replica(path, logger);
  }

  /**
   * Replaces this replica's contents by `next`'s (a replica rebuilt beside it): both finish their
   * writes, `next`'s file is renamed over this one's, and this object reopens it. Readers keep
   * this object and see the old contents until the moment of the switch, then the new ones; the
   * switch itself is synchronous, so no read sees neither. `next` is closed.
   */
  async adopt(next: Replica): Promise<void> {
    await next.writer.close();
    // The last connection to close checkpoints its WAL into the file and deletes it.
    if (next.db.open) next.db.close();
    await this.replaceFile(next.path);
  }

  /** Closes this replica's connections, renames `file` over its file and reopens it. */
  private async replaceFile(file: string): Promise<void> {
    await this.writer.close();
    this.incarnation++;
    if (this.db.open) this.db.close();
    for (const suffix of ["-wal", "-shm", "-journal"]) rmSync(this.path + suffix, { force: true });
    renameSync(file, this.path);
    for (const suffix of ["-wal", "-shm", "-journal"]) rmSync(file + suffix, { force: true });
    this.load();
  }

  /** Closes and deletes a replica that will not be used (a rebuild given up). */
  async discard(): Promise<void> {
    await this.close().catch(() => undefined);
    removeDatabaseFiles(this.path);
  }

  /**
   * Applies records in one transaction on the writer thread, with `revision` (the stream
   * sequence of the last one), so the file never holds a revision whose changes it lacks.
   * Invalid records are skipped (the caller logs them). Resolves once committed, after which
   * `revision` (and the catalog, if the batch had one) reflect it. Batches commit in call order.
   */
  async apply(records: readonly { seq: number; record: StateRecordView }[], revision: number): Promise<ApplyCounts> {
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
          rows.push({ kind: "document", seq, customerId: record.customerId, offset, length: record.document.byteLength });
          offset += record.document.byteLength;
          counts.documents++;
          break;
        case "erased":
          rows.push({ kind: "erased", seq, token: record.token, key: tokenKey(record.token) });
          counts.erased++;
          break;
        case "catalog":
          blob.set(record.bytes, offset);
          rows.push({ kind: "catalog", seq, offset, length: record.bytes.byteLength });
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
    try {
      await this.writer.write({ op: "apply", rows, blob, revision: Math.max(revision, this.revisionValue) });
    } catch (err) {
      if (incarnation === this.incarnation) this.noteCorruption(err, "writing");
      throw err;
    }
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
   * Makes a snapshot file (a replica file of this schema, as written by `snapshotTo`) this empty
   * replica: the file is checked to be one, renamed over this replica's file and reopened, so a
   * restore costs a rename, not a copy of every document. Rejects, leaving the
   * replica empty and the file where it is, if the replica is not empty or the file is not a
   * readable snapshot of this schema. The file's integrity is the caller's to prove (its SHA-256)
   * and its structure the producer's (`snapshotTo` checks the copy).
   */
  async restore(file: string): Promise<{ revision: number; streamCreated: string | undefined }> {
    if (this.revisionValue > 0) throw new Error("a snapshot is only restored into an empty replica");
    const problem = snapshotFileProblem(file);
    if (problem !== undefined) throw new Error(`not a replica snapshot: ${problem}`);
    // Nothing is written to the file before it is this replica's: a write there would be synced,
    // flushing gigabytes just downloaded on the critical path. Writes here commit to the WAL.
    await this.replaceFile(file);
    // One written by an older producer may carry that process's freshness: never this sidecar's.
    await this.recordFreshness(undefined);
    return { revision: this.revisionValue, streamCreated: this.streamCreatedValue };
  }

  /**
   * Writes a compact copy of the replica as committed once the writes queued before this call
   * are (`VACUUM INTO`: full pages, no WAL) to `file`, which must not exist; the copy passes
   * `quick_check` and records no freshness, so a sidecar can adopt it as it is (`restore`).
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

/** The SQLite error code if `err` says the database file is corrupt or not a database. */
export function corruptionCode(err: unknown): string | undefined {
  const code = err instanceof Database.SqliteError ? err.code : err instanceof ReplicaWriteError ? err.code : undefined;
  if (code === undefined) return undefined;
  return code === "SQLITE_NOTADB" || code.startsWith("SQLITE_CORRUPT") || code === "SQLITE_IOERR_SHORT_READ" ? code : undefined;
}

const SQLITE_HEADER = Buffer.from("SQLite format 3\0", "latin1");

/** Why the file cannot be a SQLite database, judged from its first bytes; undefined if it may be. */
function headerProblem(path: string): string | undefined {
  if (!existsSync(path)) return undefined;
  const size = statSync(path).size;
  // An empty file is an empty database.
  if (size === 0) return undefined;
  if (size < 100) return `truncated: ${size} bytes, shorter than a SQLite header`;
  const header = Buffer.alloc(SQLITE_HEADER.length);
  const fd = openSync(path, "r");
  try {
    readSync(fd, header, 0, header.length, 0);
  } finally {
    closeSync(fd);
  }
  return header.equals(SQLITE_HEADER) ? undefined : "not a SQLite file (bad header)";
}

/** Why `file` cannot be adopted as a replica of this schema; undefined if it can. */
function snapshotFileProblem(file: string): string | undefined {
  if (!existsSync(file)) return "no such file";
  const header = headerProblem(file);
  if (header !== undefined) return header;
  try {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    try {
      const version = readSchemaVersion(db);
      if (version !== SCHEMA_VERSION) return `it has replica schema ${version ?? "(none)"}, this sidecar ${SCHEMA_VERSION}`;
      const meta = db.prepare("SELECT applied_revision FROM meta WHERE id = 1").pluck().get() as number | undefined;
      if (!(typeof meta === "number" && meta > 0)) return "it holds no revision";
    } finally {
      db.close();
    }
  } catch (err) {
    return errorMessage(err);
  }
  return undefined;
}

/**
 * Opens the replica file with its tables in place. A file that is not a usable database is set
 * aside and replaced by an empty one; the reason is returned.
 */
function openReplicaFile(path: string, logger: Logger): { db: Db; setAside?: string } {
  let problem = headerProblem(path);
  if (problem === undefined) {
    let db: Db | undefined;
    try {
      ownerOnly(path);
      db = new Database(path);
      const version = readSchemaVersion(db);
      if (version !== undefined && version !== SCHEMA_VERSION) {
        logger.warn({ found: version, expected: SCHEMA_VERSION }, "replica schema changed; rebuilding it from the stream");
        db.close();
        removeDatabaseFiles(path);
        return { db: createTables(path) };
      }
      prepareTables(db);
      return { db };
    } catch (err) {
      if (db?.open) db.close();
      const code = corruptionCode(err);
      if (code === undefined) throw err;
      problem = `${code}: ${errorMessage(err)}`;
    }
  }
  logger.error({ problem, replica: path }, "the replica file is corrupt; setting it aside and rebuilding it from the stream");
  setAside(path, logger, problem);
  return { db: createTables(path), setAside: problem };
}

function createTables(path: string): Db {
  ownerOnly(path);
  const db = new Database(path);
  prepareTables(db);
  return db;
}

function prepareTables(db: Db): void {
  // Set before the first table exists (no effect on an existing file): ~370-byte rows fill 8 KiB
  // pages better than 4 KiB ones (2% slack when packed instead of 9%), at one page per lookup still.
  db.pragma(`page_size = ${PAGE_SIZE}`);
  db.pragma("journal_mode = WAL");
  db.exec(TABLES + INIT_META);
}

/** Keeps a corrupt file for inspection as `<path>.corrupt` (one: the newest), and its WAL is dropped. */
function setAside(path: string, logger: Logger, problem: string): void {
  try {
    if (existsSync(path)) renameSync(path, `${path}.corrupt`);
  } catch (err) {
    logger.warn({ err: errorMessage(err), problem }, "cannot keep the corrupt replica file; deleting it");
  }
  removeDatabaseFiles(path);
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
