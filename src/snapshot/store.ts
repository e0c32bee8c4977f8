import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { StorageType, type JetStreamClient, type JetStreamManager, type ObjectInfo } from "nats";
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

/**
 * Downloads a snapshot to `file` and checks it is exactly what its metadata declares (chunk
 * count, size and SHA-256). Throws, with the file removed, if not. The chunks are read with an
 * ordered consumer straight from the bucket's stream rather than through the client's `get`,
 * which checks its own digest in JavaScript at a few MB/s; the SHA-256 here is Node's. `admit`,
 * when given, is awaited before each chunk is taken (a CPU governor under a pod's quota: hashing
 * and writing are the main thread's work, and checks share it).
 */
export async function downloadSnapshot(js: JetStreamClient, snapshot: StoredSnapshot, file: string, admit?: () => Promise<void>): Promise<{ bytes: number }> {
  const { nuid, chunks } = snapshot.info;
  try {
    // Room for a few chunks: the next one is hashed while the last is written, not after.
    const out = createWriteStream(file, { highWaterMark: 1 << 20 });
    const closed = new Promise<void>((resolve, reject) => {
      out.once("close", resolve);
      out.once("error", reject);
    });
    const hash = createHash("sha256");
    let bytes = 0;
    let received = 0;
    try {
      if (chunks > 0) {
        const consumer = await js.consumers.get(SNAPSHOT_STREAM, { filterSubjects: `$O.${SNAPSHOT_BUCKET}.C.${nuid}` });
        const messages = await consumer.consume({ max_messages: admit ? 8 : 64, idle_heartbeat: 5_000 });
        for await (const m of messages) {
          await admit?.();
          hash.update(m.data);
          bytes += m.data.length;
          if (!out.write(m.data)) await new Promise<void>((resolve) => out.once("drain", () => resolve()));
          if (++received >= chunks || m.info.pending === 0) break;
        }
        messages.stop();
      }
    } finally {
      out.end();
      await closed;
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
