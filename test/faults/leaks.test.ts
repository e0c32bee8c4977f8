import { statSync } from "node:fs";
import { join } from "node:path";
import { expect, test } from "vitest";
import { NatsServer } from "../harness/nats.js";
import { cleanupAfterAll, tempDir } from "../harness/tmp.js";
import { WriterClient, WriterProcess } from "../harness/writer.js";
import { waitFor } from "../harness/wait.js";
import { startSidecarProcess } from "../harness/system.js";
import { redactNatsUrl } from "../../src/replication/connection.js";

const cleanup = cleanupAfterAll();

test("a password in --nats-url never reaches the logs, and ledger and replica files are readable by their owner only", async () => {
  const nats = await NatsServer.start();
  cleanup.push(() => nats.dispose());
  const dir = tempDir("proofgate-leaks-");
  cleanup.push(() => dir.dispose());
  const url = nats.url.replace("nats://", "nats://operator:s3cret-pw@");
  const ledgerPath = join(dir.path, "ledger.db");
  const writer = await WriterProcess.start({ natsUrl: url, ledgerPath });
  cleanup.push(() => writer.stop("SIGKILL"));
  await waitFor(async () => (await writer.http("/readyz")).status === 200, "writer ready");
  const client = new WriterClient(writer.grpcAddress);
  cleanup.push(() => client.close());
  await client.applyCatalog();
  const replicaPath = join(dir.path, "replica.db");
  const sidecar = await startSidecarProcess("leaks", url, replicaPath);
  cleanup.push(() => sidecar.stop("SIGKILL"));
  await waitFor(async () => (await sidecar.client.healthStatus()) === "SERVING", "sidecar ready");

  expect(writer.output()).toContain("***@127.0.0.1");
  expect(writer.output()).not.toContain("s3cret-pw");
  expect(sidecar.proc.output()).not.toContain("s3cret-pw");
  for (const file of [ledgerPath, `${ledgerPath}-wal`]) expect(statSync(file).mode & 0o777).toBe(0o600);
  // The replica: nothing for others; its group may read it (the client's local mode, same pod).
  expect(statSync(replicaPath).mode & 0o777).toBe(0o660);
  expect(redactNatsUrl("nats://a:b@h1:4222, tls://tok@h2:4222,nats://h3")).toBe("nats://***@h1:4222, tls://***@h2:4222,nats://h3");
});
