import { AccessDocument } from "../../gen/proofgate/v1/document.js";
import type { CatalogIndex } from "../../catalog/index.js";
import { answersHoldUntil } from "../../policy/index.js";

/** Entries kept; the oldest goes first when full. Up to about 1 KB each (the document bytes are held to compare): ~10 MB. */
export const MAX_ANSWERS = 10_000;
/** ListEntitlements answers kept (every feature of the catalog, about 1–2 KB each with the document). */
export const MAX_LISTS = 1_000;

/** A customer's document as read from the replica, with the revision read with it; decoded at most once. */
export interface DocumentRead {
  readonly revision: number;
  /** Encoded AccessDocument; null: none. */
  readonly raw: Buffer | null;
  readonly doc: () => AccessDocument | undefined;
}

/** `read` as a DocumentRead that decodes when first asked to. */
export function documentRead([revision, raw]: [revision: number, document: Buffer | null]): DocumentRead {
  let decoded: AccessDocument | undefined;
  return {
    revision,
    raw,
    doc: () => {
      if (raw && !decoded) decoded = AccessDocument.decode(raw);
      return decoded;
    },
  };
}

/**
 * One answer, encoded without its revision and stale fields (which come last on the wire and are
 * appended per call), with `value`, what it was encoded from. It holds while the catalog is the
 * same object, the customer's document is the same bytes, and the clock is in [fromMs, untilMs)
 * (`answersHoldUntil`).
 */
export interface Answer<V> {
  readonly catalog: CatalogIndex;
  /** The replica revision it was last confirmed at: while the replica is still there, nothing changed. */
  revision: number;
  /** The document it was computed from (null: no document). */
  readonly document: Buffer | null;
  readonly fromMs: number;
  readonly untilMs: number;
  readonly value: V;
  readonly body: Uint8Array;
}

/**
 * Answers by key (a customer and what was asked). A decision is piecewise constant in time, so
 * most answers become a lookup and a buffer copy, and stay exact: an entry is reused only for the
 * same document bytes, the same catalog, and an instant before the next one at which any answer
 * of that document can change. Check, CheckBatch and ListEntitlements all go through `resolve`.
 */
export class AnswerCache<V> {
  private readonly entries = new Map<string, Answer<V>>();

  /** `encode`: the answer's bytes without revision and stale. */
  constructor(
    private readonly encode: (value: V) => Uint8Array,
    private readonly max = MAX_ANSWERS,
  ) {}

  static key(customerId: string, feature: string, quantity: number | undefined): string {
    return quantity === undefined ? `${customerId}\u0000${feature}` : `${customerId}\u0000${feature}\u0000${quantity}`;
  }

  /** The entry for `key` if it holds for this catalog at `atMs` (the document is the caller's to compare). */
  get(key: string, catalog: CatalogIndex, atMs: number): Answer<V> | undefined {
    const a = this.entries.get(key);
    if (!a) return undefined;
    if (a.catalog !== catalog || atMs < a.fromMs || atMs >= a.untilMs) {
      this.entries.delete(key);
      return undefined;
    }
    return a;
  }

  /** The entry for `key` if it holds at `atMs` and was confirmed at `revision`: nothing to read. */
  confirmed(key: string, catalog: CatalogIndex, atMs: number, revision: number): Answer<V> | undefined {
    const a = this.get(key, catalog, atMs);
    return a && a.revision === revision ? a : undefined;
  }

  /**
   * The answer for `key` at `atMs`, exact as of the revision it carries (`revision` when nothing
   * was read). While the replica is at the revision an entry was confirmed at, nothing changed:
   * no read. Otherwise one read (`read`) confirms the customer's document is the same bytes, or
   * the answer is computed from it (`compute`) and kept.
   */
  resolve(key: string, catalog: CatalogIndex, atMs: number, revision: number, read: () => DocumentRead, compute: (doc: AccessDocument | undefined) => V): Answer<V> {
    const a = this.get(key, catalog, atMs);
    if (a && a.revision === revision) return a;
    const r = read();
    if (a && sameDocument(r.raw, a.document)) {
      a.revision = r.revision;
      return a;
    }
    const doc = r.doc();
    return this.put(key, { catalog, revision: r.revision, document: r.raw, fromMs: atMs, untilMs: answersHoldUntil(doc, catalog, atMs), value: compute(doc) });
  }

