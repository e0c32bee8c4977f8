import { AccessDocument } from "../../gen/proofgate/v1/document.js";
import type { AccessStatus } from "../../gen/proofgate/v1/check.js";
import type { CatalogIndex } from "../../catalog/index.js";
import { answersHoldUntil } from "../../policy/index.js";

/**
 * Bounds: customers kept (each holds its document bytes, to compare) and answers kept over all of
 * them (a list counts one per feature). The least recently asked customer goes first when either
 * is reached. Measured full, with 600-byte documents and 90-byte answers: about 14 MB (heap and
 * buffers); each answer costs ~300 B, each customer its document and ~200 B.
 */
export const MAX_CUSTOMERS = 4_096;
export const MAX_ANSWERS = 16_384;

/** A customer's encoded AccessDocument as read from the replica (null: none), with the revision read with it. */
export type DocumentRead = [revision: number, document: Buffer | null];

/** One Check answer: its bytes without revision and stale (which come last on the wire and are appended per call), and its status (for the metrics). */
export interface CheckAnswer {
  readonly status: AccessStatus;
  readonly body: Uint8Array;
}

/** ListEntitlements: the encoded entitlements, and each one's status. */
export interface ListAnswer {
  readonly statuses: readonly AccessStatus[];
  readonly body: Uint8Array;
}

/**
 * One customer's answers. They hold while the catalog is the same object, the customer's
 * document is the same bytes, and the clock is in [fromMs, untilMs) (`answersHoldUntil`: no
 * answer of that document changes in between, so an answer computed at any instant of it is the
 * answer at every other).
 */
export class CustomerAnswers {
  readonly checks = new Map<string, CheckAnswer>();
  list: ListAnswer | undefined;
  /** When it was last put at the end of the cache's order (AnswerCache's clock). */
  moved = 0;
  /** False for a customer seen once: answered from its document, nothing kept (see AnswerCache.customer). */
  kept = true;

  constructor(
    readonly catalog: CatalogIndex,
    /** The replica revision they were last confirmed at: while the replica is still there, nothing changed. */
    public revision: number,
    /** The document they are computed from (null: no document). */
    readonly document: Buffer | null,
    readonly fromMs: number,
    readonly untilMs: number,
  ) {}

  holds(catalog: CatalogIndex, atMs: number): boolean {
    return this.catalog === catalog && atMs >= this.fromMs && atMs < this.untilMs;
  }
}

/**
 * Encoded answers by customer, then by what was asked. A decision is piecewise constant in time,
 * so most answers become a lookup and a buffer copy, and stay exact: an answer is reused only for
 * the same document bytes, the same catalog, and an instant before the next one at which any
 * answer of that document can change. Check, CheckBatch and ListEntitlements all go through
 * `customer` (the rule) and then `check` or `list`.
 */
export class AnswerCache {
  private readonly customers = new Map<string, CustomerAnswers>();
  private answers = 0;
  /** The last document decoded: a batch's misses for one customer decode it once. */
  private decoded: { entry: CustomerAnswers; doc: AccessDocument | undefined } | undefined;
  /** Customers put at the end so far (a clock for `touch`). */
  private moves = 0;
  /** Customers asked about once lately and not kept: the second ask keeps them. */
  private seenOnce = new Set<string>();

  constructor(private readonly max = { customers: MAX_CUSTOMERS, answers: MAX_ANSWERS }) {}

  static key(feature: string, quantity: number | undefined): string {
    return quantity === undefined ? feature : `${feature}\u0000${quantity}`;
  }

  /** The customer's answers if they hold at `atMs` and were confirmed at `revision`: nothing to read. */
  confirmed(customerId: string, catalog: CatalogIndex, atMs: number, revision: number): CustomerAnswers | undefined {
    const c = this.customers.get(customerId);
    if (!c || c.revision !== revision || !c.holds(catalog, atMs)) return undefined;
    this.touch(customerId, c);
    return c;
  }

