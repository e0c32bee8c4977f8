import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { AckPolicy, DeliverPolicy, StorageType, nanos, type JetStreamClient, type JetStreamManager, type ObjectInfo } from "nats";
import { isStreamNotFound } from "../replication/connection.js";

/**
 * Replica snapshots in the NATS Object Store: compact copies of a replica file at a known
 * revision, so a cold sidecar copies one file instead of replaying every message of the state
 * stream. The writer side puts them (see producer.ts); a sidecar restores the newest usable one
 * (see restore.ts). This file is the format's one home: bucket, names and metadata.
 */
export const SNAPSHOT_BUCKET = "PROOFGATE_SNAPSHOTS";
/** The stream that backs the bucket (the Object Store's naming). */
export const SNAPSHOT_STREAM = `OBJ_${SNAPSHOT_BUCKET}`;
const NAME_PREFIX = "replica-";

/** What a snapshot declares about itself, in its object's metadata. */
export interface SnapshotMeta {
  /** The PROOFGATE_STATE revision the snapshot holds, exactly. */
  readonly revision: number;
  /** The state stream's identity (replication/streams.ts streamIdentity): a snapshot of another stream incarnation is unusable. */
  readonly streamCreated: string;
  /** The replica schema of the file (`SCHEMA_VERSION`). */
  readonly schemaVersion: number;
  /** SHA-256 of the file, hex, and its size: checked after the download, before any use. */
  readonly sha256: string;
  readonly size: number;
}

export interface StoredSnapshot {
  readonly name: string;
  readonly meta: SnapshotMeta;
  readonly info: ObjectInfo;
}

export function snapshotName(revision: number): string {
  // Zero-padded, so names sort like revisions.
  return NAME_PREFIX + String(revision).padStart(16, "0");
}

/** The file's SHA-256 (hex) and size. */
export async function fileDigest(file: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(file), hash);
  return { sha256: hash.digest("hex"), size: (await stat(file)).size };
}

/** Puts a snapshot file, then deletes all but the newest `keep` snapshots. Creates the bucket if needed. */
export async function putSnapshot(js: JetStreamClient, file: string, meta: SnapshotMeta, keep: number, replicas = 1): Promise<ObjectInfo> {
  const os = await js.views.os(SNAPSHOT_BUCKET, { storage: StorageType.File, replicas });
  const data = Readable.toWeb(createReadStream(file)) as unknown as ReadableStream<Uint8Array>;
  const info = await os.put(
    {
      name: snapshotName(meta.revision),
      description: `proofgate replica snapshot at revision ${meta.revision}`,
      metadata: {
        revision: String(meta.revision),
        stream_created: meta.streamCreated,
        schema_version: String(meta.schemaVersion),
        sha256: meta.sha256,
        size: String(meta.size),
      },
    },
    data,
  );
  const all = (await os.list()).filter((i) => !i.deleted && i.name.startsWith(NAME_PREFIX)).sort((a, b) => (a.name < b.name ? 1 : -1));
  for (const old of all.slice(Math.max(1, keep))) await os.delete(old.name);
  return info;
}

/**
 * The snapshots in the bucket, newest first; none when the bucket does not exist (it is never
 * created here: a sidecar only reads). Objects whose metadata is unreadable are left out.
 */
export async function listSnapshots(jsm: JetStreamManager, js: JetStreamClient): Promise<StoredSnapshot[]> {
  try {
    await jsm.streams.info(SNAPSHOT_STREAM);
  } catch (err) {
    if (isStreamNotFound(err)) return [];
    throw err;
  }
  const os = await js.views.os(SNAPSHOT_BUCKET);
  const out: StoredSnapshot[] = [];
  for (const info of await os.list()) {
    if (info.deleted || !info.name.startsWith(NAME_PREFIX)) continue;
    const meta = parseMeta(info.metadata);
    if (meta) out.push({ name: info.name, meta, info });
  }
  return out.sort((a, b) => b.meta.revision - a.meta.revision);
}

function parseMeta(m: Record<string, string> | undefined): SnapshotMeta | undefined {
  if (!m) return undefined;
  const revision = Number(m["revision"]);
  const schemaVersion = Number(m["schema_version"]);
  const size = Number(m["size"]);
  const sha256 = m["sha256"] ?? "";
  const streamCreated = m["stream_created"] ?? "";
  if (!Number.isSafeInteger(revision) || revision <= 0 || !Number.isSafeInteger(schemaVersion) || !Number.isSafeInteger(size) || !/^[0-9a-f]{64}$/.test(sha256) || !streamCreated) {
    return undefined;
  }
  return { revision, schemaVersion, size, sha256, streamCreated };
}

