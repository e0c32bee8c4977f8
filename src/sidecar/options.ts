import { InvalidArgumentError } from "../errors/index.js";
import { boolean, duration, logLevel, optionDefaults, string, type Option, type OptionValues } from "../config/options.js";
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
