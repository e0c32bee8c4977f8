import type { ChannelOptions } from "@grpc/grpc-js";
import { InvalidArgumentError, type ProofgateError } from "../errors/index.js";
import type { CheckRequest } from "../gen/proofgate/v1/check.js";
import { DEV_CUSTOMER_TOKEN_KEY, useCustomerTokenKey } from "../replication/subjects.js";
import { MAX_BATCH, validateCheck, validateCustomerId } from "../sidecar/check/validate.js";
import { batchResult, checkResult, entitlementsResult } from "./convert.js";
import { fromServiceError, unreachable } from "./errors.js";
import { LocalReplica } from "./local.js";
import { RemoteCheck, type RetryOptions } from "./remote.js";
import type { BatchResult, CallOptions, CheckQuery, CheckResult, EntitlementsResult, FailPolicy } from "./types.js";

export const DEFAULT_SIDECAR_ADDRESS = "127.0.0.1:50061";
const FAIL_POLICIES: readonly unknown[] = ["open", "closed", "throw"];

export interface ProofgateClientOptions {
  /**
   * The sidecar's gRPC address: `127.0.0.1:50061` or `unix:/var/run/proofgate/sidecar.sock`.
   * Default: `PROOFGATE_SIDECAR_ADDRESS` (which the Helm chart sets), else 127.0.0.1:50061.
   */
  readonly address?: string;
  /**
   * Local mode: the path of the sidecar's replica file, shared into this container. Checks are
   * then evaluated in process; the sidecar is asked only when the file is missing or unreadable,
   * or behind a `minRevision`. Default: `PROOFGATE_REPLICA` when set (the chart sets it when the
   * replica is shared), else off. `false` turns it off whatever the environment says.
   */
  readonly replica?: string | false;
  /**
   * Local mode: the customer token key the writer and sidecars use (the replica is keyed by it;
   * docs/security.md). Default: `PROOFGATE_CUSTOMER_TOKEN_KEY`, else the development key. One key
   * per process.
   */
  readonly customerTokenKey?: string;
  /** Deadline of each call in ms, retries included (default 1,000). */
  readonly deadlineMs?: number;
  readonly retry?: RetryOptions;
  /**
   * When the sidecar cannot be reached (UNAVAILABLE after the retries, or no answer before the
   * deadline): `open` allows, `closed` denies (both marked `source: "fail-policy"`), `throw`
   * throws the `UnavailableError`/`DeadlineExceededError`. Per feature, with a default (`closed`).
   */
  readonly failPolicy?: { readonly default?: FailPolicy; readonly features?: Readonly<Record<string, FailPolicy>> };
  /** Decoded documents kept for local mode, most recently used first (default 10,000). */
  readonly documentCacheSize?: number;
  /** Local mode's evaluation clock, Unix ms (default `Date.now`); for tests that move time. */
  readonly now?: () => number;
  readonly channelOptions?: ChannelOptions;
}

/**
 * proofgate's client for product services: `check`, `checkBatch` and `listEntitlements` against
 * the sidecar in the same pod, over gRPC or, in local mode, in process from the sidecar's replica
 * file with the same policy core (no network hop at all). Every answer says where it came from.
 *
 *     const proofgate = new ProofgateClient({ failPolicy: { features: { "api-access": "open" } } });
 *     const r = await proofgate.check({ customerId: "cus_42", feature: "api-access" });
 *     if (r.allowed) serve(); else explain(r.status, r.reason);
 *
 * Bad input throws `InvalidArgumentError` naming the field, in both modes.
 */
export class ProofgateClient {
  readonly address: string;
  private readonly remote: RemoteCheck;
  private readonly local: LocalReplica | undefined;
  private readonly deadlineMs: number;
  private readonly failDefault: FailPolicy;
  private readonly failFeatures: ReadonlyMap<string, FailPolicy>;
  private readonly now: () => number;

  constructor(options: ProofgateClientOptions = {}) {
    this.address = options.address ?? process.env["PROOFGATE_SIDECAR_ADDRESS"] ?? DEFAULT_SIDECAR_ADDRESS;
    if (this.address === "") throw new InvalidArgumentError("address", "must not be empty");
    this.deadlineMs = options.deadlineMs ?? 1_000;
    if (!(this.deadlineMs > 0)) throw new InvalidArgumentError("deadlineMs", `must be > 0, got ${this.deadlineMs}`);
    // Checked at run time too: options often come from configuration files, not typed code.
    const policies: unknown[] = [options.failPolicy?.default, ...Object.values(options.failPolicy?.features ?? {})];
    for (const p of policies) if (p !== undefined && !FAIL_POLICIES.includes(p)) throw new InvalidArgumentError("failPolicy", `must be open, closed or throw, got ${JSON.stringify(p)}`);
    this.failDefault = options.failPolicy?.default ?? "closed";
    this.failFeatures = new Map(Object.entries(options.failPolicy?.features ?? {}));
    this.now = options.now ?? Date.now;
    this.remote = new RemoteCheck(this.address, options.retry, options.channelOptions);
    const replica = options.replica ?? process.env["PROOFGATE_REPLICA"] ?? false;
    const cacheSize = options.documentCacheSize ?? 10_000;
    if (!Number.isSafeInteger(cacheSize) || cacheSize < 0) throw new InvalidArgumentError("documentCacheSize", `must be an integer >= 0, got ${cacheSize}`);
    if (replica) useCustomerTokenKey(options.customerTokenKey ?? process.env["PROOFGATE_CUSTOMER_TOKEN_KEY"] ?? DEV_CUSTOMER_TOKEN_KEY);
    this.local = replica ? new LocalReplica(replica, cacheSize) : undefined;
  }

