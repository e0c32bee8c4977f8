import { readFileSync } from "node:fs";
import { Counter, type Registry } from "prom-client";
import { AuthFile, Gate, type Denial, type Principal } from "../auth/index.js";
import { AuditKind } from "../gen/proofgate/v1/admin.js";
import type { Logger } from "../observability/logger.js";
import { isLoopbackListen } from "../transport/http.js";
import type { TlsFiles } from "../transport/tls.js";
import type { Ledger } from "./ledger/ledger.js";
import type { WriterOptions } from "./options.js";

/** At most this many denials a second become audit entries; the rest are counted into the next one. */
const DENIALS_AUDITED_PER_SECOND = 10;

/**
 * Safe by default: without an auth file the writer serves only this machine. Throws the one line
 * an operator needs when a listen address is reachable from elsewhere.
 */
export function requireAuthForListen(options: WriterOptions): void {
  if (options.authFile) return;
  for (const listen of [options.grpcListen, options.httpListen])
    if (!isLoopbackListen(listen))
      throw new Error(`refusing to listen on ${listen} without authentication: set --auth-file (PROOFGATE_AUTH_FILE) to a file of principals (docs/security.md), or listen on 127.0.0.1`);
}

/** The TLS files of both listeners, when configured (read once at start). */
export function writerTls(options: WriterOptions): TlsFiles | undefined {
  if (!options.tlsCert && !options.tlsKey) {
    if (options.tlsClientCa) throw new Error("--tls-client-ca needs --tls-cert and --tls-key");
    return undefined;
  }
  if (!options.tlsCert || !options.tlsKey) throw new Error("TLS needs both --tls-cert and --tls-key");
  return {
    cert: readFileSync(options.tlsCert),
    key: readFileSync(options.tlsKey),
    ...(options.tlsClientCa ? { clientCa: readFileSync(options.tlsClientCa) } : {}),
  };
}

export interface WriterAccess {
  readonly gate: Gate;
  /** The auth file's tokens (the console's login); undefined without an auth file. */
  readonly authenticateToken: ((token: string) => Principal | undefined) | undefined;
  close(): void;
}

/**
 * The writer's gate: principals from the auth file (reloaded on change), every denial counted
 * and audited (rate-limited, so a flood of bad calls cannot grow the ledger without bound).
 */
export function writerAccess(options: WriterOptions, ledger: Ledger, registry: Registry, now: () => number, logger: Logger): WriterAccess {
  const denied = new Counter({
    name: "proofgate_writer_auth_denied_total",
    help: "Calls refused by authentication (reason=unauthenticated) or authorization (reason=permission_denied), by method",
    labelNames: ["method", "reason"] as const,
    registers: [registry],
  });
  const reloads = new Counter({
    name: "proofgate_writer_auth_reloads_total",
    help: "Auth file reloads, by result (ok, error: the previous principals stay in force)",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  // Who changes what, how often: the anomaly alerts (overrides, erasures, catalog changes) read it.
  const calls = new Counter({
    name: "proofgate_writer_calls_total",
    help: "Authorized calls by method and principal (the principals of the auth file; \"local\" without one)",
    labelNames: ["method", "principal"] as const,
    registers: [registry],
  });
  const file = options.authFile ? AuthFile.open(options.authFile, logger, { onReload: (ok) => reloads.inc({ result: ok ? "ok" : "error" }) }) : undefined;
  if (!file) logger.warn("no --auth-file: every local caller acts as principal \"local\" with every role (loopback only)");
  let windowStart = 0;
  let inWindow = 0;
  let suppressed = 0;
  const onDenied = (d: Denial): void => {
    denied.inc({ method: d.method, reason: d.reason });
    logger.warn({ method: d.method, reason: d.reason, principal: d.principal }, "call denied");
    const t = now();
    if (t - windowStart >= 1_000) {
      windowStart = t;
      inWindow = 0;
    }
    if (++inWindow > DENIALS_AUDITED_PER_SECOND || !ledger.open) {
      suppressed++;
      return;
    }
    const more = suppressed > 0 ? ` (+${suppressed} earlier denials not audited individually)` : "";
    suppressed = 0;
    ledger.appendAudit({ kind: AuditKind.AUDIT_KIND_AUTH_DENIED, actor: d.principal ?? "", reason: d.reason, detail: `${d.method}: ${d.message}${more}` }, t);
  };
  return {
    gate: new Gate(file, onDenied, (method, p) => calls.inc({ method, principal: p.name })),
    authenticateToken: file ? (token) => file.authenticateToken(token) : undefined,
    close: () => file?.close(),
  };
}
