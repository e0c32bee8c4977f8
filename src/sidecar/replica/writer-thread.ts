import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { customerTokenKeyForThread } from "../../replication/subjects.js";
import { cpuQuotaCores } from "../cpu-quota.js";

/**
 * The replica's writes run in a worker thread with its own SQLite connection (WAL: one writer,
 * readers unaffected). better-sqlite3 is synchronous: inserts, commits and WAL checkpoints of a
 * bootstrap or a burst would otherwise stall every `Check` queued behind them on the event loop.
 * The main thread parses records, sends batches here in order and reads from its own connection.
 */

/**
 * A parsed record, as sent to the writer thread: plain arrays, cheap to clone. Payloads (document
 * and catalog bytes) are ranges of the batch's `blob`, one buffer transferred without a copy.
 */
export type WriteRow =
  | readonly [kind: 0, seq: number, customerId: string, offset: number, length: number]
  | readonly [kind: 1, seq: number, token: string, key: bigint]
  | readonly [kind: 2, seq: number, offset: number, length: number];

export type WriteOp =
  | { readonly op: "apply"; readonly rows: readonly WriteRow[]; readonly blob: Uint8Array; readonly revision: number }
  | { readonly op: "advance"; readonly revision: number }
  | { readonly op: "streamCreated"; readonly created: string }
  | { readonly op: "reset" }
  /** Replaces the (empty) replica's contents with a snapshot file's: see `Replica.restore`. */
  | { readonly op: "restore"; readonly file: string }
  /** Writes a compact copy of the replica, as committed now, to a new file. */
  | { readonly op: "snapshot"; readonly file: string }
  | { readonly op: "freshness"; readonly currentAtMs: number | null };

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
  /** The customer token key (replication/subjects.ts): row keys and tokens are its HMAC-SHA-256. */
  readonly tokenKey: string;
  /** The share of one core the thread may keep busy applying batches; undefined: as fast as it can. */
  readonly applyShare: number | undefined;
}

/**
 * Under a CPU quota (a pod's `cpu: 500m`), the share of it the writer thread may use applying a
 * bootstrap or a burst. The quota is the whole process's: once the threads together use it up
 * in a CFS period (100 ms), every thread waits for the next, checks included. The rest of the
 * quota is for parsing records on the main thread and for answering checks.
 */
export const APPLY_SHARE_OF_QUOTA = 0.4;

/**
 * The thread's whole program. It runs as eval'd CommonJS (so it works the same from `dist/` and
 * under the test runner's TypeScript transform) and therefore imports nothing from this module:
 * everything it needs comes through `workerData`.
 */
function writerThreadMain(): void {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const threads = require("node:worker_threads") as typeof import("node:worker_threads");
  const { createHmac } = require("node:crypto") as typeof import("node:crypto");
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
  // customerDigest and customerToken of replication/subjects.ts, which the thread cannot import.
  const digestOf = (id: string): Buffer => createHmac("sha256", data.tokenKey).update(id, "utf8").digest();
  const tokenOf = (id: string): string => digestOf(id).toString("base64url");

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

  const pause = new Int32Array(new SharedArrayBuffer(4));
  /** After a write that kept the thread busy `t` ms, rests `t · (1 − share) / share` ms (at most 100). */
  const pace = (startedAt: number): void => {
    const share = data.applyShare;
    if (share === undefined || share >= 1) return;
    const busy = performance.now() - startedAt;
    Atomics.wait(pause, 0, 0, Math.min(100, (busy * (1 - share)) / share));
  };

  const setFreshness = db.prepare(data.sql.setFreshness);
  const apply = db.transaction((rows: readonly WriteRow[], blob: Uint8Array, revision: number) => {
    const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
    for (const row of rows) {
      if (row[0] === 0) {
        const [, seq, id, offset, length] = row;
        // The key comes from the document's own id (hashed here, off the main thread), not the subject.
        const key = digestOf(id).readBigInt64BE(0);
        const doc = b.subarray(offset, offset + length);
        const held = current.get(key);
        if (held === undefined) {
          upsert.run(key, seq, doc);
          // The customer may have been spilled while another held the key.
          spillErase.run(id);
        } else if (idOf(held) === id) upsert.run(key, seq, doc);
        else spillUpsert.run(id, key, seq, doc);
      } else if (row[0] === 1) {
        const [, , token, key] = row;
        const held = current.get(key);
        if (held !== undefined) {
          const id = idOf(held);
          if (id !== undefined && tokenOf(id) === token) eraseKey.run(key);
        }
        for (const id of spillCandidates.all(key)) if (tokenOf(id) === token) spillErase.run(id);
      } else putCatalog.run(row[1], b.subarray(row[2], row[2] + row[3]));
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

  port.on("message", (msg: { id: number; op: WriteOp } | { id: number; close: true }) => {
    try {
      if ("close" in msg) {
        db.close();
        port.postMessage({ id: msg.id });
        port.close();
        return;
      }
      const op = msg.op;
      let result: SnapshotState | undefined;
      if (op.op === "apply") {
        const startedAt = performance.now();
        apply(op.rows, op.blob, op.revision);
        port.postMessage({ id: msg.id, result });
        pace(startedAt);
        return;
      }
      if (op.op === "advance") setRevision.run(op.revision);
      else if (op.op === "streamCreated") setStreamCreated.run(op.created);
      else if (op.op === "restore") result = restore(op.file);
      else if (op.op === "snapshot") result = snapshot(op.file);
      else if (op.op === "freshness") setFreshness.run(op.currentAtMs);
      else reset();
      port.postMessage({ id: msg.id, result });
    } catch (err) {
      port.postMessage({ id: msg.id, error: err instanceof Error ? err.message : String(err) });
    }
  });
}

/** The main thread's handle on the writer thread: every write, in order, each resolved when committed. */
export class ReplicaWriter {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (result: SnapshotState | undefined) => void; reject: (err: Error) => void }>();
  private failed: Error | undefined;
  private closed: Promise<void> | undefined;

  private constructor(private readonly worker: Worker) {
    worker.on("message", (m: { id: number; error?: string; result?: SnapshotState }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error === undefined) p.resolve(m.result);
      else p.reject(new Error(`replica write failed: ${m.error}`));
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
    const quota = cpuQuotaCores();
    // A quota at or above the cores there are cannot run out: no pacing then.
    const applyShare = quota !== undefined && quota < availableParallelism() ? quota * APPLY_SHARE_OF_QUOTA : undefined;
    const data: ThreadData = { path, sqliteModule: createRequire(import.meta.url).resolve("better-sqlite3"), sql, tokenKey: customerTokenKeyForThread(), applyShare };
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
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    return new Promise<SnapshotState | undefined>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // The batch's payload buffer moves to the thread without a copy.
      this.worker.postMessage({ id, op }, op.op === "apply" ? [op.blob.buffer as ArrayBuffer] : []);
    });
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
      this.worker.postMessage({ id, close: true });
      await done;
      await this.worker.terminate();
    })();
    return this.closed;
  }
}
