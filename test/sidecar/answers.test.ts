import { afterAll, beforeAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { join } from "node:path";
import { CatalogIndex } from "../../src/catalog/index.js";
import { AccessStatus, CheckResponse, type CheckRequest } from "../../src/gen/proofgate/v1/check.js";
import { AccessDocument } from "../../src/gen/proofgate/v1/document.js";
import { createRegistry } from "../../src/observability/metrics.js";
import { silentLogger } from "../../src/observability/logger.js";
import { foldDocument } from "../../src/policy/index.js";
import { CATALOG_SUBJECT, customerSubject } from "../../src/replication/subjects.js";
import { CheckHandler } from "../../src/sidecar/check/service.js";
import { RevisionWaiters } from "../../src/sidecar/check/revision-waiters.js";
import { withRevision } from "../../src/sidecar/check/answers.js";
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

beforeAll(async () => {
  dir = tempDir();
  replica = Replica.open(join(dir.path, "replica.db"), silentLogger());
  await replica.apply([{ seq, record: decodeStateRecord(CATALOG_SUBJECT, encodeCatalogRecord(demoCatalog())) }], seq);
  handler = new CheckHandler({
    replica,
    freshness,
    waiters: new RevisionWaiters(() => replica.revision),
    metrics: new SidecarMetrics(createRegistry(), {
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

function expectSameAnswers(customerId: string): void {
  freshness.confirmedAt(performance.now());
  for (const feature of features)
    for (const quantity of quantities) {
      const req: CheckRequest = { customerId, feature, quantity, minRevision: undefined };
      const cached = handler.checkWire(req) as Buffer;
      const evaluated = CheckResponse.encode(handler.check(req) as CheckResponse).finish();
      expect(hex(cached)).toBe(hex(evaluated));
    }
}

let customers = 0;

describe("the Check answer cache", () => {
  it("answers byte for byte what evaluation answers, at instants around every boundary, across document changes", async () => {
    await fc.assert(
      fc.asyncProperty(events, overrides, events, time, async (es, os, es2, start) => {
        const customerId = `cus_${++customers}`;
        const doc = foldDocument(customerId, es, os);
        await put(customerId, doc);
        const times = instants(doc, start);
        for (const [k, t] of times.entries()) {
          clock = t;
          expectSameAnswers(customerId);
          // Another customer's change moves the revision, not this customer's answers.
          if (k === 1) await put(`other_${customers}`, foldDocument("x", es2, []));
        }
        // The customer's document changes: no answer of the old one survives.
        const changed = foldDocument(customerId, [...es, ...es2.map((e) => ({ ...e, eventId: `b_${e.eventId}` }))], os.slice(1));
        await put(customerId, changed);
        for (const t of instants(changed, start).slice(0, 12)) {
          clock = t;
          expectSameAnswers(customerId);
        }
        // The clock going back is answered too.
        clock = start - 1;
        expectSameAnswers(customerId);
      }),
      { numRuns: 60 },
    );
  });

  it("answers for unknown customers as evaluation does", () => {
    clock = Date.UTC(2026, 0, 1);
    expectSameAnswers("nobody");
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
