import { hostname } from "node:os";
import { duration, integer, logLevel, optionDefaults, string, type OptionValues } from "../config/options.js";
import { natsOptionSpec } from "../replication/connection.js";
import { customerTokenOptionSpec } from "../replication/subjects.js";

/** Every writer option: a `--flag` and a `PROOFGATE_*` variable (see `describeOptions`). */
export const writerOptionSpec = {
  ...natsOptionSpec,
  ...customerTokenOptionSpec,
  ledger: string("path of the SQLite ledger file", "./proofgate-ledger.db"),
  grpcListen: string("gRPC listen address (IngestService, AdminService, health, reflection)", "127.0.0.1:50051"),
  httpListen: string("HTTP listen address (/healthz, /readyz, /metrics, the console under /console)", "127.0.0.1:9090"),
  writerId: { ...string("name of this writer in heartbeats and logs", hostname()), shownDefault: "the host name" },
  streamReplicas: integer("replicas of the JetStream streams the writer creates (3 in a NATS cluster)", 1, 1),
  heartbeatInterval: duration("how often the head revision is announced on proofgate.heartbeat", 1_000),
  publishTimeout: duration("how long a change waits to reach the state stream before the call answers UNAVAILABLE (the change stays committed)", 5_000),
  outboxRetention: duration("how long published outbox rows are kept before pruning (GetCustomer reports their exact revision meanwhile)", 60_000),
  maxDocumentBytes: integer("largest access document the writer commits, in bytes; a change that would exceed it is rejected with the reason (keep it below the NATS server's max_payload, 1 MiB by default)", 512 * 1024, 4096),
  maxEventSkew: duration("how far ahead of the writer's clock an event's occurred_at may be; later events are rejected (a future date would outrank real events)", 300_000),
  leaseTtl: duration("how long the leader lease lasts unrenewed (renewed every quarter of it); a standby takes over this long after the leader dies (docs/writer.md, \"High availability\")", 2_000),
  authFile: string("YAML file of principals (name, roles ingest/admin/read, token_sha256 and/or certificate), reloaded when it changes; required to listen on a non-loopback address (docs/security.md)"),
  tlsCert: string("PEM certificate chain served on the gRPC and HTTP listeners (TLS)"),
  tlsKey: string("PEM private key of --tls-cert"),
  tlsClientCa: string("PEM CA bundle for mutual TLS: gRPC requires a client certificate signed by it; its CN or a SAN names a principal in the auth file"),
  auditHeadInterval: duration("how often the audit chain's head (last entry and hash) is published to proofgate.audit.head, an outside copy to check the ledger against", 10_000),
  logLevel: logLevel(),
  readyFile: string("once listening, write the bound addresses here as JSON (pid, grpc, http); removed on stop. For scripts and test harnesses, like nats-server's ports file"),
  stripeWebhookSecret: string("Stripe webhook signing secret (whsec_..., comma separated while rolling); enables POST /webhooks/stripe on the HTTP listener (docs/stripe.md)"),
  stripePriceMap: string("Stripe price to plan/add-on map: a YAML or JSON file, or the map inline as JSON (docs/stripe.md)"),
  snapshotInterval: duration("how often a replica snapshot is put into the NATS Object Store for cold sidecars (docs/replication.md); 0 disables snapshots", 0),
  snapshotReplica: { ...string("the snapshot producer's own replica file", ""), shownDefault: "the ledger path + .snapshot-replica.db" },
  snapshotKeep: integer("replica snapshots kept in the Object Store", 3, 1),
  stripeTolerance: duration("maximum age of a Stripe webhook signature (replay protection)", 300_000),
  stripeApiKey: string("Stripe API key with read access to billing objects (rk_... restricted key preferred); lets the adapter read what webhooks cannot carry and enables reconciliation (docs/stripe.md)"),
  stripeApiBase: string("Stripe API base URL (for a test double or proxy); empty for Stripe's API"),
  stripeReconcileInterval: duration("how often the writer reconciles the ledger with Stripe's objects (0 = off; needs --stripe-api-key)", 0),
};

export type WriterOptions = OptionValues<typeof writerOptionSpec>;

/** Defaults for library and test use: every option at its default, overridden by `partial`. */
export function writerOptions(partial: Partial<WriterOptions> = {}): WriterOptions {
  return { ...optionDefaults(writerOptionSpec), ...partial };
}
