import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

/**
 * The replica's writes run in a worker thread with its own SQLite connection (WAL: one writer,
 * readers unaffected). better-sqlite3 is synchronous: inserts, commits and WAL checkpoints of a
 * bootstrap or a burst would otherwise stall every `Check` queued behind them on the event loop.
 * The main thread parses records, sends batches here in order and reads from its own connection.
 */

/**
 * A parsed record, as sent to the writer thread. Payloads (document and catalog bytes) are
 * ranges of the batch's `blob`, one buffer transferred without a copy.
 */
export type WriteRow =
  | { readonly kind: "document"; readonly seq: number; readonly customerId: string; readonly offset: number; readonly length: number }
  /** A tombstone: `key` is the token's row key. */
  | { readonly kind: "erased"; readonly seq: number; readonly token: string; readonly key: bigint }
  | { readonly kind: "catalog"; readonly seq: number; readonly offset: number; readonly length: number };

export type WriteOp =
  | { readonly op: "apply"; readonly rows: readonly WriteRow[]; readonly blob: Uint8Array; readonly revision: number }
  | { readonly op: "advance"; readonly revision: number }
  | { readonly op: "streamCreated"; readonly created: string }
  | { readonly op: "reset" }
  /** Replaces the (empty) replica's contents with a snapshot file's: see `Replica.restore`. */
  | { readonly op: "restore"; readonly file: string }
  /** Writes a compact copy of the replica, as committed now, to a new file. */
  | { readonly op: "snapshot"; readonly file: string }
  | { readonly op: "freshness"; readonly currentAtMs: number | null }
  /** `PRAGMA quick_check`: reports ["ok"] or the problems found. */
  | { readonly op: "quickCheck" }
  /** Closes the thread's connection (after everything sent before) and ends the thread. */
  | { readonly op: "close" };

/** What the main thread sends: one operation with the id its reply carries. */
export interface ThreadRequest {
  readonly id: number;
  readonly op: WriteOp;
}

/** What the thread answers, once per request, in order. */
export type ThreadReply =
  | { readonly id: number; readonly ok: true; readonly result?: SnapshotState | readonly string[] }
  | { readonly id: number; readonly ok: false; readonly error: string; readonly code?: string };

/** What "restore" and "snapshot" report: the copy's revision and stream identity. */
export interface SnapshotState {
  readonly revision: number;
  readonly streamCreated: string | null;
}

/** The SQL the thread runs; built by replica.ts so the schema has one source. */
export interface WriterSql {
  readonly pragmas: readonly string[];
  /** The document under a key. */
  readonly current: string;
  readonly upsert: string;
  readonly eraseKey: string;
  readonly spillUpsert: string;
  readonly spillCandidates: string;
  readonly spillErase: string;
  readonly putCatalog: string;
  readonly setRevision: string;
  readonly setStreamCreated: string;
  readonly setFreshness: string;
  /** Drops and recreates every table, in one transaction: an empty replica. */
  readonly reset: string;
  readonly schemaVersion: number;
}

interface ThreadData {
  readonly path: string;
  readonly sqliteModule: string;
  readonly sql: WriterSql;
}

/**
 * The thread's whole program. It runs as eval'd CommonJS (so it works the same from `dist/` and
 * under the test runner's TypeScript transform) and therefore imports nothing from this module:
 * everything it needs comes through `workerData`.
 */
