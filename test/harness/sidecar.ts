import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from "nats";
import { demoCatalog } from "../../src/catalog/index.js";
import { msDuration } from "../../src/catalog/catalog-index.js";
import { DisputePolicy, StalePolicy, type Catalog } from "../../src/gen/proofgate/v1/catalog.js";
import { PaymentResult, PaymentSession, SubscriptionStatus, type BillingEvent, type RecoveryResult } from "../../src/gen/proofgate/v1/billing.js";
import { BillingEvents } from "../../src/billing/index.js";
import {
  CheckServiceClient,
  type CheckBatchRequest,
  type CheckBatchResponse,
  type CheckRequest,
  type CheckResponse,
  type ListEntitlementsRequest,
  type ListEntitlementsResponse,
} from "../../src/gen/proofgate/v1/check.js";
import { Heartbeat, StateRecord, type AccessDocument } from "../../src/gen/proofgate/v1/document.js";
import { foldDocument } from "../../src/policy/index.js";
import { CATALOG_SUBJECT, HEARTBEAT_SUBJECT, STATE_STREAM, customerSubject } from "../../src/replication/subjects.js";
import { ensureStreams } from "../../src/replication/streams.js";
import { createLogger, silentLogger, type Logger } from "../../src/observability/logger.js";
import { startSidecar, type Sidecar, type SidecarOptions } from "../../src/sidecar/index.js";
import { unaryCall, type UnaryMethod } from "../../src/transport/grpc-client.js";
import { awaitReadyFile } from "./processes.js";
import { tempDir } from "./tmp.js";
import { DAY } from "./wait.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

export { DAY, waitFor } from "./wait.js";

/** The demo catalog (examples/catalog.yaml) with test policy: a short coherency window, serve or deny. */
export function testCatalog(policy: { coherencyWindowMs?: number; stalePolicy?: "serve" | "deny"; gracePeriodMs?: number } = {}): Catalog {
  const catalog = demoCatalog();
  const p = catalog.policy ?? {
    gracePeriod: undefined,
    coherencyWindow: undefined,
    disputePolicy: DisputePolicy.DISPUTE_POLICY_UNSPECIFIED,
    stalePolicy: StalePolicy.STALE_POLICY_UNSPECIFIED,
  };
  return {
    ...catalog,
    policy: {
      ...p,
      ...(policy.coherencyWindowMs === undefined ? {} : { coherencyWindow: msDuration(policy.coherencyWindowMs) }),
      ...(policy.gracePeriodMs === undefined ? {} : { gracePeriod: msDuration(policy.gracePeriodMs) }),
      ...(policy.stalePolicy === undefined
        ? {}
        : { stalePolicy: policy.stalePolicy === "deny" ? StalePolicy.STALE_POLICY_DENY : StalePolicy.STALE_POLICY_SERVE }),
    },
  };
}

/**
 * A customer's billing history, folded with the real policy core into the document the writer
 * would publish. Times are Unix ms.
 */
export class CustomerStory {
  private readonly events: BillingEvent[] = [];
  private readonly builder: BillingEvents;

  constructor(
    readonly customerId: string,
    readonly subscriptionId = "sub_1",
  ) {
    this.builder = new BillingEvents({ customerId, subscriptionId, source: "test", eventId: (n) => `${customerId}-evt-${n}` });
  }

  subscribe(plan: string, at: number, opts: { periodEndMs?: number; trialEndMs?: number; cancelAtMs?: number; canceled?: boolean; quantity?: number } = {}): this {
    this.events.push(
      this.builder.subscription(at, {
        status: opts.canceled ? SubscriptionStatus.SUBSCRIPTION_STATUS_CANCELED : SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE,
        planId: plan,
        quantity: opts.quantity ?? 1,
        currentPeriodStart: at,
        currentPeriodEnd: opts.periodEndMs ?? at + 30 * DAY,
        cancelAt: opts.cancelAtMs,
        trialEnd: opts.trialEndMs,
      }),
    );
    return this;
  }

  pay(invoiceId: string, plan: string, at: number, periodStartMs: number, periodEndMs: number, result = PaymentResult.PAYMENT_RESULT_SUCCEEDED): this {
    this.events.push(
      this.builder.payment(at, {
        invoiceId,
        result,
        periodStart: periodStartMs,
        periodEnd: periodEndMs,
        planId: plan,
        session: PaymentSession.PAYMENT_SESSION_OFF_SESSION,
        amountMinor: 4900,
        currency: "EUR",
      }),
    );
    return this;
  }

  recovery(invoiceId: string, at: number, result: RecoveryResult): this {
    this.events.push(this.builder.recovery(at, invoiceId, result));
    return this;
  }

  document(): AccessDocument {
    return foldDocument(this.customerId, this.events, []);
  }
}

/** A paying customer on `plan` whose paid period [start, end) contains `at`. */
export function paidCustomer(customerId: string, plan: string, at: number, periodEndMs = at + 30 * DAY): AccessDocument {
  const start = at - DAY;
  return new CustomerStory(customerId).subscribe(plan, start, { periodEndMs }).pay(`${customerId}-inv-1`, plan, start, start, periodEndMs).document();
}

