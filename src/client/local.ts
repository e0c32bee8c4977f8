import { statSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { CatalogIndex } from "../catalog/index.js";
import type { CheckBatchResponse, CheckRequest, CheckResponse, ListEntitlementsResponse } from "../gen/proofgate/v1/check.js";
import { AccessDocument } from "../gen/proofgate/v1/document.js";
import { evaluate, evaluateAll, staleReason, toCheckResponse, toEntitlement, withStalePolicy } from "../policy/index.js";
import { ReplicaReader } from "../sidecar/replica/replica.js";

/** How often the file is looked at again: replaced (a rebuilt replica is a new file), or back after being missing. */
const RECHECK_MS = 1_000;

/**
 * How long a read of the file's data_version holds. Reading it is a SQLite statement, a quarter of
 * a cached check's cost when done on every call; replication itself takes milliseconds, so an
 * answer up to 1 ms older than the file changes nothing a caller can observe, and a caller that
 * must read its own write passes `minRevision`, which always reads the file again (docs/client.md).
 */
const VERSION_HOLD_MS = 1;

interface Entry {
  /** The file's data_version when `revision` and `docRevision` were read: the entry holds while it is unchanged. */
  version: number;
  revision: number;
  docRevision: number | null;
  doc: AccessDocument | undefined;
}

/**
 * Local mode: the sidecar's replica file, opened read-only in the application's process, and the
 * same policy core, catalog code and stale rules the sidecar answers with. Answers are built as
 * the sidecar builds them (`toCheckResponse`), so they are the sidecar's answers, field by field.
 *
 * Returns undefined when it cannot answer (file missing or unreadable, `minRevision` not yet
 * applied here): the caller then asks the sidecar. Freshness is the sidecar's own: the sidecar
 * records in the file when it last confirmed the replica current.
 *
 * Decoding a document is most of a check's cost, so decoded documents are kept (LRU, bounded)
 * with the revision that wrote them; while the file is unchanged (SQLite's data_version) a
 * cached customer costs no read at all, and after a change one point read tells whether the
 * customer's document is still the cached one.
 */
export class LocalReplica {
  private reader: ReplicaReader | undefined;
  private ino = -1;
  private nextCheckAt = 0;
  private problemText: string | undefined = "not opened yet";
  private version = -1;
  private versionReadAt = -Infinity;
  private currentAtMs: number | undefined;
  private catalogRevision = -1;
  private catalog = CatalogIndex.empty();
  private readonly cache = new Map<string, Entry>();

  constructor(
    readonly path: string,
    private readonly cacheSize: number,
  ) {
    this.open();
  }

  /** Why local mode is off right now; undefined when it is on. */
  get problem(): string | undefined {
    return this.problemText;
  }

  get active(): boolean {
    return this.reader !== undefined;
  }

  check(req: CheckRequest, nowMs: number): CheckResponse | undefined {
    const r = this.ready();
    if (!r) return undefined;
    const e = this.atLeast(r, req.customerId, req.minRevision);
    if (e === undefined) return undefined;
    const catalog = this.catalog;
    const why = this.staleness(catalog);
    const d = evaluate(e.doc, catalog, req.feature, req.quantity, nowMs);
    return toCheckResponse(withStalePolicy(d, catalog, why), e.revision, why !== undefined);
  }

  checkBatch(checks: readonly CheckRequest[], minRevision: number | undefined, nowMs: number): CheckBatchResponse | undefined {
    const r = this.ready();
    if (!r) return undefined;
    // One snapshot, as the sidecar's batch: every answer at the same revision.
    return r.snapshot(() => {
      this.refresh(r, true);
      const revision = r.state().revision;
      if (minRevision !== undefined && revision < minRevision) return undefined;
      const catalog = this.catalog;
      const why = this.staleness(catalog);
      const results = checks.map((c) => {
        const d = evaluate(this.entry(r, c.customerId).doc, catalog, c.feature, c.quantity, nowMs);
        return toCheckResponse(withStalePolicy(d, catalog, why), revision, why !== undefined);
      });
      return { results, revision, stale: why !== undefined };
    });
  }

  listEntitlements(customerId: string, minRevision: number | undefined, nowMs: number): ListEntitlementsResponse | undefined {
    const r = this.ready();
    if (!r) return undefined;
    const e = this.atLeast(r, customerId, minRevision);
    if (e === undefined) return undefined;
    const catalog = this.catalog;
    const why = this.staleness(catalog);
    const entitlements = evaluateAll(e.doc, catalog, nowMs).map(({ feature, decision }) => toEntitlement(feature, withStalePolicy(decision, catalog, why)));
    return { entitlements, revision: e.revision, stale: why !== undefined };
  }

  /** A read failed: drop the file and try it again later. */
  failed(err: unknown): void {
    this.drop(`cannot read the replica: ${err instanceof Error ? err.message : String(err)}`);
  }

  close(): void {
    this.drop("closed");
    this.nextCheckAt = Infinity;
  }

  // ---------------------------------------------------------------- internals

  /** The reader, after the periodic look at the file and the refresh after any change. */
  private ready(): ReplicaReader | undefined {
    const t = performance.now();
    if (t >= this.nextCheckAt) {
      this.nextCheckAt = t + RECHECK_MS;
      if (this.reader && this.inode() !== this.ino) this.drop("the replica file was replaced");
      if (!this.reader) this.open();
    }
    const r = this.reader;
    if (r) this.refresh(r, false, t);
    return r;
  }

  /** The customer's entry, read again from the file when it is behind `minRevision`; undefined while the file is still behind. */
  private atLeast(r: ReplicaReader, customerId: string, minRevision: number | undefined): Entry | undefined {
    let e = this.entry(r, customerId);
    if (minRevision === undefined || e.revision >= minRevision) return e;
    this.refresh(r, true);
    e = this.entry(r, customerId);
    return e.revision >= minRevision ? e : undefined;
  }

  /** After any commit by the sidecar: its freshness record and, if it changed, the catalog. */
  private refresh(r: ReplicaReader, force: boolean, t = performance.now()): void {
    if (!force && t - this.versionReadAt < VERSION_HOLD_MS) return;
    this.versionReadAt = t;
    const v = r.dataVersion();
    if (v !== this.version) {
      const s = r.state();
      this.currentAtMs = s.currentAtMs;
      if (s.catalogRevision !== this.catalogRevision) {
        const c = s.catalogRevision === 0 ? undefined : r.catalog();
        this.catalog = c ? CatalogIndex.from(c) : CatalogIndex.empty();
        this.catalogRevision = s.catalogRevision;
      }
      this.version = v;
    }
  }

  private entry(r: ReplicaReader, customerId: string): Entry {
    const cached = this.cache.get(customerId);
    if (cached && cached.version === this.version) {
      // Most recently used last: Map keeps insertion order.
      this.cache.delete(customerId);
      this.cache.set(customerId, cached);
      return cached;
    }
    const [revision, docRevision, raw] = r.lookup(customerId);
    let doc: AccessDocument | undefined;
    if (cached && cached.docRevision === docRevision) doc = cached.doc;
    else doc = raw ? AccessDocument.decode(raw) : undefined;
    const e: Entry = { version: this.version, revision, docRevision, doc };
    this.cache.delete(customerId);
    this.cache.set(customerId, e);
    if (this.cache.size > this.cacheSize) {
      const oldest = this.cache.keys().next();
      if (!oldest.done) this.cache.delete(oldest.value);
    }
    return e;
  }

  /** The sidecar's rule: stale when never confirmed current since it started, or longer ago than the coherency window. */
  private staleness(catalog: CatalogIndex): string | undefined {
    const at = this.currentAtMs;
    const window = catalog.coherencyWindowMs;
    if (at !== undefined && Date.now() - at <= window) return undefined;
    return staleReason(at === undefined ? Infinity : Math.max(0, Date.now() - at), window);
  }

  private open(): void {
    try {
      const ino = this.inode();
      if (ino < 0) {
        this.problemText = `no replica file at ${this.path}`;
        return;
      }
      this.reader = ReplicaReader.open(this.path);
      this.ino = ino;
      this.version = -1;
      this.versionReadAt = -Infinity;
      this.catalogRevision = -1;
      this.problemText = undefined;
    } catch (err) {
      this.problemText = `cannot open the replica ${this.path}: ${err instanceof Error ? err.message : String(err)}`;
    }
  }

  private drop(why: string): void {
    this.reader?.close();
    this.reader = undefined;
    this.cache.clear();
    this.problemText = why;
  }

  private inode(): number {
    try {
      return statSync(this.path).ino;
    } catch {
      return -1;
    }
  }
}
