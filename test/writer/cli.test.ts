import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect, test } from "vitest";

const BIN = fileURLToPath(new URL("../../bin/proofgate.js", import.meta.url));
const run = (...args: string[]) => spawnSync(process.execPath, [BIN, "writer", ...args], { encoding: "utf8", env: { ...process.env, PROOFGATE_LOG_LEVEL: "silent" } });

test("proofgate writer --help lists every option as a flag and a PROOFGATE_* variable with its default", () => {
  const r = run("--help");
  expect(r.status).toBe(0);
  for (const line of [
    "--nats-url / PROOFGATE_NATS_URL",
    "--nats-creds / PROOFGATE_NATS_CREDS",
    "--ledger / PROOFGATE_LEDGER",
    "--grpc-listen / PROOFGATE_GRPC_LISTEN",
    "--http-listen / PROOFGATE_HTTP_LISTEN",
    "--writer-id / PROOFGATE_WRITER_ID",
    "--stream-replicas / PROOFGATE_STREAM_REPLICAS",
    "--heartbeat-interval / PROOFGATE_HEARTBEAT_INTERVAL",
    "--log-level / PROOFGATE_LOG_LEVEL",
  ])
    expect(r.stdout).toContain(line);
  expect(r.stdout).toContain('"127.0.0.1:50051"');
  expect(r.stdout).toContain('"nats://127.0.0.1:4222"');
});

test("a bad option value is refused, naming the option", () => {
  const r = run("--heartbeat-interval", "soon");
  expect(r.status).toBe(2);
  expect(r.stderr).toContain("--heartbeat-interval: must be a duration");
  const env = spawnSync(process.execPath, [BIN, "writer"], { encoding: "utf8", env: { ...process.env, PROOFGATE_STREAM_REPLICAS: "zero" } });
  expect(env.status).toBe(2);
  expect(env.stderr).toContain("PROOFGATE_STREAM_REPLICAS: must be an integer");
});

test("an unknown flag is refused", () => {
  const r = run("--nats-ulr", "nats://x");
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/--nats-ulr/);
});
