import { randomBytes } from "node:crypto";
import { existsSync, openSync, closeSync, statSync, truncateSync, writeSync } from "node:fs";
import { join } from "node:path";
import { status as grpcStatus, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, expect, test } from "vitest";
import { PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { startWriterSystem, type WriterSystem } from "../harness/demo.js";
import { EventFactory } from "../harness/writer.js";
import { waitFor } from "../harness/wait.js";
import { alive } from "../harness/processes.js";
import { metric, startSidecarProcess } from "../harness/system.js";

/**
 * A corrupt replica file (truncated, a bad header, random bytes in the middle) is set aside and
 * rebuilt from the stream: the sidecar neither exits nor answers INTERNAL, and never answers an
 * unknown customer as fresh while it rebuilds.
 */
const cleanup: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

let system: WriterSystem;
const customers = Array.from({ length: 1_500 }, (_, i) => `cus_corrupt_${i}`);
let revision = 0;

beforeAll(async () => {
  system = await startWriterSystem("corrupt");
  cleanup.push(() => system.close());
  // At most 1,000 events per call.
  for (let i = 0; i < customers.length; i += 500) {
    const events = customers.slice(i, i + 500).flatMap((c) => {
      const f = new EventFactory(c);
      return [f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)];
    });
    revision = (await system.client.publish(events)).revision;
  }
});

function overwrite(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, "r+");
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

const corruptions: readonly { readonly name: string; readonly corrupt: (path: string) => void }[] = [
  { name: "truncated to half its size", corrupt: (path) => truncateSync(path, Math.floor(statSync(path).size / 2)) },
  { name: "with a bad header", corrupt: (path) => overwrite(path, 0, Buffer.from("definitely not SQLite")) },
  // 64 KiB: eight 8 KiB pages' headers and cells, in the middle of the documents' B-tree.
  { name: "with random bytes in the middle", corrupt: (path) => overwrite(path, Math.floor(statSync(path).size / 2 / 8192) * 8192, randomBytes(64 * 1024)) },
];

for (const { name, corrupt } of corruptions) {
  test(`a replica file ${name} is set aside and rebuilt from the stream, answering no INTERNAL and no fresh UNKNOWN_CUSTOMER`, async () => {
    const replicaPath = join(system.dir, `${name.replace(/\W+/g, "-")}.db`);
    const first = await startSidecarProcess("corrupt-first", system.nats.url, replicaPath);
    await first.client.check({ customerId: customers[0] ?? "", feature: "api-access", minRevision: revision });
    await waitFor(async () => !(await first.client.check({ customerId: customers[0] ?? "", feature: "api-access" })).stale, "fresh");
    // A clean stop: the WAL is checkpointed into the file, which is then all there is.
    expect(await first.stop("SIGTERM")).toBe(0);
    expect(existsSync(`${replicaPath}-wal`)).toBe(false);
    corrupt(replicaPath);

    const sidecar = await startSidecarProcess("corrupt-again", system.nats.url, replicaPath);
    cleanup.push(() => sidecar.stop("SIGKILL"));
    const problems: string[] = [];
    const recovered = waitFor(
      async () => {
        let done = true;
        for (const c of customers.filter((_, i) => i % 10 === 0)) {
          try {
            const r = await sidecar.client.check({ customerId: c, feature: "api-access" });
            if (r.status === AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER && !r.stale) problems.push(`${c}: UNKNOWN_CUSTOMER, not stale`);
            if (r.status !== AccessStatus.ACCESS_STATUS_GRANTED || r.stale) done = false;
          } catch (err) {
            // While the file is being replaced a check may be refused as UNAVAILABLE; never INTERNAL.
            const code = (err as ServiceError).code;
            if (code !== grpcStatus.UNAVAILABLE) problems.push(`${c}: gRPC status ${code}: ${(err as ServiceError).details}`);
            done = false;
          }
        }
        return done;
      },
      "every customer granted and fresh from the rebuilt replica",
      60_000,
    );
    await recovered.catch((err: unknown) => {
      throw new Error(`${String(err)}\nproblems: ${problems.slice(0, 5).join("; ")}\n${sidecar.proc.output().slice(-4000)}`);
    });
    expect(problems).toEqual([]);
    expect(alive(sidecar.proc.child.pid ?? -1)).toBe(true);
    expect(sidecar.proc.output()).toMatch(/the replica file is corrupt; setting it aside and rebuilding it from the stream/);
    expect(await metric(sidecar.httpAddress, "proofgate_sidecar_replica_rebuilds_total", { reason: "corrupt replica" })).toBe(1);
    expect(existsSync(`${replicaPath}.corrupt`)).toBe(true);
    expect(await sidecar.client.healthStatus()).toBe("SERVING");
    await sidecar.stop("SIGTERM");
  }, 120_000);
}
