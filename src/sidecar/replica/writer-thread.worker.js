// @ts-check
/**
 * The replica's writer thread (see writer-thread.ts, which starts it and sends it requests): its
 * own SQLite connection, every write of the replica in order, one reply per request.
 *
 * A plain ES module, type-checked by tsc through JSDoc and emitted by the build like any other
 * file: worker threads load a file by URL, and Node 20 runs only JavaScript, so the same file
 * serves `dist/` and the tests (which run the TypeScript sources).
 */
import { Buffer } from "node:buffer";
import { createHmac } from "node:crypto";
import { performance } from "node:perf_hooks";
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";

/** @typedef {import("./writer-thread.js").ThreadData} ThreadData */
/** @typedef {import("./writer-thread.js").ThreadRequest} ThreadRequest */
/** @typedef {import("./writer-thread.js").ThreadReply} ThreadReply */
/** @typedef {import("./writer-thread.js").WriteRow} WriteRow */
/** @typedef {import("./writer-thread.js").SnapshotState} SnapshotState */

const data = /** @type {ThreadData} */ (workerData);
const port = parentPort;
if (!port) throw new Error("the replica writer runs as a worker thread");

const db = new Database(data.path);
for (const p of data.sql.pragmas)
  db.pragma(p);
const current = /** @type {import("better-sqlite3").Statement<[bigint], Buffer>} */ (db.prepare(data.sql.current).pluck());
const upsert = db.prepare(data.sql.upsert);
const eraseKey = db.prepare(data.sql.eraseKey);
const spillUpsert = db.prepare(data.sql.spillUpsert);
const spillCandidates = /** @type {import("better-sqlite3").Statement<[bigint], string>} */ (db.prepare(data.sql.spillCandidates).pluck());
const spillErase = db.prepare(data.sql.spillErase);
const putCatalog = db.prepare(data.sql.putCatalog);
const setRevision = db.prepare(data.sql.setRevision);
const setStreamCreated = db.prepare(data.sql.setStreamCreated);
// customerDigest and customerToken of replication/subjects.ts, keyed the same way (the key comes in workerData).
/** @param {string} id */
const digestOf = (id) => createHmac("sha256", data.tokenKey).update(id, "utf8").digest();
/** @param {string} id */
const tokenOf = (id) => digestOf(id).toString("base64url");
/**
 * Field 1 (customer_id) of an AccessDocument encoding; undefined if absent or unreadable.
 * @param {Buffer} doc
 * @returns {string | undefined}
 */
const idOf = (doc) => {
  let pos = 0;
  const varint = () => {
    let n = 0;
    for (let shift = 0; shift < 64; shift += 7) {
      const b = doc[pos++];
      if (b === undefined)
        throw new Error("truncated");
      n += (b & 0x7f) * 2 ** shift;
      if (b < 0x80)
        return n;
    }
    throw new Error("bad varint");
  };
  try {
    while (pos < doc.length) {
      const tag = varint();
      const wire = tag % 8;
      if (wire === 2) {
        const len = varint();
        if (tag === 10)
          return doc.toString("utf8", pos, pos + len);
        pos += len;
      }
      else if (wire === 0)
        varint();
      else if (wire === 1)
        pos += 8;
      else if (wire === 5)
        pos += 4;
      else
        return undefined;
    }
  }
  catch {
    return undefined;
  }
  return undefined;
};
const setFreshness = db.prepare(data.sql.setFreshness);
const apply = db.transaction(
  /**
   * @param {readonly WriteRow[]} rows
   * @param {Uint8Array} blob
   * @param {number} revision
   */
  (rows, blob, revision) => {
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  for (const row of rows) {
    if (row.kind === "document") {
      const { seq, customerId: id, offset, length } = row;
      // The key comes from the document's own id (hashed here, off the main thread), not the subject.
      const key = digestOf(id).readBigInt64BE(0);
      const doc = b.subarray(offset, offset + length);
      const held = current.get(key);
      if (held === undefined) {
        upsert.run(key, seq, doc);
        // The customer may have been spilled while another held the key.
        spillErase.run(id);
      }
      else if (idOf(held) === id)
        upsert.run(key, seq, doc);
      else
        spillUpsert.run(id, key, seq, doc);
    }
    else if (row.kind === "erased") {
      const { token, key } = row;
      const held = current.get(key);
      if (held !== undefined) {
        const id = idOf(held);
        if (id !== undefined && tokenOf(id) === token)
          eraseKey.run(key);
      }
      for (const id of spillCandidates.all(key))
        if (tokenOf(id) === token)
          spillErase.run(id);
    }
    else
      putCatalog.run(row.seq, b.subarray(row.offset, row.offset + row.length));
  }
  setRevision.run(revision);
  },
);
const reset = db.transaction(() => db.exec(data.sql.reset));
const pause = new Int32Array(new SharedArrayBuffer(4));
/**
 * Under a CPU quota: after a batch that kept the thread busy `t` ms, rests `t · (1 − share) / share`
 * ms (at most 100), so that applying a bootstrap or a burst leaves the rest of the quota to checks.
 * @param {number} startedAt
 */
