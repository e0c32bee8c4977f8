import { execFile } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, test } from "vitest";
import { DEMO_CATALOG_PATH } from "../../src/catalog/index.js";
import { devTokenPath } from "../../src/cli/client.js";
import { runDev, type DevSystem } from "../../src/dev/index.js";
import { silentLogger } from "../../src/observability/logger.js";
import { tempDir } from "../harness/tmp.js";

const BIN = fileURLToPath(new URL("../../bin/proofgate.js", import.meta.url));
const config = tempDir("proofgate-config-");
const previous = process.env["XDG_CONFIG_HOME"];
let dev: DevSystem;
let printed = "";

beforeAll(async () => {
  process.env["XDG_CONFIG_HOME"] = config.path;
  dev = await runDev(
    { natsUrl: undefined, writerGrpc: "127.0.0.1:0", writerHttp: "127.0.0.1:0", sidecarGrpc: "127.0.0.1:0", sidecarHttp: "127.0.0.1:0", catalogPath: DEMO_CATALOG_PATH, storyPeriodMs: 0 },
    (...lines) => (printed += `${lines.join("\n")}\n`),
    silentLogger(),
  );
});

afterAll(async () => {
  await dev.close();
  if (previous === undefined) delete process.env["XDG_CONFIG_HOME"];
  else process.env["XDG_CONFIG_HOME"] = previous;
  config.dispose();
});

test("proofgate dev runs an authenticated writer and hands its token to the operator commands", async () => {
  const address = dev.writer.grpcAddress;
  const tokenFile = devTokenPath(address, { XDG_CONFIG_HOME: config.path });
  expect(printed).toContain(`principal proofgate-dev (ingest, admin, read); token in ${tokenFile}`);
  expect(statSync(tokenFile).mode & 0o077).toBe(0);
  // Asynchronously: the writer answers from this process.
  const cli = (env: NodeJS.ProcessEnv): Promise<{ status: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(process.execPath, [BIN, "catalog", "get", "--writer", address], { encoding: "utf8", env: { ...process.env, ...env } }, (err, stdout, stderr) =>
        resolve({ status: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
      );
    });
  // As written: no flags, no variables.
  const ok = await cli({ XDG_CONFIG_HOME: config.path });
  expect(ok.stderr).toBe("");
  expect(ok.status).toBe(0);
  expect(ok.stdout).toContain("plans:");
  // The writer really checks: without the token file, or with a wrong token, it refuses.
  const elsewhere = tempDir("proofgate-config-");
  try {
    const none = await cli({ XDG_CONFIG_HOME: elsewhere.path });
    expect(none.status).not.toBe(0);
    expect(none.stderr).toContain("UNAUTHENTICATED: missing credentials");
    expect(none.stderr).toContain("PROOFGATE_TOKEN");
  } finally {
    elsewhere.dispose();
  }
  const wrong = await cli({ XDG_CONFIG_HOME: config.path, PROOFGATE_TOKEN: "guess" });
  expect(wrong.stderr).toContain("UNAUTHENTICATED: unknown credentials");
  expect(readFileSync(tokenFile, "utf8").trim()).not.toBe("");
});

test("stopping dev removes its token", async () => {
  const tokenFile = devTokenPath(dev.writer.grpcAddress, { XDG_CONFIG_HOME: config.path });
  await dev.close();
  expect(existsSync(tokenFile)).toBe(false);
});
