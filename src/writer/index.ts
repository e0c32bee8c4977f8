import { redactNatsUrl } from "../replication/connection.js";
import { useCustomerTokenKey, usingDevCustomerTokenKey } from "../replication/subjects.js";
import type { Registry } from "prom-client";
import { createRegistry } from "../observability/metrics.js";
import type { Logger } from "../observability/logger.js";
import { GrpcServer } from "../transport/grpc.js";
import { grpcServerCredentials } from "../transport/tls.js";
import { guardedRoute } from "../auth/index.js";
import { requireAuthForListen, writerAccess, writerTls } from "./access.js";
import { AuditHeadSender } from "./audit-head.js";
import { OpsServer, isLoopbackListen, type RouteHandler } from "../transport/http.js";
import { AdminOperations, adminBinding } from "./admin/service.js";
import { consoleRoutes, SidecarDirectory, type ConsoleAuth } from "./console/index.js";
import { WriterCore, type FaultHooks } from "./core.js";
import { ingestBinding, publish } from "./ingest/service.js";
import { InputFold } from "./ha/fold.js";
import { Lease } from "./ha/lease.js";
import { Ledger } from "./ledger/ledger.js";
import { createWriterMetrics, type WriterRole } from "./metrics.js";
import { NatsLink } from "./nats-link.js";
import { DeadLetterPublisher } from "./outbox/deadletters.js";
import { OutboxPublisher } from "./outbox/publisher.js";
import { HeartbeatSender } from "./heartbeat.js";
import type { WriterOptions } from "./options.js";
import { SnapshotProducer } from "../snapshot/producer.js";
import { writerStripeRoutes, type WriterStripeRoutes } from "../stripe/writer-routes.js";

export { writerOptionSpec, writerOptions, type WriterOptions } from "./options.js";
export { type FaultHooks } from "./core.js";
export type { WriterRole } from "./metrics.js";
export type { ConsoleAuth } from "./console/index.js";
export { verifyAuditChain, type AuditVerification } from "./ledger/audit-chain.js";

/** A running writer. */
export interface Writer {
  /** Bound gRPC address, ephemeral port resolved (e.g. `127.0.0.1:41234`). */
  readonly grpcAddress: string;
  /** Bound HTTP address (`/healthz`, `/readyz`, `/metrics`, the console under `/console`). */
  readonly httpAddress: string;
  /** Random id of the ledger file; the Proofgate-Ledger-Id header of everything it publishes. */
  readonly ledgerId: string;
  readonly registry: Registry;
  /** The latest PROOFGATE_STATE sequence known to hold this writer's state. */
  headRevision(): number;
  /** Connected to NATS, streams in place, input stream folded up to its head, lined up with the state stream, ledger open. */
  ready(): boolean;
  /** leader, standby or catching_up (docs/writer.md, "High availability"). */
  role(): WriterRole;
  /** Graceful shutdown: stop consuming, flush the outbox briefly, close servers, drain NATS, close the ledger. */
  close(): Promise<void>;
}

export interface WriterDeps {
  /** The writer's clock (evaluation time for audit transitions and GetCustomer). Default Date.now. */
  readonly now?: () => number;
  /** Test-only fault injection. */
  readonly hooks?: FaultHooks;
  /** Extra HTTP routes on the ops server; they need the read role (GET) or the admin role (other methods). */
  readonly routes?: Readonly<Record<string, RouteHandler>>;
  /** The console's authentication (docs/console.md); without it the console is served on loopback listeners only. */
  readonly console?: ConsoleAuth;
}

/** How long shutdown lets pending outbox rows go out. */
const FLUSH_ON_CLOSE_MS = 2_000;

