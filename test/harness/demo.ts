/**
 * The demo story against the real binaries: nats-server, `proofgate writer` and `proofgate
 * sidecar` as processes, the demo catalog applied by the operator command, and what the story's
 * beats must answer. Shared by the e2e tests that tell the story (gRPC, and the client's local mode).
 */
import { join } from "node:path";
import { expect } from "vitest";
import type { JetStreamManager, NatsConnection } from "nats";
import type { AccessStatusName } from "../../src/client/index.js";
import { NatsServer } from "./nats.js";
import { tempDir } from "./tmp.js";
import { WriterClient, WriterProcess, connectNats } from "./writer.js";
import { waitFor } from "./wait.js";
import { runCli, startSidecarProcess, type SidecarUnderTest } from "./system.js";

/** Long enough for beat 3 (paid) to be checked before the period ends, short enough to wait for. */
export const STORY_PERIOD_MS = 4_000;

/** What the sidecar answers for api-access after each beat of the demo story (src/dev/story.ts). */
export const STORY_ANSWERS: readonly { readonly status: AccessStatusName; readonly allowed: boolean; readonly reason: RegExp }[] = [
  { status: "PAYMENT_REQUIRED", allowed: false, reason: /pay to activate/ },
  { status: "PAYMENT_PENDING", allowed: false, reason: /Awaiting customer authentication \(3-D Secure\) for invoice in_demo_1/ },
  { status: "GRANTED", allowed: true, reason: /Paid through .*\(invoice in_demo_1\)/ },
  { status: "GRACE_PERIOD", allowed: true, reason: /Renewal not yet confirmed/ },
  { status: "GRACE_PERIOD", allowed: true, reason: /Renewal failed \(card_declined\)/ },
  { status: "GRANTED", allowed: true, reason: /Paid through .*\(invoice in_demo_2\)/ },
  { status: "REVOKED", allowed: false, reason: /refunded/ },
];

export interface WriterSystemOptions {
  /** nats-server's max_payload (default 1 MiB). */
  readonly maxPayload?: number;
  /** More `proofgate writer` flags. */
  readonly writerArgs?: readonly string[];
  /** Apply the demo catalog through the writer's client (default); false leaves it to the test. */
  readonly catalog?: boolean;
}

export interface WriterSystem {
  readonly nats: NatsServer;
  /** A test connection to that NATS (reconnects forever). */
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  /** The test's own temp directory (ledger, replicas). */
  readonly dir: string;
  readonly writer: WriterProcess;
  readonly client: WriterClient;
  close(): Promise<void>;
}

/** nats-server and `proofgate writer` as processes, the writer ready (with the demo catalog applied, unless `catalog: false`). */
export async function startWriterSystem(name: string, o: WriterSystemOptions = {}): Promise<WriterSystem> {
  const nats = await NatsServer.start(o.maxPayload === undefined ? {} : { maxPayload: o.maxPayload });
  const dir = tempDir(`proofgate-${name}-`);
  const nc = await connectNats(nats.url);
  const writer = await WriterProcess.start({ natsUrl: nats.url, ledgerPath: join(dir.path, "ledger.db"), args: o.writerArgs ?? [] });
  const client = new WriterClient(writer.grpcAddress);
  await waitFor(async () => (await writer.http("/readyz")).status === 200, "writer ready");
  if (o.catalog ?? true) await client.applyCatalog();
  return {
    nats,
    nc,
    jsm: await nc.jetstreamManager(),
    dir: dir.path,
    writer,
    client,
    close: async () => {
      client.close();
      await writer.stop("SIGKILL");
      await nc.close();
      await nats.dispose();
      dir.dispose();
    },
  };
}

export interface DemoSystem extends WriterSystem {
  readonly sidecar: SidecarUnderTest;
  /** The stream revision at which the demo catalog was applied. */
  readonly catalogRevision: number;
  /** What `proofgate catalog apply` printed. */
  readonly catalogApplied: string;
}

/** Everything running, the demo catalog applied, writer and sidecar ready. */
export async function startDemoSystem(name: string): Promise<DemoSystem> {
  const system = await startWriterSystem(name, { catalog: false });
  const sidecar = await startSidecarProcess(name, system.nats.url, join(system.dir, "replica.db"));
  // The operator loads the demo catalog.
  const applied = await runCli(["catalog", "apply", "examples/catalog.yaml", "--writer", system.writer.grpcAddress, "--actor", name]);
  expect(applied.stderr).toBe("");
  expect(applied.code).toBe(0);
  const m = /^catalog applied: \d+ features, \d+ plans, \d+ add-ons; revision (\d+)$/m.exec(applied.stdout);
  expect(m, applied.stdout).not.toBeNull();
  await waitFor(async () => (await sidecar.client.healthStatus()) === "SERVING", "sidecar ready");
  return {
    ...system,
    sidecar,
    catalogRevision: Number(m?.[1]),
    catalogApplied: applied.stdout,
    close: async () => {
      await sidecar.stop("SIGTERM");
      await system.close();
    },
  };
}