/**
 * Publishes StateRecords straight to PROOFGATE_STATE, as the writer would, so sidecar tests do
 * not need a writer. Every publish returns its stream sequence (the revision).
 */
export class StatePublisher {
  /** The highest sequence this publisher wrote: the head its heartbeats announce, as a writer's do. */
  private head = 0;
  private heartbeats: NodeJS.Timeout | undefined;

  private constructor(
    readonly nc: NatsConnection,
    readonly jsm: JetStreamManager,
    readonly js: JetStreamClient,
  ) {}

  /**
   * Like a writer, it announces its head every 200 ms (sidecars date freshness by the writer's
   * heartbeats) unless `heartbeats: false`; `stopHeartbeats()` plays a dead writer.
   */
  static async connect(url: string, options: { createStreams?: boolean; heartbeats?: boolean } = {}): Promise<StatePublisher> {
    const nc = await connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    // Short timeouts: a publish lost in a NATS restart fails fast, so `waitFor` can retry it.
    const jsm = await nc.jetstreamManager({ timeout: 1_000 });
    if (options.createStreams ?? true) await ensureStreams(jsm);
    const pub = new StatePublisher(nc, jsm, nc.jetstream({ timeout: 1_000 }));
    if (options.heartbeats ?? true) pub.startHeartbeats();
    return pub;
  }

  startHeartbeats(): void {
    if (this.heartbeats) return;
    this.heartbeats = setInterval(() => {
      if (!this.nc.isClosed()) this.heartbeat(this.head);
    }, 200);
    this.heartbeats.unref();
  }

  stopHeartbeats(): void {
    clearInterval(this.heartbeats);
    this.heartbeats = undefined;
  }

  async ensureStreams(): Promise<void> {
    await ensureStreams(this.jsm);
  }

  async document(doc: AccessDocument): Promise<number> {
    return this.publish(customerSubject(doc.customerId), { record: { $case: "document", value: doc } });
  }

  /** Many documents, published concurrently in chunks; returns the highest revision. */
  async documents(docs: readonly AccessDocument[], chunk = 500): Promise<number> {
    let last = 0;
    for (let i = 0; i < docs.length; i += chunk) {
      const seqs = await Promise.all(docs.slice(i, i + chunk).map((d) => this.document(d)));
      last = Math.max(last, ...seqs);
    }
    return last;
  }

  /** An erasure tombstone, then (like the writer) optionally a purge of everything before it on that subject. */
  async erase(customerId: string): Promise<number> {
    return this.publish(customerSubject(customerId), { record: { $case: "erased", value: { erasedAt: new Date() } } });
  }

  /** Purges a customer's subject entirely (what the writer does after an erasure tombstone). */
  async purge(customerId: string): Promise<void> {
    await this.jsm.streams.purge(STATE_STREAM, { filter: customerSubject(customerId) });
  }

  async catalog(catalog: Catalog): Promise<number> {
    return this.publish(CATALOG_SUBJECT, { record: { $case: "catalog", value: catalog } });
  }

  /** Raw bytes on a state subject (for malformed-record tests). */
  async raw(subject: string, data: Uint8Array): Promise<number> {
    return this.published((await this.js.publish(subject, data)).seq);
  }

  heartbeat(headRevision: number): void {
    this.nc.publish(HEARTBEAT_SUBJECT, Heartbeat.encode({ headRevision, writerId: "test", sentAt: new Date(), snapshotInProgress: false }).finish());
  }

  async lastSeq(): Promise<number> {
    return (await this.jsm.streams.info(STATE_STREAM)).state.last_seq;
  }

  /** Deletes and recreates the state stream (a new incarnation, sequences from 1). */
  async recreateStream(): Promise<void> {
    await this.jsm.streams.delete(STATE_STREAM);
    this.head = 0;
    await ensureStreams(this.jsm);
  }

  async close(): Promise<void> {
    this.stopHeartbeats();
    await this.nc.close();
  }

  private async publish(subject: string, record: StateRecord): Promise<number> {
    return this.published((await this.js.publish(subject, StateRecord.encode(record).finish())).seq);
  }

  private published(seq: number): number {
    this.head = Math.max(this.head, seq);
    return seq;
  }
}

/** A promise-based CheckService client (the generated grpc-js client underneath) plus grpc.health.v1. */
export class CheckClient {
  readonly raw: InstanceType<typeof CheckServiceClient>;
  private readonly health: grpc.Client & { check: UnaryMethod<{ service: string }, { status: string }> };

  constructor(readonly address: string) {
    this.raw = new CheckServiceClient(address, grpc.credentials.createInsecure());
    const Health = grpc.makeGenericClientConstructor(healthService, "Health");
    this.health = new Health(address, grpc.credentials.createInsecure()) as unknown as CheckClient["health"];
  }

