import { execFileSync } from "node:child_process";
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import { status, type ServiceError } from "@grpc/grpc-js";
import { afterAll, expect, test } from "vitest";
import { BillingEvent, PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { IngestResult } from "../../src/gen/proofgate/v1/ingest.js";
import { NatsServer } from "../harness/nats.js";
import { metric } from "../harness/system.js";
import { tempDir } from "../harness/tmp.js";
import { waitFor } from "../harness/wait.js";
import { EventFactory, WriterClient, WriterProcess, connectNats } from "../harness/writer.js";

/**
 * The ledger on a small tmpfs that fills up, under a real writer process and nats-server: gRPC
 * Publish answers RESOURCE_EXHAUSTED saying the ledger's disk is full (not `INTERNAL`), billing
 * events from NATS wait on the input stream instead of being lost or dead-lettered, and once space
 * is back every one of them is applied, and so is the call that failed (it was on the input stream
 * already: its retry answers DUPLICATE or ACCEPTED). Needs root (mount).
 */
const cleanup: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

const FS_BYTES = 8 * 1024 * 1024;

/** A size-limited tmpfs under a temp directory; fails the test with the reason when it cannot be mounted. */
function smallFilesystem(): string {
  const dir = tempDir("proofgate-disk-full-");
  cleanup.push(() => dir.dispose());
  const mnt = join(dir.path, "fs");
  mkdirSync(mnt);
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${FS_BYTES}`, "tmpfs", mnt], { stdio: "pipe" });
  } catch (err) {
    throw new Error(`this test needs a size-limited tmpfs to fill up and could not mount one (it must run as root with mount allowed): ${(err as Error).message}`);
  }
  cleanup.push(() => execFileSync("umount", ["-l", mnt]));
  return mnt;
}

/** Writes a file until the filesystem is full; returns its path. Bounded by the filesystem's size. */
function fill(dir: string): string {
  const file = join(dir, "filler");
  const fd = openSync(file, "w");
  const chunk = Buffer.alloc(16 * 1024, 1);
  try {
    for (let i = 0; i <= FS_BYTES / chunk.length; i++) writeSync(fd, chunk);
    throw new Error("the filesystem never filled up");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    closeSync(fd);
  }
  return file;
}

const reason = (i: number): string => `card_declined ${i} `.padEnd(1000, ".");

test("a full ledger disk answers RESOURCE_EXHAUSTED with the reason, loses no NATS event, and recovers when space is back", async () => {
  const mnt = smallFilesystem();
  const nats = await NatsServer.start();
  cleanup.push(() => nats.dispose());
  const writer = await WriterProcess.start({ natsUrl: nats.url, ledgerPath: join(mnt, "ledger.db") });
  cleanup.push(() => writer.stop("SIGKILL"));
  const client = new WriterClient(writer.grpcAddress);
  cleanup.push(() => client.close());
  await waitFor(async () => (await writer.http("/readyz")).status === 200, "writer ready");
  await client.applyCatalog();
  const warm = new EventFactory("cus_before_full");
  await client.publish([warm.subscribe("premium")]);

  const filler = fill(mnt);

  // gRPC: batches of events with 1 KB reasons until the ledger cannot grow (bounded).
  let full: ServiceError | undefined;
  let failed: BillingEvent[] = [];
  for (let b = 0; b < 100 && !full; b++) {
    const f = new EventFactory(`cus_grpc_${b}`);
    const batch = [f.subscribe("premium"), ...Array.from({ length: 40 }, (_, i) => f.pay(PaymentResult.PAYMENT_RESULT_FAILED, `in_${i}`, { failureReason: reason(i) }))];
    await client.publish(batch).catch((err: unknown) => {
      full = err as ServiceError;
      failed = batch;
    });
  }
  expect(full, "the ledger never filled up").toBeDefined();
  expect(full?.code).toBe(status.RESOURCE_EXHAUSTED);
  expect(full?.details).toMatch(/^ledger disk is full: .*\(SQLITE_FULL\); the change is on the input stream and is applied once the ledger can be written; retrying is safe$/);
  // Nothing of the failed call was half-applied.
  const firstFailed = failed[0];
  if (!firstFailed) throw new Error("no failed batch");
  await expect(client.getCustomer(firstFailed.customerId)).rejects.toMatchObject({ code: status.NOT_FOUND });

  // NATS: the same kind of events, published while the disk is full.
  const nc = await connectNats(nats.url);
  cleanup.push(() => nc.close());
  const js = nc.jetstream();
  const natsCustomers = Array.from({ length: 20 }, (_, i) => new EventFactory(`cus_nats_${i}`));
  const natsEvents = natsCustomers.flatMap((f) => [f.subscribe("premium"), ...Array.from({ length: 10 }, (_, i) => f.pay(PaymentResult.PAYMENT_RESULT_FAILED, `in_${i}`, { failureReason: reason(i) }))]);
  await Promise.all(natsEvents.map((e) => js.publish("proofgate.billing.test", BillingEvent.encode(e).finish())));
  // While the disk is full, they wait on the input stream, unapplied, and the writer says why.
  await waitFor(() => /ledger transaction failed; the inputs will be folded again/.test(writer.output()), "the writer reports the failed ledger transaction");
  await expect(client.getCustomer(natsCustomers[0]?.customerId ?? "")).rejects.toMatchObject({ code: status.NOT_FOUND });

  // Space comes back: everything is applied, nothing was rejected, the writer never stopped.
  // The operator frees space and grows the volume: everything that waited on the input stream
  // must fit now (the ledger and its WAL had already taken what the filler left).
  rmSync(filler);
  execFileSync("mount", ["-o", `remount,size=${4 * FS_BYTES}`, "tmpfs", mnt], { stdio: "pipe" });
  const retried = await waitFor(
    () => client.publish(failed),
    "the failed call succeeds when retried",
  );
  for (const r of retried.results) expect([IngestResult.INGEST_RESULT_ACCEPTED, IngestResult.INGEST_RESULT_DUPLICATE]).toContain(r.result);
  expect((await client.getCustomer(firstFailed.customerId)).facts.length).toBe(failed.length);
  await waitFor(async () => {
    for (const f of natsCustomers) if ((await client.getCustomer(f.customerId).catch(() => ({ facts: [] }))).facts.length !== 11) return false;
    return true;
  }, "every NATS event applied", 60_000);
  for (const f of natsCustomers) expect((await client.getCustomer(f.customerId)).facts.length).toBe(11);
  expect(await metric(writer.httpAddress, "proofgate_writer_events_total", { source: "nats", result: "rejected" })).toBeUndefined();
  expect(await metric(writer.httpAddress, "proofgate_writer_events_total", { source: "nats", result: "accepted" })).toBe(natsEvents.length);
  expect((await writer.http("/readyz")).status).toBe(200);
});
