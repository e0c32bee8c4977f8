import { spawnSync } from "node:child_process";
import { chmodSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, expect, test } from "vitest";
import { tempDir } from "../harness/tmp.js";
import { ROOT } from "../harness/system.js";

/**
 * `npm test` runs scripts/test-prereqs.sh first. On a machine where it cannot install what is
 * missing (not root), it must stop at once with one line naming the commands and the packages,
 * instead of minutes of follow-on failures.
 */
const bin = tempDir("proofgate-prereqs-");
afterAll(() => bin.dispose());

const script = join(ROOT, "scripts/test-prereqs.sh");

test("without nats-server and promtool, and not root: one line naming both, exit 1", () => {
  // A PATH with the basics the script uses and neither tool; `id -u` answers as a normal user.
  for (const tool of ["bash", "dirname"]) symlinkSync(spawnSync("bash", ["-c", `command -v ${tool}`], { encoding: "utf8" }).stdout.trim(), join(bin.path, tool));
  writeFileSync(join(bin.path, "id"), "#!/bin/sh\necho 1000\n");
  chmodSync(join(bin.path, "id"), 0o755);
  const r = spawnSync(join(bin.path, "bash"), [script], { env: { PATH: bin.path }, encoding: "utf8", timeout: 30_000 });
  expect(r.status).toBe(1);
  const lines = r.stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^test prerequisites missing: /);
  expect(lines[0]).toContain("nats-server");
  expect(lines[0]).toContain("prometheus");
});

test("with everything installed it says nothing and succeeds", () => {
  const r = spawnSync("bash", [script], { encoding: "utf8", timeout: 60_000 });
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
});
