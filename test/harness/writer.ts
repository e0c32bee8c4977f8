import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { credentials, status, type ServiceError } from "@grpc/grpc-js";
import { connect, type JetStreamManager, type MsgHdrs, type NatsConnection } from "nats";
import { demoCatalog } from "../../src/catalog/index.js";
import {
  AdminServiceClient,
  type ApplyCatalogRequest,
  type ApplyCatalogResponse,
  type DeleteOverrideRequest,
  type EraseCustomerRequest,
  type GetCustomerResponse,
  type PutOverrideRequest,
  type PutOverrideResponse,
} from "../../src/gen/proofgate/v1/admin.js";
import type { BillingEvent, PaymentOutcome, PaymentResult, RecoveryResult, SubscriptionChanged } from "../../src/gen/proofgate/v1/billing.js";
import { BillingEvents } from "../../src/billing/index.js";
import type { Catalog } from "../../src/gen/proofgate/v1/catalog.js";
import { StateRecord } from "../../src/gen/proofgate/v1/document.js";
import { IngestServiceClient, type PublishResponse } from "../../src/gen/proofgate/v1/ingest.js";
import { silentLogger, type Logger } from "../../src/observability/logger.js";
import { messageGets } from "../../src/replication/connection.js";
import { STATE_STREAM } from "../../src/replication/subjects.js";
import { startWriter, writerOptions, type ConsoleAuth, type FaultHooks, type Writer, type WriterOptions } from "../../src/writer/index.js";
import { unaryCall, type Invoke } from "../../src/transport/grpc-client.js";
import { awaitReadyFile } from "./processes.js";
import { tempDir } from "./tmp.js";
import { DAY } from "./wait.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

export { DAY, waitFor } from "./wait.js";

export { demoCatalog };

// ---------------------------------------------------------------------------------------------
// In-process writer

export interface TestWriterOptions {
  readonly natsUrl: string;
  /** Defaults to a fresh temp file (removed by `dispose`). */
  readonly ledgerPath?: string;
  readonly now?: () => number;
  readonly hooks?: FaultHooks;
  readonly logger?: Logger;
  readonly options?: Partial<WriterOptions>;
  /** The console's authentication (none: served without a login, on loopback). */
  readonly console?: ConsoleAuth;
}

export interface TestWriter {
  readonly writer: Writer;
  readonly ledgerPath: string;
  readonly client: WriterClient;
  /** Closes the client and the writer (idempotent); keeps the ledger. */
  close(): Promise<void>;
  /** close() and remove the temp ledger directory, if the harness made it. */
  dispose(): Promise<void>;
}

