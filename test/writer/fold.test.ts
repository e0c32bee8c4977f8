import { afterAll, beforeAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { join } from "node:path";
import type { BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { AccessDocument, type Override } from "../../src/gen/proofgate/v1/document.js";
import { silentLogger } from "../../src/observability/logger.js";
import { foldDocument } from "../../src/policy/index.js";
import { WriterCore } from "../../src/writer/core.js";
import { Ledger } from "../../src/writer/ledger/ledger.js";
import { events, longEvents, overrides } from "../policy/arbitraries.js";
import { tempDir } from "../harness/tmp.js";

const NOW = Date.UTC(2026, 10, 15, 12);
const hex = (b: Uint8Array | undefined): string => Buffer.from(b ?? []).toString("hex");

let dir: ReturnType<typeof tempDir>;
let ledger: Ledger;
let core: WriterCore;
let customers = 0;

beforeAll(() => {
  dir = tempDir();
  ledger = Ledger.open(join(dir.path, "ledger.db"));
  core = new WriterCore(ledger, () => NOW, silentLogger());
});

afterAll(() => {
  ledger.close();
  dir.dispose();
});

/** The run's facts for a customer of its own (event ids are unique ledger-wide). */
function own(es: readonly BillingEvent[], customerId: string): BillingEvent[] {
  return es.map((e) => ({ ...e, customerId, eventId: `${customerId}/${e.eventId}` }));
}

function apply(e: BillingEvent): void {
  ledger.transaction(() => {
    if (core.addFact(e, "test", NOW)) core.refreshDocument(e.customerId, { eventId: e.eventId });
  });
}

/** What the full fold of everything the ledger holds for the customer gives. */
const fullFold = (customerId: string): string => hex(AccessDocument.encode(foldDocument(customerId, ledger.facts(customerId), ledger.overrides(customerId))).finish());

describe("the writer's incremental fold", () => {
  it("stores, after every event, the document the full fold of all the customer's facts gives, for any order and redelivery", () => {
    fc.assert(
      fc.property(
        fc.oneof(events, longEvents).chain((es) => fc.tuple(fc.constant(es), fc.shuffledSubarray([...es, ...es], { minLength: es.length, maxLength: es.length * 2 }))),
        overrides,
        ([es, arrivals], os: Override[]) => {
          const customerId = `cus_${++customers}`;
          for (const o of os) ledger.putOverride(customerId, o);
          for (const e of own(arrivals, customerId)) {
            apply(e);
            expect(hex(ledger.document(customerId))).toBe(fullFold(customerId));
          }
          for (const e of own(es, customerId)) apply(e);
          expect(ledger.factCount(customerId)).toBe(es.length);
          if (es.length > 0) expect(hex(ledger.document(customerId))).toBe(hex(AccessDocument.encode(foldDocument(customerId, own(es, customerId), os)).finish()));
        },
      ),
      { numRuns: 150 },
    );
  });

  it("folds a customer from its facts when the ledger has none of its parts yet (a ledger from before they were stored)", () => {
    fc.assert(
      fc.property(longEvents.filter((es) => es.length > 1), (es) => {
        const customerId = `cus_${++customers}`;
        const [first, ...rest] = own(es, customerId);
        for (const e of rest) apply(e);
        ledger.deleteFold(customerId);
        expect(ledger.foldedCustomer(customerId)).toBeUndefined();
        apply(first as BillingEvent);
        expect(ledger.foldedCustomer(customerId)?.factCount).toBe(es.length);
        expect(hex(ledger.document(customerId))).toBe(fullFold(customerId));
      }),
      { numRuns: 50 },
    );
  });

  it("forgets the folded parts with the facts (erasure)", () => {
    const customerId = `cus_${++customers}`;
    fc.assert(
      fc.property(events.filter((es) => es.length > 0), (es) => {
        for (const e of own(es, customerId)) apply(e);
        expect(ledger.foldedCustomer(customerId)).toBeDefined();
        ledger.deleteFacts(customerId);
        expect(ledger.foldedCustomer(customerId)).toBeUndefined();
        expect(ledger.foldedSubscriptions(customerId)).toEqual([]);
      }),
      { numRuns: 1 },
    );
  });
});