function writerThreadMain(): void {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const threads = require("node:worker_threads") as typeof import("node:worker_threads");
  const { createHash } = require("node:crypto") as typeof import("node:crypto");
  const data = threads.workerData as ThreadData;
  const Database = require(data.sqliteModule) as typeof import("better-sqlite3");
  /* eslint-enable @typescript-eslint/no-require-imports */
  const port = threads.parentPort;
  if (!port) return;
  const db = new Database(data.path);
  for (const p of data.sql.pragmas) db.pragma(p);
  const current = db.prepare<[bigint], Buffer>(data.sql.current).pluck();
  const upsert = db.prepare(data.sql.upsert);
  const eraseKey = db.prepare(data.sql.eraseKey);
  const spillUpsert = db.prepare(data.sql.spillUpsert);
  const spillCandidates = db.prepare<[bigint], string>(data.sql.spillCandidates).pluck();
  const spillErase = db.prepare(data.sql.spillErase);
  const putCatalog = db.prepare(data.sql.putCatalog);
  const setRevision = db.prepare(data.sql.setRevision);
  const setStreamCreated = db.prepare(data.sql.setStreamCreated);
  const tokenOf = (id: string): string => createHash("sha256").update(id, "utf8").digest("base64url");

  /** Field 1 (customer_id) of an AccessDocument encoding; undefined if absent or unreadable. */
  const idOf = (doc: Buffer): string | undefined => {
    let pos = 0;
    const varint = (): number => {
      let n = 0;
      for (let shift = 0; shift < 64; shift += 7) {
        const b = doc[pos++];
        if (b === undefined) throw new Error("truncated");
        n += (b & 0x7f) * 2 ** shift;
        if (b < 0x80) return n;
      }
      throw new Error("bad varint");
    };
    try {
      while (pos < doc.length) {
        const tag = varint();
        const wire = tag % 8;
        if (wire === 2) {
          const len = varint();
          if (tag === 10) return doc.toString("utf8", pos, pos + len);
          pos += len;
        } else if (wire === 0) varint();
        else if (wire === 1) pos += 8;
        else if (wire === 5) pos += 4;
        else return undefined;
      }
    } catch {
      return undefined;
    }
    return undefined;
  };

  const setFreshness = db.prepare(data.sql.setFreshness);
  const apply = db.transaction((rows: readonly WriteRow[], blob: Uint8Array, revision: number) => {
    const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
    for (const row of rows) {
      if (row.kind === "document") {
        const { seq, customerId: id, offset, length } = row;
        // The key comes from the document's own id (hashed here, off the main thread), not the subject.
        const key = createHash("sha256").update(id, "utf8").digest().readBigInt64BE(0);
        const doc = b.subarray(offset, offset + length);
        const held = current.get(key);
        if (held === undefined) {
          upsert.run(key, seq, doc);
          // The customer may have been spilled while another held the key.
          spillErase.run(id);
        } else if (idOf(held) === id) upsert.run(key, seq, doc);
        else spillUpsert.run(id, key, seq, doc);
      } else if (row.kind === "erased") {
        const { token, key } = row;
        const held = current.get(key);
        if (held !== undefined) {
          const id = idOf(held);
          if (id !== undefined && tokenOf(id) === token) eraseKey.run(key);
        }
        for (const id of spillCandidates.all(key)) if (tokenOf(id) === token) spillErase.run(id);
      } else putCatalog.run(row.seq, b.subarray(row.offset, row.offset + row.length));
    }
    setRevision.run(revision);
  });
  const reset = db.transaction(() => db.exec(data.sql.reset));

  /** Copies a snapshot file's tables into this (empty) replica in one transaction. */
  const restore = (file: string): SnapshotState => {
    db.prepare("ATTACH DATABASE ? AS snap").run(file);
    try {
      const meta = db.prepare("SELECT schema_version, applied_revision, stream_created FROM snap.meta WHERE id = 1").get() as
        | { schema_version: number; applied_revision: number; stream_created: string | null }
        | undefined;
      if (!meta) throw new Error("the snapshot has no meta row");
      if (meta.schema_version !== data.sql.schemaVersion) throw new Error(`the snapshot has schema ${meta.schema_version}, this replica ${data.sql.schemaVersion}`);
      db.transaction(() => {
        // Empty destination, same columns: SQLite copies the records as they are, in key order.
        for (const table of ["documents", "spill", "catalog"]) {
          db.exec(`DELETE FROM main.${table}`);
          db.exec(`INSERT INTO main.${table} SELECT * FROM snap.${table}`);
        }
        setRevision.run(meta.applied_revision);
        setStreamCreated.run(meta.stream_created);
      })();
      return { revision: meta.applied_revision, streamCreated: meta.stream_created };
    } finally {
      db.exec("DETACH DATABASE snap");
    }
  };

  const snapshot = (file: string): SnapshotState => {
    const meta = db.prepare("SELECT applied_revision, stream_created FROM meta WHERE id = 1").get() as { applied_revision: number; stream_created: string | null };
    // This thread is the only writer: nothing commits between the read above and the copy.
    db.prepare("VACUUM INTO ?").run(file);
    return { revision: meta.applied_revision, streamCreated: meta.stream_created };
  };

  const reply = (r: ThreadReply): void => port.postMessage(r);
  port.on("message", ({ id, op }: ThreadRequest) => {
    try {
      let result: SnapshotState | readonly string[] | undefined;
      switch (op.op) {
        case "apply":
          apply(op.rows, op.blob, op.revision);
          break;
        case "advance":
          setRevision.run(op.revision);
          break;
        case "streamCreated":
          setStreamCreated.run(op.created);
          break;
        case "reset":
          reset();
          break;
        case "restore":
          result = restore(op.file);
          break;
        case "snapshot":
          result = snapshot(op.file);
          break;
        case "freshness":
          setFreshness.run(op.currentAtMs);
          break;
        case "quickCheck":
          result = (db.pragma("quick_check(20)") as Record<string, unknown>[]).map((r) => String(Object.values(r)[0]));
          break;
        case "close":
          db.close();
          reply({ id, ok: true });
          port.close();
          return;
      }
      reply(result === undefined ? { id, ok: true } : { id, ok: true, result });
    } catch (err) {
      const code = err instanceof Error && "code" in err && typeof err.code === "string" ? err.code : undefined;
      reply(code === undefined ? { id, ok: false, error: err instanceof Error ? err.message : String(err) } : { id, ok: false, error: err instanceof Error ? err.message : String(err), code });
    }
  });
}