  check(req: Partial<CheckRequest> & { customerId: string; feature: string }, deadlineMs = 10_000): Promise<CheckResponse> {
    return this.call(this.raw.check.bind(this.raw), { quantity: undefined, minRevision: undefined, ...req }, deadlineMs);
  }

  checkBatch(req: CheckBatchRequest, deadlineMs = 10_000): Promise<CheckBatchResponse> {
    return this.call(this.raw.checkBatch.bind(this.raw), req, deadlineMs);
  }

  listEntitlements(req: ListEntitlementsRequest, deadlineMs = 10_000): Promise<ListEntitlementsResponse> {
    return this.call(this.raw.listEntitlements.bind(this.raw), req, deadlineMs);
  }

  /** grpc.health.v1 status: "SERVING", "NOT_SERVING" or "UNKNOWN". */
  async healthStatus(service = ""): Promise<string> {
    const res = await this.call(this.health.check.bind(this.health), { service }, 5_000);
    return res.status;
  }

  close(): void {
    this.raw.close();
    this.health.close();
  }

  private call<Req, Res>(fn: UnaryMethod<Req, Res>, req: Req, deadlineMs: number): Promise<Res> {
    return unaryCall<Res>((md, o, cb) => fn(req, md, o, cb), { timeoutMs: deadlineMs });
  }
}

/** Expects a gRPC error with `code`; returns its details. */
export async function grpcError(p: Promise<unknown>, code: grpc.status): Promise<string> {
  try {
    await p;
  } catch (err) {
    const e = err as grpc.ServiceError;
    if (e.code !== code) throw new Error(`expected gRPC status ${grpc.status[code]}, got ${grpc.status[e.code]}: ${e.details}`);
    return e.details;
  }
  throw new Error(`expected gRPC status ${grpc.status[code]}, but the call succeeded`);
}

/** Silent, unless PROOFGATE_TEST_LOG names a level (e.g. `PROOFGATE_TEST_LOG=debug npx vitest run test/sidecar`). */
export function testLogger(): Logger {
  const level = process.env["PROOFGATE_TEST_LOG"];
  return level ? createLogger({ level: level as "debug", name: "test-sidecar" }) : silentLogger();
}

export interface TestSidecar {
  readonly sidecar: Sidecar;
  /** Client over loopback TCP. */
  readonly client: CheckClient;
  /** Client over the unix socket, when `socket` was asked for. */
  readonly socketClient: CheckClient | undefined;
  close(): Promise<void>;
}

/**
 * A sidecar in this process on ephemeral loopback ports (and optionally a unix socket in `dir`),
 * with clients attached. `replica` defaults to `<dir>/replica.db`.
 */
export async function startTestSidecar(
  opts: Partial<SidecarOptions> & { natsUrl: string; dir: string; socket?: boolean; logger?: Logger },
): Promise<TestSidecar> {
  const { dir, socket, logger, ...rest } = opts;
  const sidecar = await startSidecar(
    {
      replica: join(dir, "replica.db"),
      grpcListen: "127.0.0.1:0",
      grpcSocket: socket ? join(dir, "check.sock") : "",
      httpListen: "127.0.0.1:0",
      minRevisionWait: 2_000,
      offlineReadyAfterMs: 500,
      ...rest,
    },
    logger ?? testLogger(),
  );
  const client = new CheckClient(sidecar.grpcAddress ?? "");
  const socketClient = sidecar.grpcSocketAddress ? new CheckClient(sidecar.grpcSocketAddress) : undefined;
  return {
    sidecar,
    client,
    socketClient,
    close: async () => {
      client.close();
      socketClient?.close();
      await sidecar.close();
    },
  };
}

export interface SidecarProcess {
  readonly child: ChildProcess;
  /** From its ready file. */
  readonly grpcAddresses: readonly string[];
  readonly httpAddress: string | undefined;
  /** Everything the process wrote so far. */
  output(): string;
  /** Sends `signal` and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * `node bin/proofgate.js sidecar <args>` as a child process (needs `npm run build`). Resolves
 * once it logs where it listens. Use `--grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0`.
 */
export async function spawnSidecar(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<SidecarProcess> {
  // The ready file goes next to the replica (the test's own directory), else in a temp dir.
  const replicaAt = args.indexOf("--replica");
  const dir = replicaAt >= 0 && args[replicaAt + 1] ? undefined : tempDir("proofgate-sidecar-");
  const readyFile = dir ? join(dir.path, "ready.json") : `${args[replicaAt + 1] ?? ""}.ready.json`;
  rmSync(readyFile, { force: true });
  const child = spawn(process.execPath, [join(ROOT, "bin/proofgate.js"), "sidecar", "--ready-file", readyFile, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const onData = (chunk: Buffer): void => {
    out += chunk.toString();
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const listening = await awaitReadyFile(readyFile, exited, () => out);
  void exited.then(() => dir?.dispose());
  return {
    child,
    grpcAddresses: listening.grpc,
    httpAddress: listening.http,
    output: () => out,
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** GET on the sidecar's HTTP ops server. */
export async function httpGet(address: string, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://${address}${path}`);
  return { status: res.status, body: await res.text() };
}
