import { performance } from "node:perf_hooks";
import type { ServerUnaryCall } from "@grpc/grpc-js";
import { InvalidArgumentError } from "../../errors/index.js";
import {
  CheckResponse as CheckResponseCodec,
  CheckServiceService,
  type CheckBatchRequest,
  type CheckBatchResponse,
  type CheckRequest,
  type CheckResponse,
  type ListEntitlementsRequest,
  type ListEntitlementsResponse,
} from "../../gen/proofgate/v1/check.js";
import { AccessDocument } from "../../gen/proofgate/v1/document.js";
import type { CatalogIndex } from "../../catalog/index.js";
import { answersHoldUntil, evaluate, evaluateAll, formatMs, staleDenial, staleReason, toCheckResponse, toEntitlement, withStalePolicy, type Decision } from "../../policy/index.js";
import { unary, type ServiceBinding } from "../../transport/grpc.js";
import type { Logger } from "../../observability/logger.js";
import type { Freshness } from "../follow/freshness.js";
import type { SidecarMetrics } from "../metrics.js";
import { AnswerCache, sameDocument, withRevision, type Answer } from "./answers.js";
import type { DecisionLog } from "./decision-log.js";
import type { RevisionWaiters } from "./revision-waiters.js";
import { MAX_BATCH, validateCheck, validateCustomerId } from "./validate.js";

/** Where answers are read: the full replica, or the lazy store (src/sidecar/lazy). */
export interface CheckSource {
  readonly revision: number;
  readonly catalog: CatalogIndex;
  /** The revision and a customer's document, read together (null: none). */
  lookup(customerId: string): [revision: number, document: Buffer | null];
  document(customerId: string): Buffer | undefined;
  readRevision(): number;
  snapshot<T>(fn: () => T): T;
}

/** Lazy mode: a source that keeps only some customers, and fetches the others before answering. */
export interface MissLoader {
  holds(customerId: string): boolean;
  /**
   * Fetches the customers not kept. Resolves (never rejects, never later than `timeoutMs`) with
   * why some could not be fetched, naming the cause (NATS unreachable…), or undefined.
   */
  load(customerIds: readonly string[], timeoutMs: number): Promise<string | undefined>;
}

export interface CheckServiceDeps {
  readonly replica: CheckSource;
  /** Set in lazy mode. */
  readonly misses?: MissLoader | undefined;
  readonly freshness: Freshness;
  readonly waiters: RevisionWaiters;
  readonly metrics: SidecarMetrics;
  readonly logger: Logger;
  /** Evaluation clock, Unix ms. */
  readonly now: () => number;
  readonly minRevisionWaitMs: number;
  readonly decisionLog: DecisionLog | undefined;
}

const NONE: readonly string[] = [];

/** Why an answer is stale, when it is; undefined when fresh. */
type Staleness = string | undefined;

/**
 * CheckService over the replica. The common path (no min_revision, or one already reached) is
 * synchronous: one prepared point read, one protobuf decode, the pure evaluation, no promise.
 */
export class CheckHandler {
  private readonly answers = new AnswerCache();

  constructor(private readonly deps: CheckServiceDeps) {}

  binding(): ServiceBinding {
    const { logger } = this.deps;
    return {
      name: "proofgate.v1.CheckService",
      // Check answers leave the handler already encoded (see checkWire).
      definition: { ...CheckServiceService, check: { ...CheckServiceService.check, responseSerialize: (b: Buffer): Buffer => b } },
      implementation: {
        check: unary<CheckRequest, Buffer>(logger, (req, call) => this.checkWire(req, call)),
        checkBatch: unary<CheckBatchRequest, CheckBatchResponse>(logger, (req, call) => this.checkBatch(req, call)),
        listEntitlements: unary<ListEntitlementsRequest, ListEntitlementsResponse>(logger, (req, call) => this.listEntitlements(req, call)),
      },
    };
  }

  check(req: CheckRequest, call?: ServerUnaryCall<unknown, unknown>): CheckResponse | Promise<CheckResponse> {
    validateCheck(req, "");
    const before = this.before(req.customerId, req.minRevision, call);
    if (before === undefined) return this.checkNow(req, undefined);
    return before.then((missed) => this.checkNow(req, missed));
  }

  /** Check, answered as CheckResponse bytes: what `check` answers, encoded, mostly from the answer cache. */
  checkWire(req: CheckRequest, call?: ServerUnaryCall<unknown, unknown>): Buffer | Promise<Buffer> {
    validateCheck(req, "");
    const before = this.before(req.customerId, req.minRevision, call);
    if (before === undefined) return this.checkNowWire(req, undefined);
    return before.then((missed) => this.checkNowWire(req, missed));
  }

  checkBatch(req: CheckBatchRequest, call?: ServerUnaryCall<unknown, unknown>): CheckBatchResponse | Promise<CheckBatchResponse> {
    if (req.checks.length > MAX_BATCH) throw new InvalidArgumentError("checks", `at most ${MAX_BATCH} checks per batch, got ${req.checks.length}`);
    for (let i = 0; i < req.checks.length; i++) validateCheck(req.checks[i] as CheckRequest, `checks[${i}].`);
    const before = this.before(req.checks, req.minRevision, call);
    if (before === undefined) return this.batchNow(req, undefined);
    return before.then((missed) => this.batchNow(req, missed));
  }

