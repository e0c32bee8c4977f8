import { CheckResponse } from "../../gen/proofgate/v1/check.js";
import type { CatalogIndex } from "../../catalog/index.js";
import { toCheckResponse, type Decision } from "../../policy/index.js";

/** Entries kept; the oldest goes first when full. Up to about 1 KB each (the document bytes are held to compare): ~10 MB. */
export const MAX_ANSWERS = 10_000;

/**
 * One answer, encoded: CheckResponse fields 1–6 (everything but revision and stale, which come
 * last on the wire and are appended per call). It holds while the catalog is the same object,
 * the customer's document is the same bytes, and the clock is in [fromMs, untilMs)
 * (`answersHoldUntil`).
 */
export interface Answer {
  readonly catalog: CatalogIndex;
  /** The replica revision it was last confirmed at: while the replica is still there, nothing changed. */
  revision: number;
  /** The document it was computed from (null: no document). */
  readonly document: Buffer | null;
  readonly fromMs: number;
  readonly untilMs: number;
  readonly decision: Decision;
  readonly body: Uint8Array;
}

/**
 * Check answers by customer, feature and quantity. A decision is piecewise constant in time, so
 * most checks become a lookup and a buffer copy, and stay exact: an entry is reused only for the
 * same document bytes, the same catalog, and an instant before the next one at which any answer
 * of that document can change.
 */
export class AnswerCache {
  private readonly entries = new Map<string, Answer>();

  constructor(private readonly max = MAX_ANSWERS) {}

  static key(customerId: string, feature: string, quantity: number | undefined): string {
    return quantity === undefined ? `${customerId}\u0000${feature}` : `${customerId}\u0000${feature}\u0000${quantity}`;
  }

  /** The entry for `key` if it holds for this catalog at `atMs` (the document is the caller's to compare). */
  get(key: string, catalog: CatalogIndex, atMs: number): Answer | undefined {
    const a = this.entries.get(key);
    if (!a) return undefined;
    if (a.catalog !== catalog || atMs < a.fromMs || atMs >= a.untilMs) {
      this.entries.delete(key);
      return undefined;
    }
    return a;
  }

  put(key: string, answer: Omit<Answer, "body">): Answer {
    if (this.entries.size >= this.max) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    const a: Answer = { ...answer, body: CheckResponse.encode(toCheckResponse(answer.decision, 0, false)).finish() };
    this.entries.set(key, a);
    return a;
  }

  get size(): number {
    return this.entries.size;
  }
}

/** `body` followed by revision (field 7) and stale (field 8): what CheckResponse.encode writes for the whole answer. */
export function withRevision(body: Uint8Array, revision: number, stale: boolean): Buffer {
  let len = 0;
  if (revision > 0) {
    len = 2;
    for (let v = revision; v >= 0x80; v = Math.floor(v / 0x80)) len++;
  }
  const out = Buffer.allocUnsafe(body.length + len + (stale ? 2 : 0));
  out.set(body, 0);
  let p = body.length;
  if (revision > 0) {
    out[p++] = 0x38;
    let v = revision;
    while (v >= 0x80) {
      out[p++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    out[p++] = v;
  }
  if (stale) {
    out[p++] = 0x40;
    out[p++] = 1;
  }
  return out;
}

/** Same document bytes (both absent counts as the same). */
export function sameDocument(a: Buffer | null, b: Buffer | null): boolean {
  if (a === null || b === null) return a === b;
  return a.length === b.length && a.equals(b);
}