const pace = (startedAt) => {
  const share = data.applyShare;
  if (share === undefined || share >= 1) return;
  const busy = performance.now() - startedAt;
  Atomics.wait(pause, 0, 0, Math.min(100, (busy * (1 - share)) / share));
};
/**
 * Writes a compact copy of the replica, as committed now, to a new file.
 * @param {string} file
 * @returns {SnapshotState}
 */
const snapshot = (file) => {
  const meta = /** @type {{ applied_revision: number; stream_created: string | null }} */ (db.prepare("SELECT applied_revision, stream_created FROM meta WHERE id = 1").get());
  // This thread is the only writer: nothing commits between the read above and the copy.
  db.prepare("VACUUM INTO ?").run(file);
  // A restoring sidecar takes the file as its replica as it is (its SHA-256 proves it is these
  // bytes), so it is made fit here, where a quota does not count: in WAL mode already (VACUUM INTO
  // writes rollback mode, and switching a file's mode is a synced write), no freshness of this
  // process's, and a structure check of every page.
  const copy = new Database(file);
  try {
    copy.pragma("journal_mode = WAL");
    copy.exec("UPDATE freshness SET current_at_ms = NULL");
    const problems = /** @type {Record<string, unknown>[]} */ (copy.pragma("quick_check(20)")).map((r) => String(Object.values(r)[0]));
    if (problems.length !== 1 || problems[0] !== "ok")
      throw new Error(`the snapshot copy fails quick_check: ${problems.slice(0, 3).join("; ")}`);
  }
  finally {
    copy.close();
  }
  return { revision: meta.applied_revision, streamCreated: meta.stream_created };
};
/** @param {ThreadReply} r */
const reply = (r) => port.postMessage(r);
port.on("message", (/** @type {ThreadRequest} */ { id, op }) => {
  try {
    /** @type {SnapshotState | readonly string[] | undefined} */
    let result;
    switch (op.op) {
      case "apply": {
        const startedAt = performance.now();
        apply(op.rows, op.blob, op.revision);
        reply({ id, ok: true });
        pace(startedAt);
        return;
      }
      case "advance":
        setRevision.run(op.revision);
        break;
      case "streamCreated":
        setStreamCreated.run(op.created);
        break;
      case "reset":
        reset();
        break;
      case "snapshot":
        result = snapshot(op.file);
        break;
      case "freshness":
        setFreshness.run(op.currentAtMs);
        break;
      case "quickCheck":
        result = /** @type {Record<string, unknown>[]} */ (db.pragma("quick_check(20)")).map((r) => String(Object.values(r)[0]));
        break;
      case "close":
        db.close();
        reply({ id, ok: true });
        port.close();
        return;
    }
    reply(result === undefined ? { id, ok: true } : { id, ok: true, result });
  }
  catch (err) {
    const code = err instanceof Error && "code" in err && typeof err.code === "string" ? err.code : undefined;
    reply(code === undefined ? { id, ok: false, error: err instanceof Error ? err.message : String(err) } : { id, ok: false, error: err instanceof Error ? err.message : String(err), code });
  }
});
