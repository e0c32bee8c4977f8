import { redactNatsUrl } from "../replication/connection.js";
import { useCustomerTokenKey } from "../replication/subjects.js";
import { chmodSync, lstatSync, rmSync } from "node:fs";
import { hostname } from "node:os";
import { performance } from "node:perf_hooks";
import type { Registry } from "prom-client";
import { GrpcServer } from "../transport/grpc.js";
import { OpsServer, isLoopbackListen } from "../transport/http.js";
import { createRegistry } from "../observability/metrics.js";
import type { Logger } from "../observability/logger.js";
import { InvalidArgumentError } from "../errors/index.js";
import { Replica } from "./replica/replica.js";
import { Freshness } from "./follow/freshness.js";
import { Follower } from "./follow/follower.js";
import { StatusAnnouncer } from "./follow/status.js";
import { recordFreshness } from "./follow/record-freshness.js";
import { CheckHandler, type CheckSource } from "./check/service.js";
import type { NatsConnection } from "nats";
import { openLazy, type Lazy } from "./lazy/index.js";
import { DecisionLog } from "./check/decision-log.js";
import { RevisionWaiters } from "./check/revision-waiters.js";
import { SidecarMetrics } from "./metrics.js";
import { SnapshotRestorer } from "../snapshot/restore.js";
import { defaultSidecarOptions, type SidecarOptions } from "./options.js";
import { ExtAuthzHandler } from "./extauthz/service.js";
import { ExtAuthzMetrics } from "./extauthz/metrics.js";
import { RulesFile } from "./extauthz/loader.js";

export { sidecarOptionSpec, defaultSidecarOptions, type SidecarOptions, type SidecarCliOptions } from "./options.js";
export { DECISIONS_SUBJECT } from "./check/decision-log.js";

export interface Sidecar {
  /** Bound gRPC addresses, ephemeral ports resolved: `127.0.0.1:50061`, `unix:/run/proofgate.sock`. */
  readonly grpcAddresses: readonly string[];
  /** The TCP gRPC address, if listening on TCP. */
  readonly grpcAddress: string | undefined;
  /** The unix socket gRPC address (`unix:/path`), if listening on one. */
  readonly grpcSocketAddress: string | undefined;
  /** Where `envoy.service.auth.v3.Authorization` is served (empty when --ext-authz-rules is not set). */
  readonly extAuthzAddresses: readonly string[];
  /** The HTTP ops address (`host:port`), if enabled. */
  readonly httpAddress: string | undefined;
  /** The replica's applied revision. */
  readonly revision: number;
  /** True once the initial sync caught up (what /readyz and grpc.health.v1 report). */
  readonly ready: boolean;
  /** True when answers given now would carry `stale = true`. */
  readonly stale: boolean;
  /** Connected to NATS right now. */
  readonly connected: boolean;
  readonly registry: Registry;
  /** Resolves once ready. */
  whenReady(): Promise<void>;
  /** Resolves true once the replica has applied `revision`, false after `timeoutMs`. */
  waitForRevision(revision: number, timeoutMs: number): Promise<boolean>;
  /** Graceful shutdown: not ready, stop listening, finish in-flight calls, stop following, close the replica. */
  close(): Promise<void>;
}

/**
 * Starts a sidecar: opens (or creates) the replica, starts serving checks from it at once, and
 * follows the state stream in the background. Resolves when the servers listen, not when the
 * replica is current (see `whenReady`).
 */
