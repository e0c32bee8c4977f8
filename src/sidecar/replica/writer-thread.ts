import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { customerTokenKeyForThread } from "../../replication/subjects.js";
import { cpuQuotaCores } from "../cpu-quota.js";

/**
 * The replica's writes run in a worker thread with its own SQLite connection (WAL: one writer,
 * readers unaffected). better-sqlite3 is synchronous: inserts, commits and WAL checkpoints of a
 * bootstrap or a burst would otherwise stall every `Check` queued behind them on the event loop.
 * The main thread parses records, sends batches here in order and reads from its own connection.
 * The thread's program is writer-thread.worker.js; this module is its contract and its handle.
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
  /** Writes a compact, checked copy of the replica, as committed now, to a new file: see `Replica.snapshotTo`. */
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

/** What "snapshot" reports: the copy's revision and stream identity. */
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

/** What the thread starts with (its `workerData`). */
export interface ThreadData {
  readonly path: string;
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
    const quota = cpuQuotaCores();
    // A quota at or above the cores there are cannot run out: no pacing then.
    const applyShare = quota !== undefined && quota < availableParallelism() ? quota * APPLY_SHARE_OF_QUOTA : undefined;
    const data: ThreadData = { path, sql, tokenKey: customerTokenKeyForThread(), applyShare };
    const worker = new Worker(new URL("./writer-thread.worker.js", import.meta.url), {
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

  /**
   * Lets queued writes finish, closes the thread's connection and ends the thread. There is no
   * "end it now": terminating a thread while SQLite is inside a statement aborts the whole process
   * when that statement then fails (better-sqlite3 builds its error in a dying isolate), so even
   * a corrupt file's thread is asked to close, which it does as fast as SQLite reports errors.
   */
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