  /** `local` while the replica file is open and answering, else `grpc` (see `localProblem`). */
  get mode(): "local" | "grpc" {
    return this.local?.active ? "local" : "grpc";
  }

  /** Why local mode is not answering right now (undefined when it is, or was not asked for). */
  get localProblem(): string | undefined {
    return this.local?.problem;
  }

  /** May `customerId` use `feature` now? */
  async check(query: CheckQuery, options: CallOptions = {}): Promise<CheckResult> {
    const req: CheckRequest = { customerId: query.customerId, feature: query.feature, quantity: query.quantity, minRevision: query.minRevision ?? options.minRevision };
    validateCheck(req, "");
    const local = this.tryLocal(() => this.local?.check(req, this.now()));
    if (local) return checkResult(local, "local");
    try {
      return checkResult(await this.remote.check(req, this.deadline(options)), "sidecar");
    } catch (err) {
      return this.failPolicy(req.feature, fromServiceError(err));
    }
  }

  /** Many checks (at most 1,000) answered at one replica revision. */
  async checkBatch(queries: readonly CheckQuery[], options: CallOptions = {}): Promise<BatchResult> {
    if (queries.length > MAX_BATCH) throw new InvalidArgumentError("checks", `at most ${MAX_BATCH} checks per batch, got ${queries.length}`);
    // Per-check minRevision is not a thing in a batch: the batch's applies to all of them.
    const checks: CheckRequest[] = queries.map((q) => ({ customerId: q.customerId, feature: q.feature, quantity: q.quantity, minRevision: undefined }));
    checks.forEach((c, i) => validateCheck(c, `checks[${i}].`));
    const minRevision = options.minRevision;
    const local = this.tryLocal(() => this.local?.checkBatch(checks, minRevision, this.now()));
    if (local) return batchResult(local, "local");
    try {
      return batchResult(await this.remote.checkBatch({ checks, minRevision }, this.deadline(options)), "sidecar");
    } catch (err) {
      const e = fromServiceError(err);
      const results = checks.map((c) => this.failPolicy(c.feature, e));
      return { results, revision: 0, stale: true, source: "fail-policy" };
    }
  }

  /** Every catalog feature's decision for one customer. Throws when the sidecar cannot be reached and local mode cannot answer (no fail policy: the client does not know the features). */
  async listEntitlements(customerId: string, options: CallOptions = {}): Promise<EntitlementsResult> {
    validateCustomerId(customerId, "customer_id");
    const minRevision = options.minRevision;
    const local = this.tryLocal(() => this.local?.listEntitlements(customerId, minRevision, this.now()));
    if (local) return entitlementsResult(local, "local");
    try {
      return entitlementsResult(await this.remote.listEntitlements({ customerId, minRevision }, this.deadline(options)), "sidecar");
    } catch (err) {
      throw fromServiceError(err);
    }
  }

  close(): void {
    this.local?.close();
    this.remote.close();
  }

  private deadline(options: CallOptions): number {
    const ms = options.deadlineMs ?? this.deadlineMs;
    if (!(ms > 0)) throw new InvalidArgumentError("deadlineMs", `must be > 0, got ${ms}`);
    return Date.now() + ms;
  }

  /** Local mode's answer, or undefined to ask the sidecar; a read error turns local mode off until the file reads again. */
  private tryLocal<T>(fn: () => T | undefined): T | undefined {
    if (!this.local) return undefined;
    try {
      return fn();
    } catch (err) {
      this.local.failed(err);
      return undefined;
    }
  }

  private failPolicy(feature: string, e: ProofgateError): CheckResult {
    const policy = this.failFeatures.get(feature) ?? this.failDefault;
    if (!unreachable(e) || policy === "throw") throw e;
    return {
      allowed: policy === "open",
      status: "SIDECAR_UNAVAILABLE",
      reason: `${policy === "open" ? "Allowed" : "Denied"} by the fail-${policy} policy for "${feature}": ${e.message}.`,
      value: "",
      limit: undefined,
      validUntil: undefined,
      revision: 0,
      stale: true,
      source: "fail-policy",
    };
  }
}
