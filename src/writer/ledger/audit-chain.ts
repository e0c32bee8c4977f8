import { createHash, createHmac } from "node:crypto";
import type Database from "better-sqlite3";

/**
 * The audit log's hash chain. Each entry's hash commits to the previous entry's hash and to the
 * entry's fields, so editing, inserting or deleting a row breaks every hash after it. Personal
 * fields (customer_id, subscription_id) are not hashed themselves: the chain commits to an HMAC
 * of them under a per-customer key (`audit_keys`). Erasure blanks the fields and deletes the key,
 * so the chain still verifies, and what is left cannot be tested against a guessed customer id.
 */
export const GENESIS_HASH = "0".repeat(64);

/** The columns an entry's hash covers (everything but the personal fields and the hash itself). */
export interface ChainedFields {
  readonly seq: number;
  readonly at_ms: number;
  readonly kind: number;
  readonly customer_token: string;
  readonly feature: string;
  readonly from_status: number;
  readonly to_status: number;
  readonly event_id: string;
  readonly correlation_id: string;
  readonly actor: string;
  readonly on_behalf_of: string;
  readonly reason: string;
  readonly detail: string;
  readonly personal_digest: string;
}

export interface AuditChainRow extends ChainedFields {
  readonly customer_id: string;
  readonly subscription_id: string;
  readonly hash: string;
}

/** HMAC-SHA256 of the personal fields under the customer's key; "" when there are none. */
export function personalDigest(key: Uint8Array | undefined, customerId: string, subscriptionId: string): string {
  if (!customerId && !subscriptionId) return "";
  if (!key) throw new Error("personal fields need the customer's audit key");
  return createHmac("sha256", key).update(JSON.stringify([customerId, subscriptionId])).digest("hex");
}

export function entryHash(prev: string, f: ChainedFields): string {
  const fields = [
    f.seq, f.at_ms, f.kind, f.customer_token, f.feature, f.from_status, f.to_status, f.event_id,
    f.correlation_id, f.actor, f.on_behalf_of, f.reason, f.detail, f.personal_digest,
  ];
  return createHash("sha256").update(prev).update("\n").update(JSON.stringify(fields)).digest("hex");
}

export type AuditVerification = { ok: true; entries: number; head: { seq: number; hash: string } | undefined } | { ok: false; firstBadId: number; reason: string };

const PAGE = 1_000;

/**
 * Walks the whole audit log in order and checks every link: sequence without gaps, each hash
 * recomputed from the previous one, and each digest against its (not yet erased) personal fields.
 * Reports the first entry that does not verify. Takes the ledger's database handle, so it runs on
 * a ledger file opened read-only (`proofgate audit verify`) as well as inside the writer.
 */
export function verifyAuditChain(db: Database.Database): AuditVerification {
  const page = db.prepare<[number, number], AuditChainRow>("SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?");
  const key = db.prepare<[string], { key: Buffer }>("SELECT key FROM audit_keys WHERE customer_token = ?");
  let prev = GENESIS_HASH;
  let expected = 1;
  let entries = 0;
  let last: AuditChainRow | undefined;
  for (;;) {
    const rows = page.all(last?.seq ?? 0, PAGE);
    if (rows.length === 0) break;
    for (const r of rows) {
      const bad = (reason: string): AuditVerification => ({ ok: false, firstBadId: r.seq, reason: `audit entry ${r.seq}: ${reason}` });
      if (r.seq !== expected) return { ok: false, firstBadId: r.seq, reason: `audit entry ${r.seq}: expected entry ${expected} here (entries missing)` };
      if (r.customer_id || r.subscription_id) {
        const k = r.customer_token ? key.get(r.customer_token)?.key : undefined;
        if (!k) return bad("personal fields present but the customer's audit key is gone");
        if (personalDigest(k, r.customer_id, r.subscription_id) !== r.personal_digest) return bad("customer_id or subscription_id do not match the digest the chain committed to");
      }
      if (entryHash(prev, r) !== r.hash) return bad("hash does not match its fields and the previous entry (edited, or an entry before it was changed)");
      prev = r.hash;
      expected++;
      entries++;
      last = r;
    }
  }
  return { ok: true, entries, head: last ? { seq: last.seq, hash: last.hash } : undefined };
}
