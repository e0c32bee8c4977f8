import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import * as http2 from "node:http2";
import * as net from "node:net";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { NatsServer } from "../harness/nats.js";
import { tempDir } from "../harness/tmp.js";
import { CheckClient, StatePublisher, httpGet, paidCustomer, spawnSidecar, testCatalog, waitFor } from "../harness/sidecar.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { MAX_CONCURRENT_STREAMS } from "../../src/transport/grpc.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const bin = join(ROOT, "bin/proofgate.js");

/** `proofgate sidecar` as an operator runs it (needs `npm run build`). */
describe("proofgate sidecar (child process)", () => {
  let nats: NatsServer;
  let dir: ReturnType<typeof tempDir>;
  let pub: StatePublisher;

  beforeAll(async () => {
    if (!existsSync(join(ROOT, "dist/cli/main.js"))) throw new Error("dist/ is missing: run `npm run build` first");
    nats = await NatsServer.start();
    dir = tempDir();
    pub = await StatePublisher.connect(nats.url);
    await pub.catalog(testCatalog());
  });

  afterAll(async () => {
    await pub.close();
    await nats.dispose();
    dir.dispose();
  });

  it("documents every option as a flag and a PROOFGATE_* variable", () => {
    const r = spawnSync(process.execPath, [bin, "sidecar", "--help"], { encoding: "utf8" });
    expect(r.status).toBe(0);
    for (const flag of ["--nats-url", "--nats-creds", "--replica", "--grpc-listen", "--grpc-socket", "--http-listen", "--min-revision-wait", "--decision-log-sample", "--log-level"]) {
      expect(r.stdout).toContain(flag);
    }
    expect(r.stdout).toContain("PROOFGATE_MIN_REVISION_WAIT");
  });

  it("refuses a bad option value, naming it", () => {
    const r = spawnSync(process.execPath, [bin, "sidecar", "--decision-log-sample", "2"], { encoding: "utf8" });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain("--decision-log-sample");
    const env = spawnSync(process.execPath, [bin, "sidecar"], { encoding: "utf8", env: { ...process.env, PROOFGATE_MIN_REVISION_WAIT: "soon" } });
    expect(env.status).not.toBe(0);
    expect(env.stderr).toContain("PROOFGATE_MIN_REVISION_WAIT");
  });

  it("serves checks over TCP and a unix socket from flags and environment, and exits cleanly on SIGTERM", async () => {
    const socket = join(dir.path, "sidecar.sock");
    const id = "cus_cli";
    const rev = await pub.document(paidCustomer(id, "premium", Date.now()));
    const proc = await spawnSidecar(
      ["--nats-url", nats.url, "--replica", join(dir.path, "cli-replica.db"), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
      { PROOFGATE_GRPC_SOCKET: socket, PROOFGATE_LOG_LEVEL: "info" },
    );
    const tcp = proc.grpcAddresses.find((a) => !a.startsWith("unix:"));
    expect(tcp).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(proc.grpcAddresses).toContain(`unix:${socket}`);
    const viaTcp = new CheckClient(tcp ?? "");
    const viaSocket = new CheckClient(`unix:${socket}`);
    try {
      await waitFor(async () => (await viaSocket.healthStatus()) === "SERVING", { what: "SERVING" });
      const r = await viaSocket.check({ customerId: id, feature: "api-access", minRevision: rev });
      expect(r.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
      expect((await viaTcp.check({ customerId: id, feature: "ai-assistant" })).status).toBe(AccessStatus.ACCESS_STATUS_NOT_ENTITLED);
      expect((await httpGet(proc.httpAddress ?? "", "/readyz")).status).toBe(200);
      // Logs name customers by token only.
      expect(proc.output()).not.toContain(id);
    } finally {
      viaTcp.close();
      viaSocket.close();
    }
    expect(await proc.stop("SIGTERM")).toBe(0);
    expect(proc.output()).toContain("sidecar stopped");
    expect(existsSync(socket)).toBe(false);
  });

  /*
   * What prevents the stall described at MAX_CONCURRENT_STREAMS: the limit the sidecar announces,
   * and a burst beyond it queued by the client, not refused. (Whether a burst stalls depends on
   * scheduling, so the stall itself cannot be shown on demand.)
   */
  it("bounds the streams of one unix-socket connection, and queues a burst beyond the bound", async () => {
    const socket = join(dir.path, "burst.sock");
    const id = "cus_burst";
    const rev = await pub.document(paidCustomer(id, "premium", Date.now()));
    const proc = await spawnSidecar(["--nats-url", nats.url, "--replica", join(dir.path, "burst-replica.db"), "--grpc-listen", "127.0.0.1:0", "--grpc-socket", socket, "--http-listen", "127.0.0.1:0"]);
    const session = http2.connect("http://localhost", { createConnection: () => net.connect(socket) });
    const client = new CheckClient(`unix:${socket}`);
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        session.once("remoteSettings", resolve);
        session.once("error", reject);
      });
      expect(settings.maxConcurrentStreams).toBe(MAX_CONCURRENT_STREAMS);
      expect((await client.check({ customerId: id, feature: "api-access", minRevision: rev })).status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
      const burst = await Promise.allSettled(Array.from({ length: 10 * MAX_CONCURRENT_STREAMS }, () => client.check({ customerId: id, feature: "api-access" })));
      const failed = burst.filter((r): r is PromiseRejectedResult => r.status === "rejected");
      expect(failed.length, String(failed[0]?.reason)).toBe(0);
    } finally {
      session.destroy();
      client.close();
    }
    expect(await proc.stop("SIGTERM")).toBe(0);
  });
});