/** A write the thread could not do, with SQLite's error code (e.g. SQLITE_CORRUPT) when there is one. */
export class ReplicaWriteError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(`replica write failed: ${message}`);
    this.name = "ReplicaWriteError";
  }
}

/** The main thread's handle on the writer thread: every write, in order, each resolved when committed. */
export class ReplicaWriter {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (result: unknown) => void; reject: (err: Error) => void }>();
  private failed: Error | undefined;
  private closed: Promise<void> | undefined;

  private constructor(private readonly worker: Worker) {
    worker.on("message", (m: ThreadReply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new ReplicaWriteError(m.error, m.code));
    });
    const fail = (err: Error): void => {
      this.failed ??= err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    worker.on("error", (err) => fail(err));
    worker.on("exit", (code) => fail(new Error(`replica writer thread exited (${code})`)));
  }

  static start(path: string, sql: WriterSql): ReplicaWriter {
    const data: ThreadData = { path, sqliteModule: createRequire(import.meta.url).resolve("better-sqlite3"), sql };
    const worker = new Worker(`(${writerThreadMain.toString()})()`, {
      eval: true,
      workerData: data,
      name: "proofgate-replica-writer",
      // Its garbage is short-lived batches: a small young generation keeps the thread's memory low.
      resourceLimits: { maxYoungGenerationSizeMb: 8 },
    });
    // The thread must not keep a finished process alive; close() ends it explicitly.
    worker.unref();
    return new ReplicaWriter(worker);
  }

  /** Queues a write; resolves once it is committed. Writes commit in the order they are sent. */
  async write(op: WriteOp): Promise<void> {
    await this.request(op);
  }

  /** Queues an operation, in order with the writes; resolves with what it reports. */
  request(op: WriteOp): Promise<SnapshotState | undefined> {
    return this.send(op) as Promise<SnapshotState | undefined>;
  }

  /** Checks the file's structure: ["ok"], or the problems found. */
  async quickCheck(): Promise<readonly string[]> {
    return (await this.send({ op: "quickCheck" })) as readonly string[];
  }

  private send(op: WriteOp): Promise<unknown> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.closed) return Promise.reject(new Error("the replica writer is closed"));
    const id = this.nextId++;
    return new Promise<unknown>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // The batch's payload buffer moves to the thread without a copy.
      const request: ThreadRequest = { id, op };
      this.worker.postMessage(request, op.op === "apply" ? [op.blob.buffer as ArrayBuffer] : []);
    });
  }

  /** Ends the thread at once; queued writes fail. */
  async terminate(): Promise<void> {
    this.closed ??= this.worker.terminate().then(() => undefined);
    await this.closed;
  }

  /** Lets queued writes finish, closes the thread's connection and ends the thread. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      if (this.failed) {
        await this.worker.terminate();
        return;
      }
      const id = this.nextId++;
      const done = new Promise<void>((resolve) => {
        this.pending.set(id, { resolve: () => resolve(), reject: () => resolve() });
      });
      const request: ThreadRequest = { id, op: { op: "close" } };
      this.worker.postMessage(request);
      await done;
      await this.worker.terminate();
    })();
    return this.closed;
  }
}