  put(key: string, answer: Omit<Answer<V>, "body">): Answer<V> {
    if (this.entries.size >= this.max) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    const a: Answer<V> = { ...answer, body: this.encode(answer.value) };
    this.entries.set(key, a);
    return a;
  }

  get size(): number {
    return this.entries.size;
  }
}

/** Field tags (field number << 3 | wire type) of a response's trailing revision (uint64) and stale (bool). */
export interface Tail {
  readonly revision: number;
  readonly stale: number;
}

/** CheckResponse: revision = 7, stale = 8. */
export const CHECK_TAIL: Tail = { revision: 0x38, stale: 0x40 };
/** CheckBatchResponse and ListEntitlementsResponse: revision = 2, stale = 3. */
export const LIST_TAIL: Tail = { revision: 0x10, stale: 0x18 };
/** CheckBatchResponse.results (field 1, length-delimited). */
const RESULTS_TAG = 0x0a;

function varintLength(v: number): number {
  let len = 1;
  for (; v >= 0x80; v = Math.floor(v / 0x80)) len++;
  return len;
}

/** Writes `v` (a safe integer ≥ 0) as a varint at `p`; returns the position after it. */
function writeVarint(out: Uint8Array, p: number, v: number): number {
  while (v >= 0x80) {
    out[p++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  out[p++] = v;
  return p;
}

/** Bytes of the revision and stale fields as ts-proto writes them (proto3: absent when zero / false). */
function tailLength(revision: number, stale: boolean): number {
  return (revision > 0 ? 1 + varintLength(revision) : 0) + (stale ? 2 : 0);
}

function writeTail(out: Uint8Array, p: number, revision: number, stale: boolean, tail: Tail): number {
  if (revision > 0) {
    out[p++] = tail.revision;
    p = writeVarint(out, p, revision);
  }
  if (stale) {
    out[p++] = tail.stale;
    out[p++] = 1;
  }
  return p;
}

/** `body` followed by revision and stale: what the response's encode writes for the whole answer (CheckResponse unless `tail` says otherwise). */
export function withRevision(body: Uint8Array, revision: number, stale: boolean, tail: Tail = CHECK_TAIL): Buffer {
  const out = Buffer.allocUnsafe(body.length + tailLength(revision, stale));
  out.set(body, 0);
  writeTail(out, body.length, revision, stale, tail);
  return out;
}

/**
 * A fresh CheckBatchResponse from cached answer bodies: each result is `body` + revision, framed
 * as field 1; then the batch's revision. What CheckBatchResponse.encode writes, without re-encoding.
 */
export function batchResponse(bodies: readonly Uint8Array[], revision: number): Buffer {
  const tail = tailLength(revision, false);
  let size = tail;
  for (const b of bodies) {
    const item = b.length + tail;
    size += 1 + varintLength(item) + item;
  }
  const out = Buffer.allocUnsafe(size);
  let p = 0;
  for (const b of bodies) {
    out[p++] = RESULTS_TAG;
    p = writeVarint(out, p, b.length + tail);
    out.set(b, p);
    p = writeTail(out, p + b.length, revision, false, CHECK_TAIL);
  }
  writeTail(out, p, revision, false, LIST_TAIL);
  return out;
}

/** Same document bytes (both absent counts as the same). */
export function sameDocument(a: Buffer | null, b: Buffer | null): boolean {
  if (a === null || b === null) return a === b;
  return a.length === b.length && a.equals(b);
}
