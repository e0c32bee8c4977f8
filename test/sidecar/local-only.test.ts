import { statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { silentLogger } from "../../src/observability/logger.js";
import { startSidecar } from "../../src/sidecar/index.js";
import { NatsServer } from "../harness/nats.js";
import { startTestSidecar } from "../harness/sidecar.js";
import { tempDir } from "../harness/tmp.js";

let nats: NatsServer;
const dir = tempDir("proofgate-sidecar-local-");

beforeAll(async () => {
  nats = await NatsServer.start();
});
afterAll(async () => {
  await nats.dispose();
  dir.dispose();
});

test("the unix socket of the unauthenticated CheckService is for the pod's user and group only", async () => {
  const s = await startTestSidecar({ natsUrl: nats.url, dir: dir.path, socket: true });
  try {
    expect(statSync(join(dir.path, "check.sock")).mode & 0o777).toBe(0o660);
  } finally {
    await s.close();
  }
});

test("TCP on a non-loopback address needs an explicit option", async () => {
  const options = { natsUrl: nats.url, replica: join(dir.path, "r2.db"), grpcListen: "0.0.0.0:0", httpListen: "" };
  await expect(startSidecar(options, silentLogger())).rejects.toThrow(/grpc-listen: 0\.0\.0\.0:0 is not a loopback address .* set --grpc-allow-remote/);
  // (Not bound with the option set: tests listen on loopback only.)
});
