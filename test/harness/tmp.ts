import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const made = new Set<string>();

/**
 * A temp directory removed by the returned dispose function, or at the latest when its test file
 * ends (test/harness/setup.ts), so a test that fails half-way leaves nothing in the temp dir.
 */
export function tempDir(prefix = "proofgate-test-"): { path: string; dispose: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  made.add(path);
  return {
    path,
    dispose: () => {
      rmSync(path, { recursive: true, force: true });
      made.delete(path);
    },
  };
}

/** Removes every temp directory this process made and has not removed yet. */
export function disposeTempDirs(): void {
  for (const path of made) rmSync(path, { recursive: true, force: true });
  made.clear();
}
