import { afterAll } from "vitest";
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

/**
 * A list of undo actions run after the file's tests, last first, whatever their outcome:
 * `const cleanup = cleanupAfterAll(); … cleanup.push(() => nats.dispose());`
 */
export function cleanupAfterAll(): (() => unknown)[] {
  const list: (() => unknown)[] = [];
  afterAll(async () => {
    for (const undo of list.splice(0).reverse()) await undo();
  });
  return list;
}
