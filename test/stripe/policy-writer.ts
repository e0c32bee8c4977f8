import { readFileSync } from "node:fs";
import { validateEvent } from "../../src/billing/index.js";
import { CatalogIndex, parseCatalogText } from "../../src/catalog/index.js";
import { InvalidArgumentError } from "../../src/errors/index.js";
import type { BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { IngestResult, type PublishResponse } from "../../src/gen/proofgate/v1/ingest.js";
import { evaluate, foldDocument, statusName, type Decision } from "../../src/policy/index.js";

/**
 * The writer's contract over the real policy core, without the ledger: validate against the demo
 * catalog, dedupe by event id, fold and evaluate. For webhook tests that need decisions fast; the
 * lifecycle test runs the real writer and sidecar.
 */
export class PolicyWriter {
  readonly catalog = CatalogIndex.from(parseCatalogText(readFileSync(new URL("../../examples/catalog.yaml", import.meta.url), "utf8")));
  readonly facts = new Map<string, BillingEvent>();
  revision = 0;
  calls = 0;
  /** When set, `apply` throws it (a writer that cannot commit). */
  failWith: Error | undefined;

  readonly apply = (events: BillingEvent[]): Promise<PublishResponse> => {
    this.calls++;
    if (this.failWith) return Promise.reject(this.failWith);
    const results = events.map((e) => {
      if (this.facts.has(e.eventId)) return { eventId: e.eventId, result: IngestResult.INGEST_RESULT_DUPLICATE, reason: "" };
      try {
        validateEvent(e, this.catalog);
      } catch (err) {
        if (err instanceof InvalidArgumentError) return { eventId: e.eventId, result: IngestResult.INGEST_RESULT_REJECTED, reason: err.message };
        throw err;
      }
      this.facts.set(e.eventId, e);
      this.revision++;
      return { eventId: e.eventId, result: IngestResult.INGEST_RESULT_ACCEPTED, reason: "" };
    });
    return Promise.resolve({ results, revision: this.revision });
  };

  eventsOf(customerId: string): BillingEvent[] {
    return [...this.facts.values()].filter((e) => e.customerId === customerId);
  }

  decide(customerId: string, feature: string, atMs: number): Decision & { statusName: string } {
    const facts = this.eventsOf(customerId);
    const doc = facts.length ? foldDocument(customerId, facts, []) : undefined;
    const d = evaluate(doc, this.catalog, feature, undefined, atMs);
    return { ...d, statusName: statusName(d.status) };
  }
}