  listEntitlements(req: ListEntitlementsRequest, call?: ServerUnaryCall<unknown, unknown>): ListEntitlementsResponse | Promise<ListEntitlementsResponse> {
    validateCustomerId(req.customerId, "customer_id");
    const before = this.before(req.customerId, req.minRevision, call);
    if (before === undefined) return this.listNow(req, undefined);
    return before.then((missed) => this.listNow(req, missed));
  }

  // ---------------------------------------------------------------- evaluation

  private checkNow(req: CheckRequest, missed: Staleness): CheckResponse {
    const started = performance.now();
    const { replica, metrics } = this.deps;
    const catalog = replica.catalog;
    const at = this.deps.now();
    const [revision, raw] = replica.lookup(req.customerId);
    const decision = evaluate(raw ? AccessDocument.decode(raw) : undefined, catalog, req.feature, req.quantity, at);
    const stale = missed ?? this.staleness(started, catalog);
    const response = this.respond(decision, catalog, stale, revision, this.unkept(req.customerId));
    metrics.checkTook((performance.now() - started) / 1000);
    this.deps.decisionLog?.offer(at, req.customerId, req.feature, req.quantity, () => response);
    return response;
  }

  /**
   * The cached path. While the replica's revision is the one an answer was confirmed at, nothing
   * changed: no read at all. After any change, one point read confirms the customer's document is
   * the same bytes. Stale answers are never cached (they carry a sentence about the moment).
   */
  private checkNowWire(req: CheckRequest, missed: Staleness): Buffer {
    const started = performance.now();
    const { replica, metrics } = this.deps;
    const catalog = replica.catalog;
    const stale = missed ?? this.staleness(started, catalog);
    if (stale !== undefined) return Buffer.from(CheckResponseCodec.encode(this.checkNow(req, stale)).finish());
    const at = this.deps.now();
    const key = AnswerCache.key(req.customerId, req.feature, req.quantity);
    let answer = this.answers.get(key, catalog, at);
    let revision = replica.revision;
    if (answer && answer.revision !== revision) {
      const [rev, raw] = replica.lookup(req.customerId);
      revision = rev;
      if (sameDocument(raw, answer.document)) answer.revision = rev;
      else answer = this.answer(req, key, catalog, at, rev, raw);
    } else if (!answer) {
      const [rev, raw] = replica.lookup(req.customerId);
      revision = rev;
      answer = this.answer(req, key, catalog, at, rev, raw);
    }
    const decision = answer.decision;
    metrics.decided(decision.status);
    metrics.checkTook((performance.now() - started) / 1000);
    this.deps.decisionLog?.offer(at, req.customerId, req.feature, req.quantity, () => toCheckResponse(decision, revision, false));
    return withRevision(answer.body, revision, false);
  }

  private answer(req: CheckRequest, key: string, catalog: CatalogIndex, at: number, revision: number, raw: Buffer | null): Answer {
    const doc = raw ? AccessDocument.decode(raw) : undefined;
    return this.answers.put(key, {
      catalog,
      revision,
      document: raw,
      fromMs: at,
      untilMs: answersHoldUntil(doc, catalog, at),
      decision: evaluate(doc, catalog, req.feature, req.quantity, at),
    });
  }

  private batchNow(req: CheckBatchRequest, missed: Staleness): CheckBatchResponse {
    const started = performance.now();
    const { replica, metrics } = this.deps;
    // Synchronous from here: every check sees the same revision, catalog and instant.
    const catalog = replica.catalog;
    const at = this.deps.now();
    const stale = missed ?? this.staleness(started, catalog);
    const results: CheckResponse[] = new Array<CheckResponse>(req.checks.length);
    let revision = 0;
    // One read snapshot: the writer thread may commit in between, the batch must not see it.
    replica.snapshot(() => {
      revision = replica.readRevision();
      let lastId: string | undefined;
      let lastDoc: AccessDocument | undefined;
      for (let i = 0; i < req.checks.length; i++) {
        const c = req.checks[i] as CheckRequest;
        if (c.customerId !== lastId) {
          lastId = c.customerId;
          lastDoc = this.document(c.customerId);
        }
        const response = this.respond(evaluate(lastDoc, catalog, c.feature, c.quantity, at), catalog, stale, revision, this.unkept(c.customerId));
        results[i] = response;
        this.deps.decisionLog?.offer(at, c.customerId, c.feature, c.quantity, () => response);
      }
    });
    metrics.batchTook((performance.now() - started) / 1000);
    return { results, revision, stale: stale !== undefined };
  }