export async function startWriter(options: WriterOptions, logger: Logger, deps: WriterDeps = {}): Promise<Writer> {
  const now = deps.now ?? Date.now;
  const log = logger.child({ component: "writer" });
  requireAuthForListen(options);
  useCustomerTokenKey(options.customerTokenKey);
  const tls = writerTls(options);
  const ledger = Ledger.open(options.ledger);
  log.info({ ledger: options.ledger, ledgerId: ledger.ledgerId }, "ledger open");
  let grpc: GrpcServer | undefined;
  let ops: OpsServer | undefined;
  let stripe: WriterStripeRoutes | undefined;
  let access: ReturnType<typeof writerAccess> | undefined;
  try {
    const core = new WriterCore(ledger, now, logger.child({ component: "ledger" }), deps.hooks ?? {}, {
      maxDocumentBytes: options.maxDocumentBytes,
      maxEventSkewMs: options.maxEventSkew,
    });
    const registry = createRegistry();
    access = writerAccess(options, ledger, registry, now, logger.child({ component: "auth" }));
    const { gate } = access;
    const link = new NatsLink(options, logger.child({ component: "nats" }));
    const ref: { publisher?: OutboxPublisher; fold?: InputFold } = {};
    const role = (): WriterRole => (!ref.fold?.caughtUp ? "catching_up" : ref.publisher?.leading ? "leader" : "standby");
    const metrics = createWriterMetrics(registry, {
      outbox: () => (ledger.open ? ledger.pendingStats() : { count: 0, oldestAtMs: undefined }),
      headRevision: () => ref.publisher?.headRevision ?? 0,
      natsConnected: () => link.ready !== undefined,
      now,
      role,
      inputLag: () => (ledger.open ? (ref.fold?.lag ?? 0) : 0),
    });
    const fold = new InputFold(core, link, { logger: logger.child({ component: "fold" }), metrics, streamReplicas: options.streamReplicas });
    ref.fold = fold;
    const lease = new Lease(link, {
      ttlMs: options.leaseTtl,
      writerId: options.writerId,
      ledgerId: () => ledger.ledgerId,
      replicas: options.streamReplicas,
      canLead: () => fold.caughtUp,
      logger: logger.child({ component: "lease" }),
      onChange: () => pub.kick(),
    });
    fold.onCurrent(() => lease.kick());
    const pub = new OutboxPublisher(ledger, link, {
      now,
      logger: logger.child({ component: "outbox" }),
      metrics,
      hooks: deps.hooks ?? {},
      retentionMs: options.outboxRetention,
      lease,
      folded: () => fold.folded,
    });
    ref.publisher = pub;
    const deadLetters = new DeadLetterPublisher(ledger, link, logger.child({ component: "deadletter" }), metrics, () => pub.leading, now);
    core.onCommit(() => {
      pub.kick();
      deadLetters.kick();
    });
    const common = { core, publisher: pub, publishTimeoutMs: options.publishTimeout, fold };
    const adminLog = logger.child({ component: "admin" });
    grpc = await GrpcServer.start(
      [
        ingestBinding({ ...common, gate, metrics, logger: logger.child({ component: "ingest" }) }),
        adminBinding({ ...common, gate, logger: adminLog }),
      ],
      [options.grpcListen],
      grpcServerCredentials(tls),
    );
    let closing = false;
    const ready = (): boolean => !closing && ledger.open && pub.reconciled && fold.caughtUp;
    const grpcServer = grpc;
    const stripeLog = logger.child({ component: "stripe" });
    stripe = writerStripeRoutes(options, (events) => publish({ ...common, metrics, logger: stripeLog }, { events }, "webhook"), stripeLog, registry, {
      facts: (customerId) => core.ledger.facts(customerId),
      document: (customerId) => core.currentDocument(customerId),
    });
    const stripeRoutes = stripe;
    const sidecars = new SidecarDirectory(now);
    link.onReady(() => {
      const nc = link.ready?.nc;
      if (nc) sidecars.listen(nc);
    });
    const opsRef: { address?: string } = {};
    const consolePages = consoleRoutes({
      core,
      admin: new AdminOperations({ ...common, gate, logger: adminLog }),
      now,
      httpAddress: () => opsRef.address ?? options.httpListen,
      sidecars,
      writer: () => ({ writerId: options.writerId, ready: ready(), natsConnected: link.ready !== undefined, headRevision: pub.headRevision, ledgerId: ledger.ledgerId }),
      jsm: () => link.ready?.jsm,
      // The writer's own tokens and audit chain unless a test hands in others.
      auth: deps.console ?? {
        ...(access.authenticateToken ? { authenticateToken: access.authenticateToken } : {}),
        verifyAudit: () => ledger.verifyAuditChain(),
      },
    });
    // Extra routes are authenticated; the console has its own login; the Stripe webhook keeps its own signature check.
    const extra = Object.fromEntries(
      Object.entries(deps.routes ?? {}).map(([route, handler]) => [route, guardedRoute(gate, route.startsWith("GET ") ? "read" : "admin", handler)]),
    );
    ops = await OpsServer.start(
      options.httpListen,
      { registry, healthy: () => !closing && ledger.open, ready, readyDetail: () => role().replace("_", " "), routes: { ...consolePages, ...extra, ...stripe.routes }, tls },
      logger.child({ component: "http" }),
    );
    opsRef.address = ops.address;
    const opsServer = ops;
    // gRPC health mirrors /readyz.
    let serving = false;
    let lastRole: WriterRole | undefined;
    const healthTimer = setInterval(() => {
      const r = ready();
      if (r !== serving) {
        serving = r;
        grpcServer.setServing(r);
        log.info({ ready: r }, r ? "writer ready" : "writer not ready");
      }
      const now = role();
      if (now !== lastRole) {
        log.info({ role: now, from: lastRole, epoch: lease.held, inputFolded: fold.folded }, `writer role: ${now.replace("_", " ")}`);
        lastRole = now;
      }
    }, 100);
    healthTimer.unref();
    const auditHead = new AuditHeadSender(ledger, link, options.auditHeadInterval, Date.now);
    link.onReady(() => auditHead.send());
    // Only the leader announces the head revision: sidecars hear one writer.
    const heartbeat = new HeartbeatSender(link, options.writerId, options.heartbeatInterval, () => (pub.leading ? pub.headRevision : undefined), Date.now, () => pub.snapshotInProgress);

    link.onReady(() => {
      const maxPayload = link.ready?.nc.info?.max_payload;
      if (maxPayload !== undefined && options.maxDocumentBytes + 512 > maxPayload)
        log.warn(
          { maxDocumentBytes: options.maxDocumentBytes, maxPayload },
          "--max-document-bytes is above what the NATS server accepts (max_payload): documents between the two would be committed but never replicated",
        );
    });
    link.start();
    pub.start();
    deadLetters.start();
    fold.start();
    lease.start();
    heartbeat.start();
    const snapshots =
      options.snapshotInterval > 0
        ? new SnapshotProducer(
            {
              natsUrl: options.natsUrl,
              natsCreds: options.natsCreds,
              natsUser: options.natsUser,
              natsPassword: options.natsPassword,
              natsToken: options.natsToken,
              replica: options.snapshotReplica || `${options.ledger}.snapshot-replica.db`,
              intervalMs: options.snapshotInterval,
              keep: options.snapshotKeep,
              streamReplicas: options.streamReplicas,
            },
            registry,
            logger.child({ component: "snapshots" }),
          )
        : undefined;
    snapshots?.start();
    auditHead.start();
    log.info({ grpc: grpc.addresses[0], http: ops.address, nats: redactNatsUrl(options.natsUrl) }, "writer started");
    if (usingDevCustomerTokenKey() && !isLoopbackListen(options.grpcListen))
      log.warn("customer tokens use the public development key: set --customer-token-key (PROOFGATE_CUSTOMER_TOKEN_KEY) on the writer and every sidecar (docs/security.md)");

    let closed: Promise<void> | undefined;
    return {
      grpcAddress: grpc.addresses[0] ?? options.grpcListen,
      httpAddress: ops.address,
      get ledgerId() {
        return ledger.ledgerId;
      },
      registry,
      headRevision: () => pub.headRevision,
      ready,
      role,
      close: () =>
        (closed ??= (async () => {
          closing = true;
          log.info("writer shutting down");
          clearInterval(healthTimer);
          heartbeat.stop();
          auditHead.stop();
          // In-flight calls finish while the fold and the publisher still run (they wait for their revision).
          await grpcServer.close(options.publishTimeout + 1_000);
          await fold.stop();
          await pub.close(FLUSH_ON_CLOSE_MS);
          // Released, not left to expire: a standby takes over at once.
          await lease.close();
          auditHead.send();
          await deadLetters.close();
          sidecars.close();
          await opsServer.close();
          stripeRoutes.close();
          await snapshots?.close();
          access?.close();
          await link.close();
          ledger.close();
          log.info("writer stopped");
        })()),
    };
  } catch (err) {
    await grpc?.close(0);
    await ops?.close();
    stripe?.close();
    access?.close();
    ledger.close();
    throw err;
  }
}