/** A writer in this process on ephemeral ports, silent, with a client connected to it. */
export async function startTestWriter(o: TestWriterOptions): Promise<TestWriter> {
  const dir = o.ledgerPath ? undefined : tempDir("proofgate-writer-");
  const ledgerPath = o.ledgerPath ?? join(dir?.path ?? ".", "ledger.db");
  const writer = await startWriter(
    writerOptions({ natsUrl: o.natsUrl, ledger: ledgerPath, grpcListen: "127.0.0.1:0", httpListen: "127.0.0.1:0", heartbeatInterval: 200, ...o.options }),
    o.logger ?? silentLogger(),
    { ...(o.now ? { now: o.now } : {}), ...(o.hooks ? { hooks: o.hooks } : {}), ...(o.console ? { console: o.console } : {}) },
  );
  const client = new WriterClient(writer.grpcAddress);
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closed ??= (async () => {
      client.close();
      await writer.close();
    })());
  return {
    writer,
    ledgerPath,
    client,
    close,
    dispose: async () => {
      await close();
      dir?.dispose();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Writer as a child process (`node bin/proofgate.js writer ...`)

export interface WriterProcessOptions {
  readonly natsUrl: string;
  readonly ledgerPath: string;
  /**
   * Extra environment. `PROOFGATE_TEST_CRASH_AFTER_COMMIT` / `_AFTER_PUBLISH` = "1" run the
   * test-only entry point faulty-writer.mjs, which SIGKILLs the writer at that moment.
   */
  readonly env?: Readonly<Record<string, string>>;
  readonly args?: readonly string[];
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** `proofgate writer` in a child process; needs `npm run build` first (npm test does it). */
export class WriterProcess {
  readonly exited: Promise<Exit>;
  private readonly out: string[] = [];

  private constructor(
    private readonly child: ChildProcess,
    readonly grpcAddress: string,
    readonly httpAddress: string,
    out: string[],
    exited: Promise<Exit>,
  ) {
    this.out = out;
    this.exited = exited;
  }

  static async start(o: WriterProcessOptions): Promise<WriterProcess> {
    const bin = join(ROOT, "bin/proofgate.js");
    if (!existsSync(join(ROOT, "dist/cli/main.js"))) throw new Error("dist/ is missing: run `npm run build` before the child-process tests");
    // The ready file lives next to the ledger, in the test's own directory.
    const readyFile = `${o.ledgerPath}.ready.json`;
    rmSync(readyFile, { force: true });
    const faulty = Object.keys(o.env ?? {}).some((k) => k.startsWith("PROOFGATE_TEST_CRASH_"));
    const entry = faulty ? [join(ROOT, "test/harness/faulty-writer.mjs")] : [bin, "writer"];
    const args = [...entry, "--nats-url", o.natsUrl, "--ledger", o.ledgerPath, "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--heartbeat-interval", "200ms", "--ready-file", readyFile, ...(o.args ?? [])];
    const child = spawn(process.execPath, args, { env: { ...process.env, PROOFGATE_LOG_LEVEL: "info", ...o.env }, stdio: ["ignore", "pipe", "pipe"] });
    const out: string[] = [];
    const exited = new Promise<Exit>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    child.stdout.on("data", (chunk: Buffer) => out.push(chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => out.push(chunk.toString()));
    const ready = await awaitReadyFile(readyFile, exited, () => out.join(""));
    const addr = { grpc: ready.grpc[0] ?? "", http: ready.http ?? "" };
    return new WriterProcess(child, addr.grpc, addr.http, out, exited);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Everything the process wrote, for failure messages. */
  output(): string {
    return this.out.join("");
  }

  /** Sends `signal` and waits for the exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<Exit> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }

  /** GET on the ops server, e.g. `/readyz`. */
  async http(path: string): Promise<{ status: number; body: string }> {
    const res = await fetch(`http://${this.httpAddress}${path}`);
    return { status: res.status, body: await res.text() };
  }
}

// ---------------------------------------------------------------------------------------------
// gRPC clients

/** IngestService and AdminService of one writer, promise style. Errors are grpc ServiceErrors (`code`, `details`). */
export class WriterClient {
  readonly ingest: IngestServiceClient;
  readonly admin: AdminServiceClient;

  constructor(address: string) {
    this.ingest = new IngestServiceClient(address, credentials.createInsecure());
    this.admin = new AdminServiceClient(address, credentials.createInsecure());
  }

  publish(events: BillingEvent[]): Promise<PublishResponse> {
    return this.call((md, o, cb) => this.ingest.publish({ events }, md, o, cb));
  }

  /**
   * `publish`, sent again while the writer answers UNAVAILABLE (for at most `withinMs`), as a
   * billing system does: a writer still catching up takes the events and says retrying is safe
   * (a resend is stored once).
   */
  async publishRetrying(events: BillingEvent[], withinMs = 60_000): Promise<PublishResponse> {
    const deadline = Date.now() + withinMs;
    for (;;) {
      try {
        return await this.publish(events);
      } catch (err) {
        if ((err as ServiceError).code !== status.UNAVAILABLE || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** Applies the catalog; resolves with the revision. */
  async applyCatalog(catalog: Catalog = demoCatalog(), actor = "test", reason = "test setup"): Promise<number> {
    const r = await this.call<ApplyCatalogResponse>((md, o, cb) => this.admin.applyCatalog({ catalog, actor, reason, allowRemovals: false }, md, o, cb));
    return r.revision;
  }

  applyCatalogRequest(req: ApplyCatalogRequest): Promise<ApplyCatalogResponse> {
    return this.call((md, o, cb) => this.admin.applyCatalog(req, md, o, cb));
  }

  getCatalog(): Promise<{ catalog: Catalog | undefined }> {
    return this.call((md, o, cb) => this.admin.getCatalog({}, md, o, cb));
  }

  getCustomer(customerId: string): Promise<GetCustomerResponse> {
    return this.call((md, o, cb) => this.admin.getCustomer({ customerId }, md, o, cb));
  }

  putOverride(req: PutOverrideRequest): Promise<PutOverrideResponse> {
    return this.call((md, o, cb) => this.admin.putOverride(req, md, o, cb));
  }

  deleteOverride(req: DeleteOverrideRequest): Promise<{ revision: number }> {
    return this.call((md, o, cb) => this.admin.deleteOverride(req, md, o, cb));
  }

  eraseCustomer(req: EraseCustomerRequest): Promise<{ revision: number }> {
    return this.call((md, o, cb) => this.admin.eraseCustomer(req, md, o, cb));
  }

  close(): void {
    this.ingest.close();
    this.admin.close();
  }

  /** Calls wait as long as a test may (a writer whose NATS is down answers late). */
  private call<Res>(invoke: Invoke<Res>): Promise<Res> {
    return unaryCall(invoke, { timeoutMs: 60_000 });
  }
}

// ---------------------------------------------------------------------------------------------
// Reading the state stream

export interface StateMessage {
  readonly seq: number;
  readonly subject: string;
  readonly data: Uint8Array;
  readonly record: StateRecord;
  readonly headers: MsgHdrs;
}

/** A plain NATS connection for tests (no reconnect games). */
/** `url` may list several servers, comma-separated (a cluster). */
export function connectNats(url: string): Promise<NatsConnection> {
  return connect({ servers: url.split(","), maxReconnectAttempts: -1, reconnectTimeWait: 100 });
}

/** The stream's last sequence (0 when empty or missing). */
export async function streamLastSeq(jsm: JetStreamManager, stream = STATE_STREAM): Promise<number> {
  try {
    return (await jsm.streams.info(stream)).state.last_seq;
  } catch {
    return 0;
  }
}

/**
 * The current message on `subject` in PROOFGATE_STATE, decoded, or undefined. Read by direct get:
 * tests poll this while the stream is deleted and recreated, which the stream API's get can crash
 * nats-server 2.9.10 on (`messageGets`). The info first: a direct get of a missing stream waits out
 * its timeout instead of failing.
 */
export async function lastState(jsm: JetStreamManager, subject: string): Promise<StateMessage | undefined> {
  try {
    const { allow_direct } = (await jsm.streams.info(STATE_STREAM)).config;
    const m = await messageGets(jsm, allow_direct).getMessage(STATE_STREAM, { last_by_subj: subject });
    return { seq: m.seq, subject: m.subject, data: m.data, record: StateRecord.decode(m.data), headers: m.header };
  } catch {
    return undefined;
  }
}

/** Every message in PROOFGATE_STATE, in sequence order (the whole current state). */
export async function allState(jsm: JetStreamManager): Promise<StateMessage[]> {
  const info = await jsm.streams.info(STATE_STREAM);
  const out: StateMessage[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(STATE_STREAM, { seq }).catch(() => undefined);
    if (m) out.push({ seq: m.seq, subject: m.subject, data: m.data, record: StateRecord.decode(m.data), headers: m.header });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Billing events

/**
 * Realistic events for one customer and subscription; ids are unique per factory (`prefix`).
 * Times are relative to `start` (default: now, so a child-process writer on the real clock
 * sees current periods).
 */
export class EventFactory {
  private readonly events: BillingEvents;

  constructor(
    readonly customerId: string,
    readonly prefix = `evt_${Math.random().toString(36).slice(2, 8)}`,
    readonly start = Date.now(),
    readonly subscriptionId = "sub_1",
  ) {
    this.events = new BillingEvents({ customerId, subscriptionId, source: "test", eventId: (n) => `${prefix}_${n}`, correlationId: (n) => `corr_${n}` });
  }

  subscribe(planId = "premium", opts: Partial<SubscriptionChanged> = {}, atOffsetMs = 0): BillingEvent {
    return this.events.subscription(this.start + atOffsetMs, { planId, currentPeriodStart: this.start - DAY, currentPeriodEnd: this.start + 29 * DAY, ...opts });
  }

  pay(result: PaymentResult, invoiceId = "in_1", opts: Partial<PaymentOutcome> = {}, atOffsetMs = 0): BillingEvent {
    return this.events.payment(this.start + atOffsetMs, {
      invoiceId,
      result,
      periodStart: this.start - DAY,
      periodEnd: this.start + 29 * DAY,
      planId: "premium",
      amountMinor: 4900,
      currency: "EUR",
      ...opts,
    });
  }

  recover(result: RecoveryResult, invoiceId: string, nextAttemptAt?: Date, atOffsetMs = 0): BillingEvent {
    return this.events.recovery(this.start + atOffsetMs, invoiceId, result, nextAttemptAt);
  }
}
