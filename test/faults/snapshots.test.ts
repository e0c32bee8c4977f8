import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { JetStreamManager, NatsConnection } from "nats";
import { type BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { CheckResponse } from "../../src/gen/proofgate/v1/check.js";
import { SNAPSHOT_BUCKET, downloadSnapshot, fileDigest, listSnapshots, putSnapshot } from "../../src/snapshot/store.js";
import { streamIdentity } from "../../src/replication/streams.js";
import { NatsServer } from "../harness/nats.js";
import { WriterClient, WriterProcess, demoCatalog, streamLastSeq } from "../harness/writer.js";
import { startWriterSystem, type WriterSystem } from "../harness/demo.js";
import { waitFor } from "../harness/wait.js";
import { BillingTraffic, expectConverged, mapLimit, metric, publishAccepted, seedEvents, startSidecarProcess, testRng, type SidecarUnderTest } from "../harness/system.js";

/**
 * Replica snapshots with real processes: a writer producing snapshots into the Object Store,
 * sidecars restoring from them (or refusing bad ones and replaying), compared with a sidecar
 * that replayed the whole stream, customer by customer and feature by feature.
 */
const SEEDED = 2_000;

describe("replica snapshots", () => {
  let nats: NatsServer;
  let system: WriterSystem;
  let dir: string;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let writer: WriterProcess;
  let client: WriterClient;
  /** Replays the stream, never restores a snapshot. */
  let replayed: SidecarUnderTest;
  const sent = new Map<string, BillingEvent[]>();
  const started: SidecarUnderTest[] = [];

  const publish = (events: readonly BillingEvent[]): Promise<number> => publishAccepted(client, events, sent);
  const sidecar = async (name: string, args: readonly string[] = []): Promise<SidecarUnderTest> => {
    const sc = await startSidecarProcess(name, nats.url, join(dir, `${name}.db`), args);
    started.push(sc);
    return sc;
  };
  const target = (sidecars: SidecarUnderTest[]) => ({ nc, jsm, writer: { client, httpAddress: writer.httpAddress }, sidecars, expected: sent });

  /** Every customer × feature from both sidecars at `revision`, as JSON; they must be identical. */
  const expectSameAnswers = async (a: SidecarUnderTest, b: SidecarUnderTest, revision: number): Promise<void> => {
    const features = demoCatalog().features.map((f) => f.key);
    const checks = [...sent.keys()].sort().flatMap((customerId) => features.map((feature) => ({ customerId, feature, quantity: feature === "seats" ? 2 : undefined })));
    const answers = async (sc: SidecarUnderTest): Promise<CheckResponse[]> =>
      (
        await mapLimit(
          Array.from({ length: Math.ceil(checks.length / 1_000) }, (_, i) => checks.slice(i * 1_000, (i + 1) * 1_000)),
          4,
          async (chunk) => (await sc.client.checkBatch({ checks: chunk, minRevision: revision })).results,
        )
      ).flat();
    const [x, y] = await Promise.all([answers(a), answers(b)]);
    expect(x).toHaveLength(checks.length);
    expect(y).toHaveLength(checks.length);
    const differ = checks.flatMap((c, i) => {
      const p = JSON.stringify(CheckResponse.toJSON(x[i] as CheckResponse));
      const q = JSON.stringify(CheckResponse.toJSON(y[i] as CheckResponse));
      return p === q ? [] : [`${c.customerId} ${c.feature}: ${p} vs ${q}`];
    });
    expect(differ.slice(0, 5)).toEqual([]);
    expect(x.every((r) => r.revision === revision && !r.stale)).toBe(true);
  };

  beforeAll(async () => {
    system = await startWriterSystem("snapshots", { writerArgs: ["--snapshot-interval", "1s"] });
    ({ nats, dir, nc, jsm, writer, client } = system);
    const seeded = await publish(seedEvents(SEEDED));
    await waitFor(async () => ((await listSnapshots(jsm, nc.jetstream()))[0]?.meta.revision ?? 0) >= seeded, "the writer to put a snapshot of the seeded stream", 30_000);
    replayed = await sidecar("replayed", ["--snapshot-bootstrap", "false"]);
  });

  afterAll(async () => {
    for (const s of started) await s.stop("SIGKILL");
    await system.close();
  });

  test("a sidecar started from a snapshot answers exactly like one that replayed the stream", async () => {
    const rng = testRng();
    const snapshot = (await listSnapshots(jsm, nc.jetstream()))[0];
    expect(snapshot?.meta.streamCreated).toBe(streamIdentity(await jsm.streams.info("PROOFGATE_STATE")));
    const restored = await sidecar("restored");
    // Changes after the snapshot, while it restores: it must follow them from the snapshot's revision.
    await publish(new BillingTraffic(rng, [...sent.keys()], `after${rng.seed}`).burst(300));
    const converged = await expectConverged(target([replayed, restored]));
    expect(converged.revision).toBe(await streamLastSeq(jsm));
    expect(await metric(restored.httpAddress, "proofgate_sidecar_snapshot_restores_total", { result: "restored" })).toBe(1);
    expect(await metric(restored.httpAddress, "proofgate_sidecar_snapshot_restores_total", { result: "refused" })).toBeUndefined();
    expect(restored.proc.output()).toMatch(/restored the replica from a snapshot/);
    expect(await metric(replayed.httpAddress, "proofgate_sidecar_snapshot_restores_total", { result: "restored" })).toBeUndefined();
    await expectSameAnswers(replayed, restored, converged.revision);
  });

  test("corrupt, truncated and unreadable snapshots are refused and the sidecar replays the stream", async () => {
    const good = (await listSnapshots(jsm, nc.jetstream()))[0];
    if (!good) throw new Error("no snapshot");
    const original = join(dir, "good.snapshot");
    await downloadSnapshot(nc.jetstream(), good, original);
    const bytes = readFileSync(original);
    const os = await nc.jetstream().views.os(SNAPSHOT_BUCKET);
    for (const s of await listSnapshots(jsm, nc.jetstream())) await os.delete(s.name);
    const put = async (name: string, content: Buffer, declared: { sha256: string; size: number }, revision: number): Promise<void> => {
      const file = join(dir, name);
      writeFileSync(file, content);
      await putSnapshot(nc.jetstream(), file, { ...good.meta, ...declared, revision }, 10);
    };
    const declared = await fileDigest(original);
    // One byte flipped in the middle: the checksum no longer matches.
    const flipped = Buffer.from(bytes);
    flipped[flipped.length >> 1] = (flipped[flipped.length >> 1] ?? 0) ^ 0xff;
    await put("flipped", flipped, declared, good.meta.revision);
    // Cut in half: shorter than declared.
    await put("truncated", bytes.subarray(0, bytes.length >> 1), declared, good.meta.revision - 1);
    // Checksummed correctly, but not a replica file at all.
    const garbage = Buffer.from("this is not a SQLite database, whatever its checksum says");
    writeFileSync(join(dir, "garbage"), garbage);
    await put("garbage", garbage, await fileDigest(join(dir, "garbage")), good.meta.revision - 2);
    expect((await listSnapshots(jsm, nc.jetstream())).map((s) => s.meta.revision)).toEqual([good.meta.revision, good.meta.revision - 1, good.meta.revision - 2]);

    const fallback = await sidecar("fallback");
    const converged = await expectConverged(target([replayed, fallback]));
    expect(await metric(fallback.httpAddress, "proofgate_sidecar_snapshot_restores_total", { result: "refused" })).toBe(3);
    expect(await metric(fallback.httpAddress, "proofgate_sidecar_snapshot_restores_total", { result: "restored" })).toBeUndefined();
    const output = fallback.proc.output();
    expect(output).toMatch(/SHA-256/);
    expect(output).toMatch(/truncated/);
    expect(output).toMatch(/replica snapshot refused/);
    await expectSameAnswers(replayed, fallback, converged.revision);
  });
});
