import { renameSync, rmSync, writeFileSync } from "node:fs";

/** What a service writes to `--ready-file` once it listens (like nats-server's ports file). */
export interface ReadyFile {
  readonly pid: number;
  /** gRPC addresses with ephemeral ports resolved (`127.0.0.1:41234`, `unix:/run/x.sock`). */
  readonly grpc: readonly string[];
  /** The HTTP ops address, when there is one. */
  readonly http?: string | undefined;
}

/** Written whole (temp file, then rename), so a reader never sees half of it. */
export function writeReadyFile(path: string, info: Omit<ReadyFile, "pid">): void {
  if (!path) return;
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ pid: process.pid, ...info })}\n`, { mode: 0o644 });
  renameSync(tmp, path);
}

export function removeReadyFile(path: string): void {
  if (path) rmSync(path, { force: true });
}
