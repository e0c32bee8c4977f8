import { performance } from "node:perf_hooks";
import type { ServerUnaryCall } from "@grpc/grpc-js";
import { InvalidArgumentError } from "../../errors/index.js";
import {
  CheckBatchResponse as CheckBatchResponseCodec,
  CheckResponse as CheckResponseCodec,
  ListEntitlementsResponse as ListEntitlementsResponseCodec,
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
import { evaluate, evaluateAll, formatMs, staleDenial, staleReason, toCheckResponse, toEntitlement, withStalePolicy, type Decision } from "../../policy/index.js";
import { unary, type ServiceBinding } from "../../transport/grpc.js";
import type { Logger } from "../../observability/logger.js";
import type { Freshness } from "../follow/freshness.js";
import type { SidecarMetrics } from "../metrics.js";
import { AnswerCache, LIST_TAIL, batchResponse, withRevision, type CheckAnswer, type CustomerAnswers, type ListAnswer } from "./answers.js";
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

/** Answers leave the handler as encoded bytes. */
const encoded = (b: Buffer): Buffer => b;

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
      // Answers leave the handler already encoded (see checkWire, checkBatchWire, listEntitlementsWire).
      definition: {
        ...CheckServiceService,
        check: { ...CheckServiceService.check, responseSerialize: encoded },
        checkBatch: { ...CheckServiceService.checkBatch, responseSerialize: encoded },
        listEntitlements: { ...CheckServiceService.listEntitlements, responseSerialize: encoded },
      },
      implementation: {
        check: unary<CheckRequest, Buffer>(logger, (req, call) => this.checkWire(req, call)),
        checkBatch: unary<CheckBatchRequest, Buffer>(logger, (req, call) => this.checkBatchWire(req, call)),
        listEntitlements: unary<ListEntitlementsRequest, Buffer>(logger, (req, call) => this.listEntitlementsWire(req, call)),
      },
    };
  }

  /** Check, evaluating (what checkWire answers, as an object). */
  check(req: CheckRequest, call?: ServerUnaryCall<unknown, unknown>): CheckResponse | Promise<CheckResponse> {
    return this.single(req, call, (missed) => this.checkNow(req, missed));
  }

  /** Check, answered as CheckResponse bytes: what `check` answers, encoded, mostly from the answer cache. */
  checkWire(req: CheckRequest, call?: ServerUnaryCall<unknown, unknown>): Buffer | Promise<Buffer> {
    return this.single(req, call, (missed) => this.checkNowWire(req, missed));
  }

  /** CheckBatch, evaluating every check (what checkBatchWire answers, as an object). */
  checkBatch(req: CheckBatchRequest, call?: ServerUnaryCall<unknown, unknown>): CheckBatchResponse | Promise<CheckBatchResponse> {
    return this.batch(req, call, (missed) => this.batchNow(req, missed));
  }

  /** CheckBatch, answered as CheckBatchResponse bytes, mostly from the answer cache. */
  checkBatchWire(req: CheckBatchRequest, call?: ServerUnaryCall<unknown, unknown>): Buffer | Promise<Buffer> {
    return this.batch(req, call, (missed) => this.batchNowWire(req, missed));
  }

  /** ListEntitlements, evaluating every feature (what listEntitlementsWire answers, as an object). */
  listEntitlements(req: ListEntitlementsRequest, call?: ServerUnaryCall<unknown, unknown>): ListEntitlementsResponse | Promise<ListEntitlementsResponse> {
    return this.list(req, call, (missed) => this.listNow(req, missed));
  }

  /** ListEntitlements, answered as ListEntitlementsResponse bytes, mostly from the answer cache. */
  listEntitlementsWire(req: ListEntitlementsRequest, call?: ServerUnaryCall<unknown, unknown>): Buffer | Promise<Buffer> {
    return this.list(req, call, (missed) => this.listNowWire(req, missed));
  }

  private single<T>(req: CheckRequest, call: ServerUnaryCall<unknown, unknown> | undefined, now: (missed: Staleness) => T): T | Promise<T> {
    validateCheck(req, "");
    const before = this.before(req.customerId, req.minRevision, call);
    if (before === undefined) return now(undefined);
    return before.then(now);
  }

  private batch<T>(req: CheckBatchRequest, call: ServerUnaryCall<unknown, unknown> | undefined, now: (missed: Staleness) => T): T | Promise<T> {
    if (req.checks.length > MAX_BATCH) throw new InvalidArgumentError("checks", `at most ${MAX_BATCH} checks per batch, got ${req.checks.length}`);
    for (let i = 0; i < req.checks.length; i++) validateCheck(req.checks[i] as CheckRequest, `checks[${i}].`);
    const before = this.before(req.checks, req.minRevision, call);
    if (before === undefined) return now(undefined);
    return before.then(now);
  }

  private list<T>(req: ListEntitlementsRequest, call: ServerUnaryCall<unknown, unknown> | undefined, now: (missed: Staleness) => T): T | Promise<T> {
    validateCustomerId(req.customerId, "customer_id");
    const before = this.before(req.customerId, req.minRevision, call);
    if (before === undefined) return now(undefined);
    return before.then(now);
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
   * The cached path (AnswerCache): no read while the replica is at the revision the customer's
   * answers were confirmed at, else one point read. Stale answers are never cached (they carry a
   * sentence about the moment).
   */
  private checkNowWire(req: CheckRequest, missed: Staleness): Buffer {
    const started = performance.now();
    const { replica, metrics } = this.deps;
    const catalog = replica.catalog;
    const stale = missed ?? this.staleness(started, catalog);
    if (stale !== undefined) return Buffer.from(CheckResponseCodec.encode(this.checkNow(req, stale)).finish());
    const at = this.deps.now();
    const customer = this.answers.customer(req.customerId, catalog, at, replica.revision, () => replica.lookup(req.customerId));
    const answer = this.answers.check(customer, AnswerCache.key(req.feature, req.quantity), (doc) => checkAnswer(evaluate(doc, catalog, req.feature, req.quantity, at)));
    this.served(answer, customer.revision, req, at);
    metrics.checkTook((performance.now() - started) / 1000);
    return withRevision(answer.body, customer.revision, false);
  }

  /** What every fresh cached answer records: its status, and the decision log's sample (decoded from the bytes, for the sampled few). */
  private served(answer: CheckAnswer, revision: number, req: CheckRequest, at: number): void {
    this.deps.metrics.decided(answer.status);
    this.deps.decisionLog?.offer(at, req.customerId, req.feature, req.quantity, () => CheckResponseCodec.decode(withRevision(answer.body, revision, false)));
  }

  /**
   * CheckBatch from the Check answer cache, as CheckBatchResponse bytes. Every answer must be at
   * one revision: when each is cached and confirmed at the replica's current one, nothing is read;
   * otherwise all are resolved in one read snapshot (a customer is read at most once), at the
   * snapshot's revision.
   */
  private batchNowWire(req: CheckBatchRequest, missed: Staleness): Buffer {
    const started = performance.now();
    const { replica, metrics } = this.deps;
    const catalog = replica.catalog;
    const stale = missed ?? this.staleness(started, catalog);
    if (stale !== undefined) return Buffer.from(CheckBatchResponseCodec.encode(this.batchNow(req, stale)).finish());
    const at = this.deps.now();
    const checks = req.checks;
    const n = checks.length;
    const answers = new Array<CheckAnswer>(n);
    let revision = replica.revision;
    let all = true;
    for (let i = 0; i < n && all; i++) {
      const c = checks[i] as CheckRequest;
      const a = this.answers.confirmed(c.customerId, catalog, at, revision)?.checks.get(AnswerCache.key(c.feature, c.quantity));
      if (a) answers[i] = a;
      else all = false;
    }
    if (!all) {
      replica.snapshot(() => {
        revision = replica.readRevision();
        // A run of checks about one customer is one ask about it: one read, and a customer first
        // asked about in this batch is not kept on the strength of the batch alone.
        let customerId: string | undefined;
        let customer: CustomerAnswers | undefined;
        for (let i = 0; i < n; i++) {
          const c = checks[i] as CheckRequest;
          if (customer === undefined || c.customerId !== customerId) {
            customerId = c.customerId;
            customer = this.answers.customer(c.customerId, catalog, at, revision, () => replica.lookup(c.customerId));
          }
          answers[i] = this.answers.check(customer, AnswerCache.key(c.feature, c.quantity), (doc) => checkAnswer(evaluate(doc, catalog, c.feature, c.quantity, at)));
        }
      });
    }
    const bodies = new Array<Uint8Array>(n);
    for (let i = 0; i < n; i++) {
      const a = answers[i] as CheckAnswer;
      bodies[i] = a.body;
      this.served(a, revision, checks[i] as CheckRequest, at);
    }
    metrics.batchTook((performance.now() - started) / 1000);
    return batchResponse(bodies, revision);
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

  /** ListEntitlements from the answer cache (as Check), as ListEntitlementsResponse bytes. */
  private listNowWire(req: ListEntitlementsRequest, missed: Staleness): Buffer {
    const started = performance.now();
    const { replica, metrics } = this.deps;
    const catalog = replica.catalog;
    const stale = missed ?? this.staleness(started, catalog);
    if (stale !== undefined) return Buffer.from(ListEntitlementsResponseCodec.encode(this.listNow(req, stale)).finish());
    const at = this.deps.now();
    const customer = this.answers.customer(req.customerId, catalog, at, replica.revision, () => replica.lookup(req.customerId));
    const list = this.answers.list(customer, (doc) => listAnswer(evaluateAll(doc, catalog, at)));
    for (const status of list.statuses) metrics.decided(status);
    metrics.listTook((performance.now() - started) / 1000);
    return withRevision(list.body, customer.revision, false, LIST_TAIL);
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

/** A fresh answer as kept: CheckResponse without revision and stale. */
function checkAnswer(d: Decision): CheckAnswer {
  return { status: d.status, body: CheckResponseCodec.encode(toCheckResponse(d, 0, false)).finish() };
}

function listAnswer(all: readonly { feature: string; decision: Decision }[]): ListAnswer {
  const entitlements = all.map(({ feature, decision }) => toEntitlement(feature, decision));
  return { statuses: entitlements.map((e) => e.status), body: ListEntitlementsResponseCodec.encode({ entitlements, revision: 0, stale: false }).finish() };
}