  /**
   * The customer's answers at `atMs`, exact as of the revision they carry afterwards (`revision`
   * when nothing was read). While the replica is at the revision they were confirmed at, nothing
   * changed: no read. Otherwise one read (`read`) confirms the customer's document is the same
   * bytes, or they start over from the document read.
   */
  customer(customerId: string, catalog: CatalogIndex, atMs: number, revision: number, read: () => DocumentRead): CustomerAnswers {
    let c = this.customers.get(customerId);
    const wasKept = c !== undefined;
    if (c && !c.holds(catalog, atMs)) {
      this.remove(customerId, c);
      c = undefined;
    }
    if (c && c.revision === revision) {
      this.touch(customerId, c);
      return c;
    }
    const [rev, raw] = read();
    if (c && sameDocument(raw, c.document)) {
      c.revision = rev;
      this.touch(customerId, c);
      return c;
    }
    if (c) this.remove(customerId, c);
    const doc = raw ? AccessDocument.decode(raw) : undefined;
    if (!wasKept && !this.secondAsk(customerId)) {
      // A customer asked about once is answered and forgotten: keeping its answers would evict a
      // customer asked about often, and would move objects into the old generation for nothing.
      c = new CustomerAnswers(catalog, rev, raw, atMs, atMs);
      c.kept = false;
      this.decoded = { entry: c, doc };
      return c;
    }
    c = new CustomerAnswers(catalog, rev, raw, atMs, answersHoldUntil(doc, catalog, atMs));
    this.decoded = { entry: c, doc };
    if (this.customers.size >= this.max.customers) this.evictLeastRecent(c);
    this.customers.set(customerId, c);
    c.moved = ++this.moves;
    return c;
  }

  /** The customer's answer for `key`, computed from its document (`compute`) and kept if not there. */
  check(c: CustomerAnswers, key: string, compute: (doc: AccessDocument | undefined) => CheckAnswer): CheckAnswer {
    let a = c.checks.get(key);
    if (a) return a;
    a = compute(this.doc(c));
    if (!c.kept) return a;
    this.added(c, 1);
    c.checks.set(key, a);
    return a;
  }

  /** The customer's ListEntitlements answer, computed (`compute`) and kept if not there. */
  list(c: CustomerAnswers, compute: (doc: AccessDocument | undefined) => ListAnswer): ListAnswer {
    if (c.list) return c.list;
    const a = compute(this.doc(c));
    if (!c.kept) return a;
    this.added(c, Math.max(1, a.statuses.length));
    c.list = a;
    return a;
  }

  get size(): { customers: number; answers: number } {
    return { customers: this.customers.size, answers: this.answers };
  }

  /**
   * Most recently used last (a Map keeps insertion order): the customers asked about often stay,
   * the least recently asked go first. One already among the newest half is not moved (moving is
   * a delete and an insert), so eviction is least recently used to within half the bound.
   */
  private touch(customerId: string, c: CustomerAnswers): void {
    if (this.moves - c.moved < this.max.customers / 2) return;
    this.customers.delete(customerId);
    this.customers.set(customerId, c);
    c.moved = ++this.moves;
  }

  /**
   * Whether the customer was asked about once already, lately: "lately" is since the set of
   * such customers last filled up (the customers' bound) and was emptied, so a customer asked
   * about twice within a few thousand other first asks is kept.
   */
  private secondAsk(customerId: string): boolean {
    if (this.seenOnce.delete(customerId)) return true;
    if (this.seenOnce.size >= this.max.customers) this.seenOnce = new Set();
    this.seenOnce.add(customerId);
    return false;
  }

  private doc(c: CustomerAnswers): AccessDocument | undefined {
    if (this.decoded?.entry !== c) this.decoded = { entry: c, doc: c.document ? AccessDocument.decode(c.document) : undefined };
    return this.decoded.doc;
  }

  private answersOf(c: CustomerAnswers): number {
    return c.checks.size + (c.list ? Math.max(1, c.list.statuses.length) : 0);
  }

  private remove(customerId: string, c: CustomerAnswers): void {
    this.answers -= this.answersOf(c);
    this.customers.delete(customerId);
    if (this.decoded?.entry === c) this.decoded = undefined;
  }

  /** Counts `n` answers added to `c`; beyond the bound, other customers go, least recently asked first (and if none is left, `c`'s own answers). */
  private added(c: CustomerAnswers, n: number): void {
    this.answers += n;
    while (this.answers > this.max.answers) {
      if (!this.evictLeastRecent(c)) {
        this.answers -= this.answersOf(c);
        c.checks.clear();
        c.list = undefined;
        break;
      }
    }
  }

  /** Removes the least recently asked customer other than `keep`; false if there is none. */
  private evictLeastRecent(keep: CustomerAnswers): boolean {
    for (const [id, c] of this.customers) {
      if (c === keep) continue;
      this.remove(id, c);
      return true;
    }
    return false;
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
