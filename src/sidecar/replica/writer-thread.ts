import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

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
  | readonly [kind: 0, seq: number, customerId: string, tokenKey: number, offset: number, length: number]
  | readonly [kind: 1, seq: number, token: string, tokenKey: number]
  | readonly [kind: 2, seq: number, offset: number, length: number];

export type WriteOp =
  | { readonly op: "apply"; readonly rows: readonly WriteRow[]; readonly blob: Uint8Array; readonly revision: number }
  | { readonly op: "advance"; readonly revision: number }
  | { readonly op: "streamCreated"; readonly created: string }
  | { readonly op: "freshness"; readonly currentAtMs: number | null }
  | { readonly op: "reset" };

/** The SQL the thread runs; built by replica.ts so the schema has one source. */
export interface WriterSql {
  readonly pragmas: readonly string[];
  readonly upsert: string;
  readonly candidates: string;
  readonly erase: string;
  readonly putCatalog: string;
  readonly setRevision: string;
  readonly setStreamCreated: string;
  readonly setFreshness: string;
  /** Drops and recreates every table, in one transaction: an empty replica. */
  readonly reset: string;
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
  const upsert = db.prepare(data.sql.upsert);
  const candidates = db.prepare<[number], string>(data.sql.candidates).pluck();
  const erase = db.prepare(data.sql.erase);
  const putCatalog = db.prepare(data.sql.putCatalog);
  const setRevision = db.prepare(data.sql.setRevision);
  const setStreamCreated = db.prepare(data.sql.setStreamCreated);
  const setFreshness = db.prepare(data.sql.setFreshness);
  const apply = db.transaction((rows: readonly WriteRow[], blob: Uint8Array, revision: number) => {
    const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
    for (const row of rows) {
      if (row[0] === 0) upsert.run(row[2], row[3], row[1], b.subarray(row[4], row[4] + row[5]));
      else if (row[0] === 1) {
        for (const id of candidates.all(row[3])) {
          if (createHash("sha256").update(id, "utf8").digest("base64url") === row[2]) erase.run(id);
        }
      } else putCatalog.run(row[1], b.subarray(row[2], row[2] + row[3]));
    }
    setRevision.run(revision);
  });
  const reset = db.transaction(() => db.exec(data.sql.reset));
  port.on("message", (msg: { id: number; op: WriteOp } | { id: number; close: true }) => {
    try {
      if ("close" in msg) {
        db.close();
        port.postMessage({ id: msg.id });
        port.close();
        return;
      }
      const op = msg.op;
      if (op.op === "apply") apply(op.rows, op.blob, op.revision);
      else if (op.op === "advance") setRevision.run(op.revision);
      else if (op.op === "streamCreated") setStreamCreated.run(op.created);
      else if (op.op === "freshness") setFreshness.run(op.currentAtMs);
      else reset();
      port.postMessage({ id: msg.id });
    } catch (err) {
      port.postMessage({ id: msg.id, error: err instanceof Error ? err.message : String(err) });
    }
  });
}

/** The main thread's handle on the writer thread: every write, in order, each resolved when committed. */
export class ReplicaWriter {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private failed: Error | undefined;
  private closed: Promise<void> | undefined;

  private constructor(private readonly worker: Worker) {
    worker.on("message", (m: { id: number; error?: string }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error === undefined) p.resolve();
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
  write(op: WriteOp): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
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
        this.pending.set(id, { resolve, reject: () => resolve() });
      });
      this.worker.postMessage({ id, close: true });
      await done;
      await this.worker.terminate();
    })();
    return this.closed;
  }
}