export async function startSidecar(partial: Partial<SidecarOptions>, logger: Logger): Promise<Sidecar> {
  const options: SidecarOptions = { ...defaultSidecarOptions(), ...partial };
  if (!options.grpcListen && !options.grpcSocket) throw new InvalidArgumentError("grpc-listen", "set --grpc-listen or --grpc-socket (both are empty)");
  if (options.extAuthzListen && !options.extAuthzRules) throw new InvalidArgumentError("ext-authz-listen", "set --ext-authz-rules too: without a rules file ext_authz is off");
  if (options.grpcListen && !options.grpcAllowRemote && !isLoopbackListen(options.grpcListen))
    throw new InvalidArgumentError("grpc-listen", `${options.grpcListen} is not a loopback address and CheckService is unauthenticated: listen on 127.0.0.1 or a unix socket, or set --grpc-allow-remote (PROOFGATE_GRPC_ALLOW_REMOTE)`);
  useCustomerTokenKey(options.customerTokenKey);
  const log = logger.child({ component: "sidecar" });
  const registry = createRegistry();
  // Before anything is opened: a rules file that does not load stops the start with its error.
  const extAuthzMetrics = options.extAuthzRules ? new ExtAuthzMetrics(registry) : undefined;
  const rulesFile = extAuthzMetrics ? new RulesFile(options.extAuthzRules, log.child({ component: "ext-authz" }), extAuthzMetrics) : undefined;
  const lazyMode = options.mode === "lazy";
  // Full mode: the replica of every customer. Lazy mode: the store of those asked about (src/sidecar/lazy).
  const replica = lazyMode ? undefined : Replica.open(options.replica, log.child({ component: "replica" }));
  const freshness = new Freshness();
  // For the client's local mode, which reads the replica file and must know what we would say.
  const freshnessRecord = replica ? recordFreshness(replica, freshness, log.child({ component: "replica" })) : undefined;
  // Set once the servers listen; the metrics and decision log read it through this holder.
  const link: { follower?: { readonly connected: boolean; readonly connection: NatsConnection | undefined } } = {};
  let grpc: GrpcServer | undefined;
  let extAuthzServer: GrpcServer | undefined;
  let ready = false;
  const readyWaiters: (() => void)[] = [];
  const metrics = new SidecarMetrics(registry, {
    revision: () => source.revision,
    head: () => freshness.head,
    ageSeconds: () => freshness.ageMs(performance.now()) / 1000,
    heartbeatAgeSeconds: () => freshness.heartbeatAgeMs(performance.now()) / 1000,
    stale: () => freshness.isStale(performance.now(), source.catalog.coherencyWindowMs),
    ready: () => ready,
    connected: () => link.follower?.connected ?? false,
  });
  const waiters = new RevisionWaiters(() => source.revision);
  const lazy: Lazy | undefined = lazyMode
    ? openLazy(options.replica, { maxCustomers: options.lazyMaxCustomers, maxBytes: options.lazyMaxBytes }, freshness, metrics, registry, log, {
        natsUrl: options.natsUrl,
        natsCreds: options.natsCreds,
        natsUser: options.natsUser,
        natsPassword: options.natsPassword,
        natsToken: options.natsToken,
        coherencyWindowMs: () => source.catalog.coherencyWindowMs,
        onRevision: (revision) => waiters.notify(revision),
      })
    : undefined;
  const source: CheckSource = (lazy?.store ?? replica) as CheckSource;
  const closeSource = async (): Promise<void> => {
    await freshnessRecord?.stop();
    lazy?.store.close();
    await replica?.close();
  };
  const decisionLog =
    options.decisionLogSample > 0
      ? new DecisionLog(
          options.decisionLogSample,
          () => {
            const nc = link.follower?.connection;
            return nc ? { nc, connected: link.follower?.connected ?? false } : undefined;
          },
          metrics,
          log.child({ component: "decision-log" }),
        )
      : undefined;
  const handler = new CheckHandler({
    replica: source,
    misses: lazy?.misses,
    freshness,
    waiters,
    metrics,
    logger: log.child({ component: "check" }),
    now: options.now ?? Date.now,
    minRevisionWaitMs: options.minRevisionWait,
    decisionLog,
  });
  const setReady = (value: boolean): void => {
    ready = value;
    grpc?.setServing(value);
    extAuthzServer?.setServing(value);
    if (value) readyWaiters.splice(0).forEach((r) => r());
    log.info({ ready: value, revision: source.revision }, value ? "sidecar ready" : "sidecar not ready");
  };

  const addresses: string[] = [];
  if (options.grpcListen) addresses.push(options.grpcListen);
  if (options.grpcSocket) {
    removeStaleSocket(options.grpcSocket);
    addresses.push(`unix:${options.grpcSocket}`);
  }
  const extAuthz =
    rulesFile && extAuthzMetrics
    ? new ExtAuthzHandler({ rules: rulesFile, check: (req) => handler.check(req), metrics: extAuthzMetrics, logger: log.child({ component: "ext-authz" }) })
    : undefined;
  let ops: OpsServer | undefined;
  try {
    const shared = extAuthz && !options.extAuthzListen ? [extAuthz.binding()] : [];
    grpc = await GrpcServer.start([handler.binding(), ...shared], addresses);
    if (extAuthz && options.extAuthzListen) {
      const listen = options.extAuthzListen;
      if (listen.startsWith("unix:")) removeStaleSocket(listen.slice("unix:".length));
      extAuthzServer = await GrpcServer.start([extAuthz.binding()], [listen]);
    }
    // Check answers anyone who can connect: the socket is for the pod's own user and group.
    if (options.grpcSocket) chmodSync(options.grpcSocket, 0o660);
    if (options.httpListen) {
      ops = await OpsServer.start(options.httpListen, { registry, healthy: () => true, ready: () => ready }, log.child({ component: "http" }));
    }
  } catch (err) {
    await grpc?.close(0);
    await extAuthzServer?.close(0);
    rulesFile?.close();
    await closeSource();
    throw err;
  }

  const f = lazy ? lazy.follower : fullFollower(replica as Replica);
  function fullFollower(r: Replica): Follower {
    const restorer = options.snapshotBootstrap ? new SnapshotRestorer(r, registry, log.child({ component: "snapshot" })) : undefined;
    return new Follower(r, freshness, metrics, log.child({ component: "follower" }), {
      natsUrl: options.natsUrl,
      natsCreds: options.natsCreds,
      natsUser: options.natsUser,
      natsPassword: options.natsPassword,
      natsToken: options.natsToken,
      offlineReadyAfterMs: options.offlineReadyAfterMs ?? 2_000,
      coherencyWindowMs: () => r.catalog.coherencyWindowMs,
      onRevision: (revision) => waiters.notify(revision),
      onReady: setReady,
      bootstrap: restorer ? (nc, info) => restorer.restore(nc, info) : undefined,
    });
  }
  link.follower = f;
  f.start();
  // Lazy mode has nothing to sync before answering: its answers say how fresh they are.
  if (lazy) setReady(true);
  const statusId = `${hostname()}/${process.pid}`;
  const announcer = new StatusAnnouncer(
    options.statusIntervalMs ?? 5_000,
    () => (f.connected ? f.connection : undefined),
    () => {
      const lag = freshness.ageMs(performance.now()) / 1000;
      return {
        id: statusId,
        appliedRevision: source.revision,
        headRevision: freshness.head,
        ready,
        stale: freshness.isStale(performance.now(), source.catalog.coherencyWindowMs),
        lagSeconds: Number.isFinite(lag) ? lag : -1,
        sentAtMs: Date.now(),
      };
    },
  );
  const grpcServer = grpc;
  const tcp = grpcServer.addresses.find((a) => !a.startsWith("unix:"));
  const unix = grpcServer.addresses.find((a) => a.startsWith("unix:"));
  const extAuthzAddresses = extAuthz ? (extAuthzServer ?? grpcServer).addresses : [];
  log.info(
    { grpc: grpcServer.addresses, extAuthz: extAuthzAddresses, http: ops?.address, mode: options.mode, replica: options.replica, revision: source.revision, warm: replica?.warm, nats: redactNatsUrl(options.natsUrl) },
    "sidecar listening",
  );

  let closing: Promise<void> | undefined;
  return {
    grpcAddresses: grpcServer.addresses,
    grpcAddress: tcp,
    grpcSocketAddress: unix,
    extAuthzAddresses,
    httpAddress: ops?.address,
    get revision() {
      return source.revision;
    },
    get ready() {
      return ready;
    },
    get stale() {
      return freshness.isStale(performance.now(), source.catalog.coherencyWindowMs);
    },
    get connected() {
      return f.connected;
    },
    registry,
    whenReady: () => (ready ? Promise.resolve() : new Promise<void>((resolve) => readyWaiters.push(resolve))),
    waitForRevision: (revision, timeoutMs) => waiters.wait(revision, timeoutMs),
    close: () =>
      (closing ??= (async () => {
        log.info("sidecar shutting down");
        ready = false;
        // Checks waiting for a min_revision answer now (stale if not reached) instead of holding the shutdown.
        waiters.releaseAll();
        await Promise.all([grpcServer.close(), extAuthzServer?.close()]);
        rulesFile?.close();
        waiters.releaseAll();
        await ops?.close();
        decisionLog?.close();
        announcer.close();
        await f.close();
        await closeSource();
        if (options.grpcSocket) rmSync(options.grpcSocket, { force: true });
        if (options.extAuthzListen.startsWith("unix:")) rmSync(options.extAuthzListen.slice("unix:".length), { force: true });
        log.info("sidecar stopped");
      })()),
  };
}

/** A socket file left by a previous run would make the bind fail; anything else at that path is not ours to delete. */
function removeStaleSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) rmSync(path);
  } catch {
    // nothing there
  }
}
