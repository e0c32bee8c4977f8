import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import fc from "fast-check";
import { join } from "node:path";
import { CatalogIndex } from "../../src/catalog/index.js";
import type { Registry } from "prom-client";
import {
  AccessStatus,
  CheckBatchResponse,
  CheckResponse,
  ListEntitlementsResponse,
  type CheckBatchRequest,
  type CheckRequest,
  type ListEntitlementsRequest,
} from "../../src/gen/proofgate/v1/check.js";
import { AccessDocument } from "../../src/gen/proofgate/v1/document.js";
import { createRegistry } from "../../src/observability/metrics.js";
import { silentLogger } from "../../src/observability/logger.js";
import { foldDocument } from "../../src/policy/index.js";
import { CATALOG_SUBJECT, customerSubject } from "../../src/replication/subjects.js";
import { CheckHandler } from "../../src/sidecar/check/service.js";
import { RevisionWaiters } from "../../src/sidecar/check/revision-waiters.js";
import { AnswerCache, LIST_TAIL, batchResponse, withRevision } from "../../src/sidecar/check/answers.js";
import { Freshness } from "../../src/sidecar/follow/freshness.js";
import { SidecarMetrics } from "../../src/sidecar/metrics.js";
import { decodeStateRecord, encodeCatalogRecord, encodeDocumentRecord } from "../../src/replication/state-record.js";
import { Replica } from "../../src/sidecar/replica/replica.js";
import { events, overrides, time } from "../policy/arbitraries.js";
import { demoCatalog } from "../policy/story.js";
import { tempDir } from "../harness/tmp.js";

const catalog = CatalogIndex.from(demoCatalog());
const features = [...catalog.featureKeys, "unknown-feature"];
const quantities = [undefined, 1, 50];

let dir: ReturnType<typeof tempDir>;
let replica: Replica;
let handler: CheckHandler;
let clock = 0;
let seq = 1;
const freshness = new Freshness();

/** A handler on the test's replica, clock and freshness, with its own metrics registry. */
function newHandler(registry: Registry = createRegistry()): CheckHandler {
  return new CheckHandler({
    replica,
    freshness,
    waiters: new RevisionWaiters(() => replica.revision),
    metrics: new SidecarMetrics(registry, {
      revision: () => replica.revision,
      head: () => 0,
      ageSeconds: () => 0,
      heartbeatAgeSeconds: () => 0,
      stale: () => false,
      ready: () => true,
      connected: () => true,
    }),
    logger: silentLogger(),
    now: () => clock,
    minRevisionWaitMs: 1000,
    decisionLog: undefined,
  });
}

beforeAll(async () => {
  dir = tempDir();
  replica = Replica.open(join(dir.path, "replica.db"), silentLogger());
  await replica.apply([{ seq, record: decodeStateRecord(CATALOG_SUBJECT, encodeCatalogRecord(demoCatalog())) }], seq);
  handler = newHandler();
});

afterAll(async () => {
  await replica.close();
  dir.dispose();
});

async function put(customerId: string, doc: AccessDocument): Promise<void> {
  seq++;
  const bytes = encodeDocumentRecord(AccessDocument.encode(doc).finish());
  await replica.apply([{ seq, record: decodeStateRecord(customerSubject(customerId), bytes) }], seq);
}

