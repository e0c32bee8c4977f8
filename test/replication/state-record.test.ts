import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AccessDocument, StateRecord } from "../../src/gen/proofgate/v1/document.js";
import {
  decodeStateRecord,
  documentIsFor,
  encodeCatalogRecord,
  encodeDocumentRecord,
  encodeErasedRecord,
  readCustomerId,
} from "../../src/replication/state-record.js";
import { CATALOG_SUBJECT, customerSubject, customerToken } from "../../src/replication/subjects.js";
import { paidCustomer, testCatalog } from "../harness/sidecar.js";

/** The state stream's contract, both directions: what the writer encodes is what sidecars read. */
describe("state records", () => {
  it("round-trip: documents, tombstones and catalogs decode to what was encoded, byte for byte as the generated encoder writes them", () => {
    const customerId = fc.string({ minLength: 1, maxLength: 300, unit: "binary" }).filter((s) => Buffer.byteLength(s) <= 1024);
    fc.assert(
      fc.property(customerId, fc.constantFrom("basic", "premium", "unknown-plan"), fc.integer({ min: 0, max: 4_000_000_000_000 }), (id, plan, at) => {
        const doc = paidCustomer(id, plan, at);
        const documentBytes = AccessDocument.encode(doc).finish();
        const bytes = encodeDocumentRecord(documentBytes);
        // The hand-built framing is the generated encoder's.
        expect(Buffer.from(bytes)).toEqual(Buffer.from(StateRecord.encode({ record: { $case: "document", value: doc } }).finish()));
        const r = decodeStateRecord(customerSubject(id), bytes);
        if (r.kind !== "document") throw new Error(`got ${r.kind}: ${r.kind === "invalid" ? r.problem : ""}`);
        expect(r.customerId).toBe(id);
        expect(r.token).toBe(customerToken(id));
        expect(Buffer.from(r.document)).toEqual(Buffer.from(documentBytes));
        expect(AccessDocument.decode(r.document)).toEqual(doc);
        expect(readCustomerId(documentBytes)).toBe(id);
        expect(documentIsFor(r.document, id)).toBe(true);
        expect(documentIsFor(r.document, `${id}x`)).toBe(false);

        expect(decodeStateRecord(customerSubject(id), encodeErasedRecord(new Date(at)))).toEqual({ kind: "erased", token: customerToken(id) });
      }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 86_400_000 }), fc.constantFrom("serve" as const, "deny" as const), (coherencyWindowMs, stalePolicy) => {
        const catalog = testCatalog({ coherencyWindowMs, stalePolicy });
        const bytes = encodeCatalogRecord(catalog);
        const c = decodeStateRecord(CATALOG_SUBJECT, bytes);
        if (c.kind !== "catalog") throw new Error(`got ${c.kind}`);
        expect(c.catalog).toEqual(catalog);
        expect(Buffer.from(encodeCatalogRecord(c.catalog))).toEqual(Buffer.from(bytes));
      }),
    );
  });

  it("never throws: arbitrary bytes on any subject decode to a record or to invalid with a reason", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), fc.constantFrom(CATALOG_SUBJECT, customerSubject("x"), "proofgate.state.other"), (data, subject) => {
        const r = decodeStateRecord(subject, data);
        if (r.kind === "invalid") expect(r.problem.length).toBeGreaterThan(0);
      }),
    );
  });

  it("reports what is not a record of its subject as invalid", () => {
    const erased = (): Uint8Array => encodeErasedRecord(new Date(0));
    expect(decodeStateRecord(customerSubject("x"), new Uint8Array([0x0a, 0xff, 0xff])).kind).toBe("invalid");
    expect(decodeStateRecord(customerSubject("x"), StateRecord.encode({ record: undefined }).finish()).kind).toBe("invalid");
    expect(decodeStateRecord(CATALOG_SUBJECT, erased()).kind).toBe("invalid");
    expect(decodeStateRecord("proofgate.state.other", erased()).kind).toBe("invalid");
    const noId = encodeDocumentRecord(AccessDocument.encode({ ...paidCustomer("y", "basic", 0), customerId: "" }).finish());
    expect(decodeStateRecord(customerSubject("y"), noId)).toEqual({ kind: "invalid", problem: "document without customer_id" });
  });
});
