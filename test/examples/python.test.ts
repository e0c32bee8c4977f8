import { execFile, execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestStack, type TestStack } from "../harness/stack.js";
import { type TestSidecar } from "../harness/sidecar.js";
import { type TestWriter } from "../harness/writer.js";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** The system's Python, where Debian's python3-grpcio lives (not a version manager's shim). */
const PYTHON = "/usr/bin/python3";

/** The example needs python3-grpcio, protobuf-compiler and protobuf-compiler-grpc (CI installs them: .ci/run). */
function pythonToolsInstalled(): boolean {
  try {
    execFileSync(PYTHON, ["-c", "import grpc, google.protobuf"], { stdio: "ignore" });
    execFileSync("sh", ["-c", "command -v protoc && command -v grpc_python_plugin"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

describe.runIf(pythonToolsInstalled())("the Python example client (examples/python)", () => {
  let stack: TestStack;
  let dir: string;
  let writer: TestWriter;
  let sc: TestSidecar;

  beforeAll(async () => {
    stack = await startTestStack({ sidecar: () => ({ socket: true }) });
    ({ dir, writer, sc } = stack);
  });

  afterAll(() => stack.close());

  it("generates its stubs from proto/, publishes to the writer and checks at the sidecar (TCP and unix socket)", async () => {
    const gen = `${dir}/gen`;
    await run("sh", [`${ROOT}examples/python/generate.sh`, gen]);
    const example = async (sidecar: string, customer: string): Promise<Record<string, unknown>> => {
      const { stdout } = await run(PYTHON, [`${ROOT}examples/python/proofgate_example.py`, "--writer", writer.writer.grpcAddress, "--sidecar", sidecar, "--customer", customer, "--gen", gen], { timeout: 60_000 });
      return JSON.parse(stdout) as Record<string, unknown>;
    };
    const tcp = await example(sc.sidecar.grpcAddress ?? "", "cus_python");
    expect(tcp).toMatchObject({ results: ["INGEST_RESULT_ACCEPTED", "INGEST_RESULT_ACCEPTED"], allowed: true, status: "ACCESS_STATUS_GRANTED", stale: false });
    expect(tcp["reason"]).toMatch(/^Paid through/);
    expect(tcp["revision"]).toBeGreaterThanOrEqual(tcp["published_revision"] as number);
    expect(tcp["valid_until"]).toMatch(/^\d{4}-\d\d-\d\dT/);
    // The same events again are duplicates; over the unix socket the answer is the same.
    const unix = await example(sc.sidecar.grpcSocketAddress ?? "", "cus_python");
    expect(unix).toMatchObject({ results: ["INGEST_RESULT_DUPLICATE", "INGEST_RESULT_DUPLICATE"], allowed: true, status: "ACCESS_STATUS_GRANTED" });
  });
});