  private listNow(req: ListEntitlementsRequest, missed: Staleness): ListEntitlementsResponse {
    const started = performance.now();
    const { replica, metrics } = this.deps;
    const catalog = replica.catalog;
    const [revision, raw] = replica.lookup(req.customerId);
    const stale = missed ?? this.staleness(started, catalog);
    const unkept = this.unkept(req.customerId);
    const entitlements = evaluateAll(raw ? AccessDocument.decode(raw) : undefined, catalog, this.deps.now()).map(({ feature, decision }) => {
      const d = unkept && stale !== undefined ? staleDenial(decision, stale) : withStalePolicy(decision, catalog, stale);
      metrics.decided(d.status);
      return toEntitlement(feature, d);
    });
    if (stale !== undefined) metrics.staleAnswers.inc();
    metrics.listTook((performance.now() - started) / 1000);
    return { entitlements, revision, stale: stale !== undefined };
  }

  private document(customerId: string): AccessDocument | undefined {
    const raw = this.deps.replica.document(customerId);
    return raw ? AccessDocument.decode(raw) : undefined;
  }

  /**
   * `unkept`: a lazy sidecar could not fetch the customer, so there is no document to answer
   * from. Whatever the stale policy, the answer is then the stale denial (it names why); under
   * `serve` it could only have been a denial too (no document: UNKNOWN_CUSTOMER).
   */
  private respond(decision: Decision, catalog: CatalogIndex, stale: Staleness, revision: number, unkept = false): CheckResponse {
    const { metrics } = this.deps;
    if (stale === undefined) {
      metrics.decided(decision.status);
      return toCheckResponse(decision, revision, false);
    }
    metrics.staleAnswers.inc();
    const d = unkept ? staleDenial(decision, stale) : withStalePolicy(decision, catalog, stale);
    metrics.decided(d.status);
    return toCheckResponse(d, revision, true);
  }

  /** Hot path: undefined (fresh) after one comparison; the sentence is built only when stale. */
  private staleness(monoNow: number, catalog: CatalogIndex): Staleness {
    const { freshness } = this.deps;
    if (!freshness.isStale(monoNow, catalog.coherencyWindowMs)) return undefined;
    return staleReason(freshness.ageMs(monoNow), catalog.coherencyWindowMs);
  }

  /** Lazy mode: the customer is not in the store (its fetch failed); the answer is stale and says why. */
  private unkept(customerId: string): boolean {
    const misses = this.deps.misses;
    return misses !== undefined && !misses.holds(customerId);
  }

  /**
   * What must happen before answering: a wait for `min_revision`, and in lazy mode fetching the
   * customers not kept. Undefined when nothing (the hot path: answer synchronously); else the
   * reason the answer will be stale, if it will.
   */
  private before(customers: string | readonly { readonly customerId: string }[], min: number | undefined, call: ServerUnaryCall<unknown, unknown> | undefined): Promise<Staleness> | undefined {
    const { misses, replica } = this.deps;
    const wait = min !== undefined && min > replica.revision;
    let missing: readonly string[] = NONE;
    if (misses !== undefined) {
      if (typeof customers === "string") missing = misses.holds(customers) ? NONE : [customers];
      else missing = [...new Set(customers.map((c) => c.customerId))].filter((id) => !misses.holds(id));
    }
    if (!wait && missing.length === 0) return undefined;
    return (async (): Promise<Staleness> => {
      const missed = wait ? await this.waitFor(min, call) : undefined;
      if (misses === undefined || missing.length === 0) return missed;
      const notFetched = await misses.load(missing, this.timeLeft(this.deps.minRevisionWaitMs, call));
      if (notFetched !== undefined) return notFetched;
      // Fetched, but evicted again by other misses before this answer (a bound smaller than the misses in flight).
      const gone = missing.filter((id) => !misses.holds(id)).length;
      if (gone > 0) return `${gone === 1 ? "the customer was" : `${gone} customers were`} fetched but evicted again at once: --lazy-max-customers or --lazy-max-bytes is too small for the misses in flight`;
      return missed;
    })();
  }

  /** `limit`, shortened to answer a little before the call's deadline rather than not at all. */
  private timeLeft(limit: number, call: ServerUnaryCall<unknown, unknown> | undefined): number {
    const deadline = call?.getDeadline();
    if (deadline === undefined) return limit;
    const ms = deadline instanceof Date ? deadline.getTime() : deadline;
    return Number.isFinite(ms) ? Math.max(0, Math.min(limit, ms - Date.now() - 20)) : limit;
  }

  /** Waits for `min_revision` within min-revision-wait (and the call's deadline); returns why the answer is stale if not reached. */
  private async waitFor(revision: number, call: ServerUnaryCall<unknown, unknown> | undefined): Promise<Staleness> {
    const { minRevisionWaitMs, waiters, metrics, replica } = this.deps;
    const timeout = this.timeLeft(minRevisionWaitMs, call);
    const reached = await waiters.wait(revision, timeout);
    if (reached) return undefined;
    metrics.minRevisionTimeouts.inc();
    return `the replica had not applied revision ${revision} after ${formatMs(Math.max(0, timeout))} (it is at ${replica.revision})`;
  }
}
