import { afterEach, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeFileSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import Database from "better-sqlite3";
import { tempDir } from "../harness/tmp.js";
import { paidCustomer, testCatalog } from "../harness/sidecar.js";
import { Freshness } from "../../src/sidecar/follow/freshness.js";
import { decodeStateRecord, encodeCatalogRecord, encodeDocumentRecord } from "../../src/replication/state-record.js";
import { Replica, ReplicaReader, SCHEMA_VERSION, customerKey } from "../../src/sidecar/replica/replica.js";
import { validateCheck } from "../../src/sidecar/check/validate.js";
import { RevisionWaiters } from "../../src/sidecar/check/revision-waiters.js";
import { AccessDocument } from "../../src/gen/proofgate/v1/document.js";
import { CATALOG_SUBJECT, customerSubject, customerToken } from "../../src/replication/subjects.js";
import { silentLogger } from "../../src/observability/logger.js";
import { InvalidArgumentError, UnavailableError } from "../../src/errors/index.js";
import { Follower } from "../../src/sidecar/follow/follower.js";
import { SidecarMetrics } from "../../src/sidecar/metrics.js";
import { createRegistry } from "../../src/observability/metrics.js";


describe("replica file", () => {
  const dirs: { dispose: () => void }[] = [];
  afterEach(() => dirs.splice(0).forEach((d) => d.dispose()));
  const open = () => {
    const d = tempDir();
    dirs.push(d);
    return { path: join(d.path, "nested", "replica.db") };
  };
  const doc = (id: string, plan = "basic") => {
    const r = decodeStateRecord(customerSubject(id), encodeDocumentRecord(AccessDocument.encode(paidCustomer(id, plan, 0)).finish()));
    return r;
  };
  /**
   * A replica file of `customers` documents with `noise` random bytes in the middle of its
   * documents' B-tree (the header and schema intact); returns the customer ids.
   */
  const corruptReplica = async (path: string, customers: number, noise: number): Promise<string[]> => {
    const first = Replica.open(path, silentLogger());
    const ids = Array.from({ length: customers }, (_, i) => `cus_${i}`);
    await first.apply(
      ids.map((id, i) => ({ seq: i + 1, record: doc(id) })),
      ids.length,
    );
    await first.close();
    const fd = openSync(path, "r+");
    writeSync(fd, randomBytes(noise), 0, noise, Math.floor(statSync(path).size / 2 / 8192) * 8192);
    closeSync(fd);
    return ids;
  };

  it("applies documents, tombstones and catalogs with their revision (on its writer thread), and reopens warm", async () => {
    const { path } = open();
    const replica = Replica.open(path, silentLogger());
    expect(replica.warm).toBe(false);
    expect(replica.hasCatalog).toBe(false);
    const catalog = decodeStateRecord(CATALOG_SUBJECT, encodeCatalogRecord(testCatalog({ coherencyWindowMs: 1234 })));
    // Sent back to back: they commit in order.
    const first = replica.apply([{ seq: 1, record: catalog }, { seq: 2, record: doc("a") }, { seq: 3, record: doc("b") }, { seq: 4, record: doc("c") }], 4);
    const second = replica.apply([{ seq: 7, record: doc("a", "premium") }, { seq: 8, record: { kind: "erased", token: customerToken("b") } }], 8);
    expect((await first).documents).toBe(3);
    expect((await second).erased).toBe(1);
    await replica.setStreamCreated("2026-01-01T00:00:00Z");
    expect(replica.revision).toBe(8);
    expect(replica.catalog.coherencyWindowMs).toBe(1234);
    expect(replica.document("b")).toBeUndefined();
    expect(replica.document("c")).toBeDefined();
    const a = replica.document("a");
    expect(a && AccessDocument.decode(a).subscriptions[0]?.intent?.planId).toBe("premium");
    await replica.close();

    const again = Replica.open(path, silentLogger());
    expect(again.warm).toBe(true);
    expect(again.revision).toBe(8);
    expect(again.streamCreated).toBe("2026-01-01T00:00:00Z");
    expect(again.catalog.coherencyWindowMs).toBe(1234);
    expect(again.documentCount()).toBe(2);
    await again.advanceRevision(5);
    expect(again.revision).toBe(8);
    await again.advanceRevision(9);
    expect(again.revision).toBe(9);

    await again.reset();
    expect(again.revision).toBe(0);
    expect(again.streamCreated).toBeUndefined();
    expect(again.document("a")).toBeUndefined();
    expect(again.hasCatalog).toBe(false);
    await again.apply([{ seq: 1, record: doc("z") }], 1);
    expect(again.document("z")).toBeDefined();
    await again.close();
    const third = Replica.open(path, silentLogger());
    expect(third.revision).toBe(1);
    expect(third.streamCreated).toBeUndefined();
    await third.close();
  });

  it("finds a customer whose key another customer holds in the spill table, updates and erases it there", async () => {
    const { path } = open();
    const replica = Replica.open(path, silentLogger());
    await replica.apply([{ seq: 1, record: doc("a") }], 1);
    // A key collision cannot be produced on purpose: put "z" aside as the writer thread would
    // have, under its own key, and put a stranger's document under "z"'s key.
    const raw = new Database(path);
    const zDoc = AccessDocument.encode(paidCustomer("z", "premium", 0)).finish();
    const strangerDoc = AccessDocument.encode(paidCustomer("stranger", "basic", 0)).finish();
    raw.prepare("INSERT INTO documents (k, revision, document) VALUES (?, 1, ?)").run(customerKey("z"), strangerDoc);
    raw.prepare("INSERT INTO spill (customer_id, k, revision, document) VALUES ('z', ?, 1, ?)").run(customerKey("z"), zDoc);
    raw.close();
    const z = replica.document("z");
    expect(z && AccessDocument.decode(z).customerId).toBe("z");
    expect(replica.lookup("z")[1]?.equals(Buffer.from(zDoc))).toBe(true);
    // "stranger" is not found under another customer's key.
    expect(replica.document("stranger")).toBeUndefined();
    // An update of "z" goes to the spill row (the key is taken); erasing it by token removes it.
    await replica.apply([{ seq: 2, record: doc("z", "basic") }], 2);
    const z2 = replica.document("z");
    expect(z2 && AccessDocument.decode(z2).subscriptions[0]?.intent?.planId).toBe("basic");
    await replica.apply([{ seq: 3, record: { kind: "erased", token: customerToken("z") } }], 3);
    expect(replica.document("z")).toBeUndefined();
    expect(replica.documentCount()).toBe(2);
    await replica.close();
  });

  it("a read that hits a corrupt page is refused as UNAVAILABLE, reported once, and recover() sets the file aside for an empty replica", async () => {
    const { path } = open();
    const ids = await corruptReplica(path, 2_000, 64 * 1024);

    const replica = Replica.open(path, silentLogger());
    expect(replica.setAsideAtOpen).toBeUndefined();
    const reported: string[] = [];
    replica.onCorruption((problem) => reported.push(problem));
    let refused = 0;
    for (const id of ids) {
      try {
        replica.lookup(id);
      } catch (err) {
        expect(err).toBeInstanceOf(UnavailableError);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(0);
    expect(reported).toHaveLength(1);
    expect(reported[0]).toMatch(/SQLITE_CORRUPT/);
    await replica.recover();
    expect(replica.revision).toBe(0);
    expect(replica.lookup("cus_1")[1]).toBeNull();
    expect(existsSync(`${path}.corrupt`)).toBe(true);
    await replica.close();
  });

  it("recover() while the writer thread is still reading the corrupt file lets it finish: the process survives and the new replica takes writes", async () => {
    const { path } = open();
    await corruptReplica(path, 4_000, 128 * 1024);
    // recover() used to kill the thread, which aborts the process when the statement it is in then
    // fails (better-sqlite3 cannot build the error in a dying isolate). Each round races a check
    // with a recovery; the abort needs the kill inside a failing statement, so it is rare here.
    for (let round = 0; round < 5; round++) {
      const replica = Replica.open(path, silentLogger());
      const checking = replica.verify().catch((err: unknown) => err);
      await replica.recover();
      const verdict = await checking;
      expect(verdict === true || verdict === false || verdict instanceof Error, String(verdict)).toBe(true);
      expect(replica.revision).toBe(0);
      await replica.apply([{ seq: 1, record: doc("cus_new") }], 1);
      expect(replica.lookup("cus_new")[1]).not.toBeNull();
      await replica.close();
      // The next round starts from a corrupt file again.
      writeFileSync(path, readFileSync(`${path}.corrupt`));
      for (const suffix of ["-wal", "-shm"]) if (existsSync(path + suffix)) writeFileSync(path + suffix, "");
    }
  });

  it("a file that is not SQLite is set aside at open, and the replica starts empty", async () => {
    const { path } = open();
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, "x".repeat(4096));
    const replica = Replica.open(path, silentLogger());
    expect(replica.setAsideAtOpen).toMatch(/bad header/);
    expect(replica.revision).toBe(0);
    expect(readFileSync(`${path}.corrupt`, "utf8")).toBe("x".repeat(4096));
    expect(await replica.verify()).toBe(true);
    await replica.close();
  });

  it("restores by adopting the snapshot file: every document, no freshness of the producer's, the file moved into place", async () => {
    const { path } = open();
    const replica = Replica.open(path, silentLogger());
    const ids = Array.from({ length: 5_000 }, (_, i) => `cus_adopt_${i}`);
    await replica.apply(ids.map((id, i) => ({ seq: i + 1, record: doc(id) })), ids.length);
    await replica.recordFreshness(Date.now());
    const file = join(dirname(path), "snapshot.db");
    await replica.snapshotTo(file);
    // In WAL mode already (file format bytes 18 and 19): adopting it writes nothing to it.
    const header = Buffer.alloc(20);
    const fd = openSync(file, "r");
    readSync(fd, header, 0, 20, 0);
    closeSync(fd);
    expect([header[18], header[19]]).toEqual([2, 2]);
    const restoredPath = join(dirname(path), "restored.db");
    const other = Replica.open(restoredPath, silentLogger());
    expect(await other.restore(file)).toMatchObject({ revision: ids.length });
    expect(existsSync(file)).toBe(false);
    expect(other.documentCount()).toBe(ids.length);
    for (const id of ids) expect(other.document(id)?.equals(replica.document(id) ?? Buffer.alloc(0)), id).toBe(true);
    const reader = ReplicaReader.open(restoredPath);
    expect(reader.state().currentAtMs).toBeUndefined();
    reader.close();
    expect(await other.verify()).toBe(true);
    // Still a working replica: it applies what follows the snapshot.
    await other.apply([{ seq: ids.length + 1, record: doc("cus_after") }], ids.length + 1);
    expect(other.revision).toBe(ids.length + 1);
    expect(other.document("cus_after")).toBeDefined();
    await Promise.all([replica.close(), other.close()]);
  });

  it("refuses a snapshot file of another schema or with no revision, and stays empty", async () => {
    const { path } = open();
    const source = Replica.open(path, silentLogger());
    await source.apply([{ seq: 1, record: doc("a") }], 1);
    const old = join(dirname(path), "old-schema.db");
    await source.snapshotTo(old);
    const db = new Database(old);
    db.exec(`UPDATE meta SET schema_version = ${SCHEMA_VERSION - 1}`);
    db.close();
    const empty = join(dirname(path), "empty.db");
    const blank = Replica.open(empty, silentLogger());
    await blank.close();
    const target = Replica.open(join(dirname(path), "target.db"), silentLogger());
    await expect(target.restore(old)).rejects.toThrow(new RegExp(`replica schema ${SCHEMA_VERSION - 1}`));
    await expect(target.restore(empty)).rejects.toThrow(/holds no revision/);
    expect(target.revision).toBe(0);
    expect(target.documentCount()).toBe(0);
    expect(existsSync(old)).toBe(true);
    await Promise.all([source.close(), target.close()]);
  });

  it("writes a compact snapshot at its revision and restores it into an empty replica only", async () => {
    const { path } = open();
    const replica = Replica.open(path, silentLogger());
    const catalog = decodeStateRecord(CATALOG_SUBJECT, encodeCatalogRecord(testCatalog({ coherencyWindowMs: 4321 })));
    await replica.apply([{ seq: 1, record: catalog }, { seq: 2, record: doc("a") }, { seq: 3, record: doc("b") }], 3);
    await replica.setStreamCreated("2026-02-02T00:00:00Z");
    const file = join(dirname(path), "snapshot.db");
    expect(await replica.snapshotTo(file)).toEqual({ revision: 3, streamCreated: "2026-02-02T00:00:00Z" });
    await expect(replica.restore(file)).rejects.toThrow(/empty replica/);

    const other = Replica.open(join(dirname(path), "other.db"), silentLogger());
    expect(await other.restore(file)).toEqual({ revision: 3, streamCreated: "2026-02-02T00:00:00Z" });
    expect(other.revision).toBe(3);
    expect(other.streamCreated).toBe("2026-02-02T00:00:00Z");
    expect(other.catalog.coherencyWindowMs).toBe(4321);
    expect(other.document("a")?.equals(replica.document("a") ?? Buffer.alloc(0))).toBe(true);
    expect(other.documentCount()).toBe(2);

    const garbage = join(dirname(path), "garbage.db");
    writeFileSync(garbage, "not a database at all");
    const third = Replica.open(join(dirname(path), "third.db"), silentLogger());
    await expect(third.restore(garbage)).rejects.toThrow(/not a replica snapshot: truncated/);
    expect(third.revision).toBe(0);
    expect(third.documentCount()).toBe(0);
    await Promise.all([replica.close(), other.close(), third.close()]);
  });
});

describe("freshness", () => {
  it("is stale until confirmed current, then again once the window has passed", () => {
    const f = new Freshness();
    expect(f.isStale(0, 1000)).toBe(true);
    f.heartbeat(10, 100, 10);
    expect(f.isStale(1100, 1000)).toBe(false);
    expect(f.isStale(1101, 1000)).toBe(true);
    expect(f.lagRevisions(10)).toBe(0);
  });

  it("dates currency by the heartbeat the replica reached, not by when it reached it", () => {
    const f = new Freshness();
    f.heartbeat(5, 0, 5);
    f.heartbeat(20, 500, 10);
    expect(f.lagRevisions(10)).toBe(10);
    f.applied(15);
    expect(f.ageMs(2000)).toBe(2000);
    f.applied(20);
    expect(f.ageMs(2000)).toBe(1500);
  });

  it("settles heartbeats asked before a NATS confirmation (purged tails) and reports the head", () => {
    const f = new Freshness();
    f.heartbeat(30, 100, 10);
    f.heartbeat(40, 300, 10);
    expect(f.confirmedAt(200)).toBe(30);
    expect(f.ageMs(250)).toBe(50);
    f.reset();
    expect(f.everCaughtUp).toBe(false);
    expect(f.isStale(300, 1e9)).toBe(true);
  });

  it("never dates currency after the writer's last heartbeat: NATS alone says caught up, not current", () => {
    const f = new Freshness();
    f.confirmedAt(100);
    expect(f.everCaughtUp).toBe(true);
    expect(f.isStale(100, 1000)).toBe(true);
    f.heartbeat(5, 200, 5);
    // The writer goes silent; NATS keeps confirming nothing is pending.
    f.confirmedAt(5_000);
    expect(f.ageMs(5_000)).toBe(4_800);
    expect(f.isStale(5_000, 1000)).toBe(true);
  });

  it("is stale while the replica file has not passed its structural check, confirmed or not", () => {
    const f = new Freshness();
    f.verifying(true);
    f.heartbeat(10, 100, 10);
    expect(f.isStale(200, 1000)).toBe(true);
    expect(f.ageMs(200)).toBe(Infinity);
    f.verifying(false);
    expect(f.isStale(200, 1000)).toBe(false);
    expect(f.ageMs(200)).toBe(100);
  });

  it("notices a writer head behind the replica (a recreated stream)", () => {
    const f = new Freshness();
    f.heartbeat(3, 0, 10);
    expect(f.headBehind(10)).toBe(true);
    f.heartbeat(12, 0, 10);
    expect(f.headBehind(10)).toBe(false);
  });
});

describe("request validation", () => {
  const ok = { customerId: "c", feature: "f", quantity: undefined, minRevision: undefined };
  const field = (fn: () => void): string | undefined => {
    try {
      fn();
    } catch (err) {
      if (err instanceof InvalidArgumentError) return err.field;
      throw err;
    }
    return undefined;
  };

  it("names the offending field", () => {
    expect(field(() => validateCheck(ok, ""))).toBeUndefined();
    expect(field(() => validateCheck({ ...ok, customerId: "" }, ""))).toBe("customer_id");
    expect(field(() => validateCheck({ ...ok, customerId: "x".repeat(257) }, ""))).toBe("customer_id");
    expect(field(() => validateCheck({ ...ok, customerId: "x".repeat(256) }, ""))).toBeUndefined();
    expect(field(() => validateCheck({ ...ok, customerId: "😀".repeat(65) }, ""))).toBe("customer_id");
    expect(field(() => validateCheck({ ...ok, feature: "" }, "checks[2]."))).toBe("checks[2].feature");
    expect(field(() => validateCheck({ ...ok, quantity: -1 }, ""))).toBe("quantity");
    expect(field(() => validateCheck({ ...ok, quantity: 0 }, ""))).toBeUndefined();
  });
});

describe("min_revision waiters", () => {
  it("resolve when the revision is reached, or false at their deadline", async () => {
    let revision = 3;
    const w = new RevisionWaiters(() => revision);
    expect(await w.wait(3, 0)).toBe(true);
    expect(await w.wait(4, 0)).toBe(false);
    const reached = w.wait(5, 60_000);
    const missed = w.wait(9, 1);
    revision = 5;
    w.notify(5);
    expect(await reached).toBe(true);
    expect(await missed).toBe(false);
    const released = w.wait(100, 60_000);
    w.releaseAll();
    expect(await released).toBe(false);
  });
});

describe("recovery from a corrupt replica", () => {
  it("forgets a heartbeat that confirmed the corrupt file while it was being replaced: the new, empty replica is not current", async () => {
    const d = tempDir();
    try {
      const replica = Replica.open(join(d.path, "replica.db"), silentLogger());
      const doc = decodeStateRecord(customerSubject("a"), encodeDocumentRecord(AccessDocument.encode(paidCustomer("a", "basic", 0)).finish()));
      await replica.apply([{ seq: 1, record: doc }], 5);
      expect(replica.revision).toBe(5);
      const freshness = new Freshness();
      const metrics = new SidecarMetrics(createRegistry(), { revision: () => 0, head: () => 0, ageSeconds: () => 0, heartbeatAgeSeconds: () => 0, stale: () => false, ready: () => false, connected: () => false });
      let recovered!: () => void;
      const done = new Promise<void>((resolve) => (recovered = resolve));
      // Not started: no NATS; the test plays the heartbeat the follower would have received.
      const follower = new Follower(replica, freshness, metrics, silentLogger(), {
        natsUrl: "nats://127.0.0.1:1",
        natsCreds: "",
        natsUser: "",
        natsPassword: "",
        natsToken: "",
        offlineReadyAfterMs: 60_000,
        coherencyWindowMs: () => 60_000,
        onRevision: () => recovered(),
        onReady: () => undefined,
      });
      // Recovery waits here, as it waits for the old file's writer thread to close.
      let release!: () => void;
      const closing = new Promise<void>((resolve) => (release = resolve));
      const recover = replica.recover.bind(replica);
      let entered!: () => void;
      const inRecovery = new Promise<void>((resolve) => (entered = resolve));
      replica.recover = async () => {
        entered();
        await closing;
        await recover();
      };
      expect(replica.noteCorruption(new Database.SqliteError("database disk image is malformed", "SQLITE_CORRUPT"), "reading")).toBe(true);
      await inRecovery;
      expect(freshness.isStale(performance.now(), 60_000)).toBe(true);
      // A heartbeat at the old file's revision: it confirms the file being replaced.
      freshness.heartbeat(replica.revision, performance.now(), replica.revision);
      expect(freshness.isStale(performance.now(), 60_000)).toBe(false);
      release();
      await done;
      expect(replica.revision).toBe(0);
      expect(freshness.isStale(performance.now(), 60_000)).toBe(true);
      await follower.close();
      await replica.close();
    } finally {
      d.dispose();
    }
  });
});
