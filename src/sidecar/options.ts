import v8 from "node:v8";
import { InvalidArgumentError } from "../errors/index.js";
import { boolean, duration, integer, logLevel, oneOf, optionDefaults, string, type Option, type OptionValues } from "../config/options.js";
import { natsOptionSpec } from "../replication/connection.js";
import { customerTokenOptionSpec } from "../replication/subjects.js";

const fraction = (description: string, def: number): Option<number> => ({
  description,
  default: def,
  parse: (raw, name) => {
    const n = Number(raw);
    if (raw.trim() === "" || !Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError(name, `must be a number between 0 and 1, got "${raw}"`);
    return n;
  },
});

const UNITS: Record<string, number> = { "": 1, b: 1, k: 1024, kib: 1024, m: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gib: 1024 ** 3 };

/** A size in bytes: `67108864`, `64MiB`, `512k`, `1G` (binary units). */
const byteSize = (description: string, def: number, min: number): Option<number> => ({
  description,
  default: def,
  parse: (raw, name) => {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(raw);
    const unit = m ? UNITS[(m[2] ?? "").toLowerCase()] : undefined;
    const n = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN;
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(name, `must be a size of at least ${min} bytes (e.g. 64MiB, 512KiB, 1GiB), got "${raw}"`);
    return n;
  },
  format: (n) => (n % 1024 ** 2 === 0 ? `${n / 1024 ** 2}MiB` : n % 1024 === 0 ? `${n / 1024}KiB` : String(n)),
});

/**
 * Node's flags for a sidecar process, as the Helm chart sets them (`NODE_OPTIONS`, value
 * `nodeOptions`) and the benchmark runs it. V8 grows its young generation to 16 MiB semi-spaces
 * while a bootstrap's records go through it and keeps them for good; 4 MiB keeps ~20 MiB off the
 * resting RSS, and under load costs about 10% less CPU per check than 2 MiB, which scavenged twice
 * as often (docs/sidecar.md, "Memory").
 */
export const SIDECAR_NODE_OPTIONS = "--max-semi-space-size=4";

/**
 * V8 flags a sidecar process sets on itself at start (`applySidecarV8Flags`), because
 * NODE_OPTIONS refuses them. Allocation-site pretenuring off: calls slowed by a burst of updates
 * outlive young-generation collections, so V8 decides to allocate some of Node's and grpc-js's
 * per-call objects (a stream's listener table, a call's listener) in the old generation; from then
 * on each call's short-lived objects hang off old ones and survive until a full collection
 * (docs/sidecar.md, "V8's pretenuring").
 */
export const SIDECAR_V8_FLAGS = "--no-allocation-site-pretenuring";

/** Sets SIDECAR_V8_FLAGS in this process: at its start, before it answers a call. */
export function applySidecarV8Flags(): void {
  v8.setFlagsFromString(SIDECAR_V8_FLAGS);
}

export const SIDECAR_MODES = ["full", "lazy"] as const;
export type SidecarMode = (typeof SIDECAR_MODES)[number];

/** `proofgate sidecar` options: each is a `--flag` and a `PROOFGATE_*` variable. */
export const sidecarOptionSpec = {
  ...natsOptionSpec,
  ...customerTokenOptionSpec,
  replica: string("path of the SQLite replica file", "./proofgate-replica.db"),
  grpcListen: string("gRPC TCP address (host:port); empty disables TCP", "127.0.0.1:50061"),
  grpcSocket: string("gRPC unix socket path (owner and group only, mode 0660); empty disables it", ""),
  grpcAllowRemote: boolean("allow --grpc-listen on a non-loopback address: CheckService is unauthenticated, so anyone who reaches it can ask (docs/security.md)", false),
  httpListen: string("HTTP address for /healthz, /readyz and /metrics; empty disables it", "127.0.0.1:9091"),
  minRevisionWait: duration("how long a check with min_revision waits for the replica to reach it", 2_000),
  decisionLogSample: fraction("fraction of decisions published to NATS subject proofgate.decisions (0 = off)", 0),
  extAuthzRules: string("ext_authz rules file (YAML, reloaded on change): serve Envoy's envoy.service.auth.v3.Authorization/Check; empty disables it", ""),
  extAuthzListen: string("where ext_authz is served (host:port or unix:/path); empty serves it on the Check listener(s)", ""),
  logLevel: logLevel(),
  readyFile: string("once listening, write the bound addresses here as JSON (pid, grpc, http); removed on stop. For scripts and test harnesses, like nats-server's ports file"),
  mode: oneOf(
    "full: replicate every customer (ready once caught up); lazy: keep only the customers asked about, fetched from NATS on a miss and then followed, within --lazy-max-customers and --lazy-max-bytes (ready at once; docs/sidecar.md#modes)",
    SIDECAR_MODES,
    "full",
  ),
  lazyMaxCustomers: integer("lazy mode: the most customers kept; the least recently checked go first", 100_000, 1),
  lazyMaxBytes: byteSize("lazy mode: the most document bytes kept (stored documents plus about 64 bytes each); the least recently checked go first", 64 * 1024 ** 2, 64 * 1024),
  snapshotBootstrap: boolean("start an empty replica from the newest replica snapshot in the NATS Object Store (bucket PROOFGATE_SNAPSHOTS), then follow the stream from its revision; false always replays the stream", true),
};

export type SidecarCliOptions = OptionValues<typeof sidecarOptionSpec>;

/** What `startSidecar` takes: the CLI options plus hooks for tests and embedding. */
export interface SidecarOptions extends SidecarCliOptions {
  /**
   * The clock decisions are evaluated at (Unix ms). Defaults to `Date.now`. Tests move it to
   * cross trial, period and grace ends without sleeping. Freshness (staleness) always uses the
   * real monotonic clock.
   */
  readonly now?: () => number;
  /**
   * A warm replica that cannot reach NATS (or finds no stream) becomes ready after this long and
   * serves what it has, marked stale once outside the coherency window. Default 2 s.
   */
  readonly offlineReadyAfterMs?: number;
  /** How often the sidecar announces its status on `proofgate.sidecar.status` (the writer's console lists sidecars). Default 5 s; 0 turns it off. */
  readonly statusIntervalMs?: number;
}

export function defaultSidecarOptions(): SidecarCliOptions {
  return optionDefaults(sidecarOptionSpec);
}
