import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { AuditKind } from "../../src/gen/proofgate/v1/admin.js";
import { Ledger } from "../../src/writer/ledger/ledger.js";
import { tempDir } from "../harness/tmp.js";

/** The console's audit reads on a real SQLite ledger: keyset pages by seq and time bounds by bisection. */
describe("ledger audit pages", () => {
  const dir = tempDir("proofgate-audit-pages-");
  let ledger: Ledger;
  const T0 = Date.UTC(2026, 0, 1);

  beforeAll(() => {
    ledger = Ledger.open(join(dir.path, "ledger.db"));
    // 300 entries, 10 per minute of writer time; every third one is cus_a's.
    for (let i = 0; i < 300; i++)
      ledger.appendAudit({ kind: AuditKind.AUDIT_KIND_EVENT_APPLIED, customerToken: i % 3 === 0 ? "tok_a" : "tok_b", detail: `entry ${i + 1}` }, T0 + Math.floor(i / 10) * 60_000);
  });
  afterAll(() => {
    ledger.close();
    dir.dispose();
  });

  test("pages go newest first below a seq, for everyone or one customer", () => {
    expect(ledger.auditHighSeq()).toBe(300);
    expect(ledger.auditBefore(301, 5).map((e) => e.seq)).toEqual([300, 299, 298, 297, 296]);
    expect(ledger.auditBefore(296, 3).map((e) => e.seq)).toEqual([295, 294, 293]);
    expect(ledger.auditBefore(301, 3, "tok_a").map((e) => e.seq)).toEqual([298, 295, 292]);
    expect(ledger.auditBefore(1, 10)).toEqual([]);
  });

  test("a time bound becomes the first seq at or after it", () => {
    expect(ledger.auditSeqAfter(T0)).toBe(1);
    expect(ledger.auditSeqAfter(T0 - 1)).toBe(1);
    expect(ledger.auditSeqAfter(T0 + 1)).toBe(11);
    expect(ledger.auditSeqAfter(T0 + 60_000)).toBe(11);
    expect(ledger.auditSeqAfter(T0 + 29 * 60_000)).toBe(291);
    expect(ledger.auditSeqAfter(T0 + 29 * 60_000 + 1)).toBe(301);
    // Entries at [12:05, 12:07): seq 51..70.
    const from = ledger.auditSeqAfter(T0 + 5 * 60_000);
    const to = ledger.auditSeqAfter(T0 + 7 * 60_000);
    expect([from, to]).toEqual([51, 71]);
    expect(ledger.auditBefore(to, 1_000).filter((e) => e.seq >= from)).toHaveLength(20);
  });

  test("an empty trail has nothing to bisect", () => {
    const empty = Ledger.open(join(dir.path, "empty.db"));
    try {
      expect(empty.auditHighSeq()).toBe(0);
      expect(empty.auditSeqAfter(T0)).toBe(1);
    } finally {
      empty.close();
    }
  });
});