/** Chunks (128 KiB) asked for at once: what a download holds in memory, at most. */
const FETCH_CHUNKS = 32;
/** Under a CPU quota each chunk waits for the governor; fewer held meanwhile. */
const FETCH_CHUNKS_UNDER_QUOTA = 8;
const FETCH_EXPIRES_MS = 5_000;

/**
 * Downloads a snapshot to `file` and checks it is exactly what its metadata declares (chunk
 * count, size and SHA-256). Throws, with the file removed, if not. The chunks are read with a
 * consumer straight from the bucket's stream rather than through the client's `get`, which
 * checks its own digest in JavaScript at a few MB/s; the SHA-256 here is Node's. `admit`,
 * when given, is awaited before each chunk is taken (a CPU governor under a pod's quota: hashing
 * and writing are the main thread's work, and checks share it).
 */
export async function downloadSnapshot(js: JetStreamClient, snapshot: StoredSnapshot, file: string, admit?: () => Promise<void>): Promise<{ bytes: number }> {
  const { nuid, chunks } = snapshot.info;
  try {
    const jsm = await js.jetstreamManager();
    // Room for a few chunks: the next one is hashed while the last is written, not after.
    const out = createWriteStream(file, { highWaterMark: 1 << 20 });
    const closed = new Promise<void>((resolve, reject) => {
      out.once("close", resolve);
      out.once("error", reject);
    });
    const hash = createHash("sha256");
    let bytes = 0;
    let received = 0;
    let consumerName: string | undefined;
    try {
      if (chunks > 0) {
        // A plain ephemeral consumer (no acks, removed by the server when idle): an ordered one
        // is re-created per fetch, and after some thousands of chunks its fetches came back empty.
        const created = await jsm.consumers.add(SNAPSHOT_STREAM, {
          filter_subject: `$O.${SNAPSHOT_BUCKET}.C.${nuid}`,
          ack_policy: AckPolicy.None,
          deliver_policy: DeliverPolicy.All,
          mem_storage: true,
          inactive_threshold: nanos(30_000),
        });
        consumerName = created.name;
        const consumer = await js.consumers.get(SNAPSHOT_STREAM, created.name);
        // Fetches, not consume(): consume() pulls again as messages arrive, not as they are
        // written, so a slower disk or hash let gigabytes pile up in memory (1.1 GiB of RSS for a
        // 1 GB snapshot). A fetch's chunks are all written before the next is asked for.
        const perFetch = admit ? FETCH_CHUNKS_UNDER_QUOTA : FETCH_CHUNKS;
        let more = true;
        while (more && received < chunks) {
          const batch = await consumer.fetch({ max_messages: Math.min(perFetch, chunks - received), expires: FETCH_EXPIRES_MS });
          let got = 0;
          for await (const m of batch) {
            got++;
            await admit?.();
            hash.update(m.data);
            bytes += m.data.length;
            if (!out.write(m.data)) await new Promise<void>((resolve) => out.once("drain", () => resolve()));
            // The object's last chunk: a truncated object ends here, not at the fetch's expiry.
            if (++received >= chunks || m.info.pending === 0) {
              more = false;
              batch.stop();
              break;
            }
          }
          if (got === 0) more = false;
        }
      }
    } finally {
      out.end();
      await closed;
      // Not awaited: the server removes an idle consumer by itself; deleting is a courtesy.
      if (consumerName) void jsm.consumers.delete(SNAPSHOT_STREAM, consumerName).catch(() => undefined);
    }
    if (received !== chunks) throw new Error(`it has ${received} chunks, the object store says ${chunks}`);
    if (bytes !== snapshot.meta.size) throw new Error(`it is ${bytes} bytes, its metadata says ${snapshot.meta.size} (truncated?)`);
    const sha256 = hash.digest("hex");
    if (sha256 !== snapshot.meta.sha256) throw new Error(`its SHA-256 is ${sha256}, its metadata says ${snapshot.meta.sha256}`);
    return { bytes };
  } catch (err) {
    await rm(file, { force: true });
    throw err;
  }
}