/** The instants at which some answer could change, with their neighbours, in order. */
function instants(doc: AccessDocument, from: number): number[] {
  const out = new Set<number>([from]);
  const add = (t: number): void => {
    if (t) for (const x of [t - 1, t, t + 1]) if (x >= from) out.add(x);
  };
  for (const o of doc.overrides) [o.validFromMs, o.validUntilMs].forEach(add);
  for (const s of doc.subscriptions) {
    if (s.intent) [s.intent.cancelAtMs, s.intent.trialEndMs].forEach(add);
    for (const i of s.invoices) [i.periodStartMs, i.periodEndMs, i.periodEndMs + catalog.gracePeriodMs].forEach(add);
  }
  return [...out].sort((a, b) => a - b);
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

/** Every feature and quantity asked about `customerId`. */
function checksOf(customerId: string): CheckRequest[] {
  return features.flatMap((feature) => quantities.map((quantity) => ({ customerId, feature, quantity, minRevision: undefined })));
}

/** A batch of `customerId`'s checks with another customer's (`other`) between them, in a shuffled order. */
function batchOf(customerId: string, other: string, order: number): CheckBatchRequest {
  const checks = [...checksOf(customerId), ...checksOf(other).slice(0, 5)];
  return { checks: checks.map((_, i) => checks[(i * 7 + order) % checks.length] as CheckRequest), minRevision: undefined };
}

/** Check, CheckBatch and ListEntitlements as served (cached bytes) and as evaluated, byte for byte; each served twice (a miss, then a hit). */
function expectSameServed(h: CheckHandler, customerId: string, other = "nobody", order = 0): void {
  // The batch first: it meets the answers cached before (another instant, another revision, another document).
  const batch = batchOf(customerId, other, order);
  const evaluatedBatch = hex(CheckBatchResponse.encode(h.checkBatch(batch) as CheckBatchResponse).finish());
  expect(hex(h.checkBatchWire(batch) as Buffer)).toBe(evaluatedBatch);
  expect(hex(h.checkBatchWire(batch) as Buffer)).toBe(evaluatedBatch);
  for (const req of checksOf(customerId)) {
    const evaluated = hex(CheckResponse.encode(h.check(req) as CheckResponse).finish());
    expect(hex(h.checkWire(req) as Buffer)).toBe(evaluated);
    expect(hex(h.checkWire(req) as Buffer)).toBe(evaluated);
  }
  const list: ListEntitlementsRequest = { customerId, minRevision: undefined };
  const evaluatedList = hex(ListEntitlementsResponse.encode(h.listEntitlements(list) as ListEntitlementsResponse).finish());
  expect(hex(h.listEntitlementsWire(list) as Buffer)).toBe(evaluatedList);
  expect(hex(h.listEntitlementsWire(list) as Buffer)).toBe(evaluatedList);
}

/** A writer heartbeat at the replica's revision, just now: answers are fresh (not stale). */
function current(): void {
  freshness.heartbeat(replica.revision, performance.now(), replica.revision);
}

function expectSameAnswers(customerId: string, other?: string, order?: number): void {
  current();
  expectSameServed(handler, customerId, other, order);
  // The fresh path (the cache) is what was compared.
  expect(CheckResponse.decode(handler.checkWire(checksOf(customerId)[0] as CheckRequest) as Buffer).stale).toBe(false);
}

let customers = 0;

describe("the answer cache (Check, CheckBatch, ListEntitlements)", () => {
  it("answers byte for byte what evaluation answers, at instants around every boundary, across document changes", async () => {
    await fc.assert(
      fc.asyncProperty(events, overrides, events, time, async (es, os, es2, start) => {
        const customerId = `cus_${++customers}`;
        const doc = foldDocument(customerId, es, os);
        await put(customerId, doc);
        const times = instants(doc, start);
        for (const [k, t] of times.entries()) {
          clock = t;
          // The batch mixes in the previous property run's customer (whose answers are cached from then).
          expectSameAnswers(customerId, `cus_${customers - 1}`, k);
          // Another customer's change moves the revision, not this customer's answers.
          if (k === 1) await put(`other_${customers}`, foldDocument("x", es2, []));
        }
        // The customer's document changes: no answer of the old one survives.
        const changed = foldDocument(customerId, [...es, ...es2.map((e) => ({ ...e, eventId: `b_${e.eventId}` }))], os.slice(1));
        await put(customerId, changed);
        // At the instant the old answers were cached (they still hold in time), then on.
        expectSameAnswers(customerId, `cus_${customers - 1}`);
        for (const t of instants(changed, start).slice(0, 12)) {
          clock = t;
          expectSameAnswers(customerId);
        }
        // The clock going back is answered too.
        clock = start - 1;
        expectSameAnswers(customerId);
      }),
      // A failure is reported as found, with its seed: shrinking re-runs the replica writes hundreds
      // of times and would hit the test's timeout before it says what failed.
      { numRuns: 60, endOnFailure: true },
    );
  });

  it("answers anew, at the same instant, once a customer's document arrives", async () => {
    clock = Date.UTC(2026, 0, 1);
    const customerId = "cus_late";
    expectSameAnswers(customerId);
    const before = CheckResponse.decode(handler.checkWire({ customerId, feature: "api-access", quantity: undefined, minRevision: undefined }) as Buffer);
    expect(before.status).toBe(AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER);
    await put(customerId, foldDocument(customerId, [], []));
    expectSameAnswers(customerId);
    const after = CheckResponse.decode(handler.checkWire({ customerId, feature: "api-access", quantity: undefined, minRevision: undefined }) as Buffer);
    expect(after.status).toBe(AccessStatus.ACCESS_STATUS_NOT_ENTITLED);
  });

  it("answers for unknown customers as evaluation does", () => {
    clock = Date.UTC(2026, 0, 1);
    expectSameAnswers("nobody");
  });

  it("answers stale batches and lists as evaluation does, and caches nothing stale", async () => {
    const customerId = "cus_stale";
    const doc = foldDocument(customerId, [], []);
    await put(customerId, doc);
    clock = Date.UTC(2026, 0, 1);
    freshness.servePrevious(true);
    try {
      expectSameServed(handler, customerId, `cus_${customers}`);
    } finally {
      freshness.servePrevious(false);
    }
    // Fresh again: fresh answers, not the stale ones served a moment ago.
    expectSameAnswers(customerId, `cus_${customers}`);
  });

  it("records the same metrics as evaluation: decisions by status and stale answers", async () => {
    const served = createRegistry();
    const evaluated = createRegistry();
    const a = newHandler(served);
    const b = newHandler(evaluated);
    clock = Date.UTC(2026, 0, 1);
    for (const stale of [false, true]) {
      if (stale) freshness.servePrevious(true);
      else current();
      try {
        for (const id of [`cus_${customers}`, "nobody"]) {
          for (let k = 0; k < 2; k++) {
            for (const req of checksOf(id)) {
              await a.checkWire(req);
              await b.check(req);
            }
            await a.checkBatchWire(batchOf(id, "nobody", k));
            await b.checkBatch(batchOf(id, "nobody", k));
            await a.listEntitlementsWire({ customerId: id, minRevision: undefined });
            await b.listEntitlements({ customerId: id, minRevision: undefined });
          }
        }
      } finally {
        freshness.servePrevious(false);
      }
    }
    const values = async (r: Registry, name: string): Promise<[unknown, number][]> => ((await r.getSingleMetric(name)?.get())?.values ?? []).map((v) => [v.labels, v.value]);
    for (const name of ["proofgate_sidecar_decisions_total", "proofgate_sidecar_stale_answers_total"]) {
      const expected = await values(evaluated, name);
      expect(expected.some(([, v]) => v > 0)).toBe(true);
      expect(await values(served, name)).toEqual(expected);
    }
  });

  it("stays within its bounds and answers each key with its own answer", () => {
    const op = fc.record({ customer: fc.integer({ min: 0, max: 6 }), key: fc.integer({ min: 0, max: 9 }), list: fc.boolean() });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const cache = new AnswerCache({ customers: 3, answers: 8 });
        const body = (...parts: (string | number)[]): Uint8Array => Buffer.from(parts.join("/"));
        for (const o of ops) {
          const id = `c${o.customer}`;
          // Asked about twice: the second ask keeps the customer's answers.
          cache.customer(id, catalog, 0, 1, () => [1, null]);
          const c = cache.customer(id, catalog, 0, 1, () => [1, null]);
          if (o.list) {
            expect(hex(cache.list(c, () => ({ statuses: [AccessStatus.ACCESS_STATUS_GRANTED, AccessStatus.ACCESS_STATUS_BLOCKED], body: body(id, "list") })).body)).toBe(hex(body(id, "list")));
          } else {
            const key = AnswerCache.key("f", o.key);
            expect(hex(cache.check(c, key, () => ({ status: AccessStatus.ACCESS_STATUS_GRANTED, body: body(id, key) })).body)).toBe(hex(body(id, key)));
          }
          expect(cache.size.customers).toBeLessThanOrEqual(3);
          expect(cache.size.answers).toBeLessThanOrEqual(8);
          expect(cache.size.answers).toBeGreaterThan(0);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("keeps the customers asked about most recently", () => {
    const cache = new AnswerCache({ customers: 2, answers: 100 });
    const ask = (id: string): void => void cache.customer(id, catalog, 0, 1, () => [1, null]);
    // Each asked about twice (the second ask keeps a customer), then "a" again.
    for (const id of ["a", "a", "b", "b", "a", "c", "c"]) ask(id);
    expect(cache.confirmed("a", catalog, 0, 1)).toBeDefined();
    expect(cache.confirmed("b", catalog, 0, 1)).toBeUndefined();
    expect(cache.confirmed("c", catalog, 0, 1)).toBeDefined();
  });

  it("reads a batch's customer once, and keeps its answers from the second batch about it", async () => {
    const customerId = "cus_batch_once";
    await put(customerId, foldDocument(customerId, [], []));
    clock = Date.UTC(2026, 0, 1);
    current();
    const h = newHandler();
    const reads = vi.spyOn(replica, "lookup");
    try {
      const batch: CheckBatchRequest = { checks: checksOf(customerId), minRevision: undefined };
      const evaluated = hex(CheckBatchResponse.encode(h.checkBatch(batch) as CheckBatchResponse).finish());
      for (const expected of [1, 2, 2]) {
        expect(hex(h.checkBatchWire(batch) as Buffer)).toBe(evaluated);
        expect(reads).toHaveBeenCalledTimes(expected);
      }
    } finally {
      reads.mockRestore();
    }
  });

  it("keeps nothing for a customer asked about once, and keeps it from the second ask", () => {
    const cache = new AnswerCache({ customers: 4, answers: 100 });
    let reads = 0;
    const ask = (id: string): void => {
      const c = cache.customer(id, catalog, 0, 1, () => (reads++, [1, null]));
      cache.check(c, "f", () => ({ status: AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER, body: Buffer.from(id) }));
    };
    ask("once");
    expect(cache.confirmed("once", catalog, 0, 1)).toBeUndefined();
    expect(cache.size).toEqual({ customers: 0, answers: 0 });
    ask("once");
    expect(cache.confirmed("once", catalog, 0, 1)?.checks.get("f")).toEqual({ status: AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER, body: Buffer.from("once") });
    ask("once");
    expect(reads).toBe(2);
    // Kept customers stay kept when their answers start over (here: another catalog).
    const other = CatalogIndex.from(demoCatalog());
    cache.customer("once", other, 0, 1, () => (reads++, [1, null]));
    expect(cache.confirmed("once", other, 0, 1)).toBeDefined();
    expect(reads).toBe(3);
    // Four first asks (the bound) forget that "a" was asked about before them: "a" is asked about once again.
    ask("a");
    for (const id of ["b", "c", "d", "e"]) ask(id);
    ask("a");
    expect(cache.confirmed("a", catalog, 0, 1)).toBeUndefined();
    expect(cache.size).toEqual({ customers: 1, answers: 0 });
  });

  it("frames a batch of cached bodies exactly as CheckBatchResponse.encode writes it", () => {
    const answer = fc.record({ allowed: fc.boolean(), status: fc.constantFrom(AccessStatus.ACCESS_STATUS_UNSPECIFIED, AccessStatus.ACCESS_STATUS_GRANTED, AccessStatus.ACCESS_STATUS_LIMIT_EXCEEDED, AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER), reason: fc.string({ maxLength: 300 }), value: fc.string({ maxLength: 20 }) });
    fc.assert(
      fc.property(fc.array(answer, { maxLength: 30 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (answers, revision) => {
        const whole = (r: number): CheckResponse[] => answers.map((x) => ({ ...x, limit: undefined, validUntil: undefined, revision: r, stale: false }));
        const bodies = whole(0).map((x) => CheckResponse.encode(x).finish());
        const expected = CheckBatchResponse.encode({ results: whole(revision), revision, stale: false }).finish();
        expect(hex(batchResponse(bodies, revision))).toBe(hex(expected));
      }),
      { numRuns: 300 },
    );
  });

  it("appends a list's revision and stale exactly as ListEntitlementsResponse.encode writes them", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fc.boolean(), fc.string(), (revision, stale, feature) => {
        const entitlements = [{ feature, allowed: true, status: AccessStatus.ACCESS_STATUS_GRANTED, reason: "r", value: "", limit: undefined, validUntil: undefined }];
        const body = ListEntitlementsResponse.encode({ entitlements, revision: 0, stale: false }).finish();
        const whole = ListEntitlementsResponse.encode({ entitlements, revision, stale }).finish();
        expect(hex(withRevision(body, revision, stale, LIST_TAIL))).toBe(hex(whole));
      }),
      { numRuns: 300 },
    );
  });

  it("appends revision and stale exactly as CheckResponse.encode writes them", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fc.boolean(), fc.string(), (revision, stale, reason) => {
        const body = CheckResponse.encode({ allowed: true, status: AccessStatus.ACCESS_STATUS_GRANTED, reason, value: "", limit: undefined, validUntil: undefined, revision: 0, stale: false }).finish();
        const whole = CheckResponse.encode({ allowed: true, status: AccessStatus.ACCESS_STATUS_GRANTED, reason, value: "", limit: undefined, validUntil: undefined, revision, stale }).finish();
        expect(hex(withRevision(body, revision, stale))).toBe(hex(whole));
      }),
      { numRuns: 500 },
    );
  });
});
