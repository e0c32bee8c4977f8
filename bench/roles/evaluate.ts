/**
 * The pure policy core alone, in process (no gRPC): ns per decision for `evaluate` on decoded
 * documents; decode + evaluate from the stored bytes; a replica point read + decode + evaluate;
 * and the sidecar's whole Check handler (replica read, decode, evaluate, response object, metrics)
 * plus the request decode and response encode grpc-js would do around it.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CatalogIndex } from "#proofgate/catalog/index.js";
import { CheckBatchRequest, CheckBatchResponse, CheckRequest, CheckResponse } from "#proofgate/gen/proofgate/v1/check.js";
import { AccessDocument } from "#proofgate/gen/proofgate/v1/document.js";
import { createRegistry } from "#proofgate/observability/metrics.js";
import { evaluate, statusName } from "#proofgate/policy/index.js";
import { CATALOG_SUBJECT, customerSubject } from "#proofgate/replication/subjects.js";
import { CheckHandler } from "#proofgate/sidecar/check/service.js";
import { RevisionWaiters } from "#proofgate/sidecar/check/revision-waiters.js";
import { Freshness } from "#proofgate/sidecar/follow/freshness.js";
import { SidecarMetrics } from "#proofgate/sidecar/metrics.js";
import { decodeStateRecord, encodeCatalogRecord, encodeDocumentRecord } from "#proofgate/replication/state-record.js";
import { Replica } from "#proofgate/sidecar/replica/replica.js";
import { CHECK_FEATURES, customerId, demoCatalog, documentBytes, rng, templateOf, templates } from "../data.js";
import { serve } from "../ipc.js";
import { benchLogger } from "../util.js";

interface Measure {
  readonly nsPerOp: number;
  readonly opsPerSecond: number;
  readonly ops: number;
}

/** Runs `op(i)` in rounds of `chunk` for about `ms`, three times; keeps the best (least disturbed) round. */
function measure(ms: number, op: (i: number) => unknown): Measure {
  let sink: unknown;
  const chunk = 4096;
  let best = Infinity;
  let total = 0;
  for (let round = 0; round < 3; round++) {
    let n = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < ms) {
      for (let k = 0; k < chunk; k++) sink = op(n + k);
      n += chunk;
      t = performance.now();
    }
    total += n;
    best = Math.min(best, ((t - t0) * 1e6) / n);
  }
  if (sink === Symbol.for("never")) throw new Error("unreachable");
  return { nsPerOp: Math.round(best), opsPerSecond: Math.round(1e9 / best), ops: total };
}

export function start(): void {
  serve({
    run: async (a: { docs: number; templates: number; seed: number; ms: number }) => {
      const now = Date.now();
      const { bodies } = templates(a.templates, a.seed, now);
      const catalog = CatalogIndex.from(demoCatalog());
      const bytes: Buffer[] = [];
      const decoded: AccessDocument[] = [];
      for (let i = 0; i < a.docs; i++) {
        const b = documentBytes(customerId(i), bodies[templateOf(i, bodies.length)] as Buffer);
        bytes.push(b);
        decoded.push(AccessDocument.decode(b));
      }
      // Precomputed random requests, so the loops measure the core, not Math.random.
      const r = rng(a.seed + 1);
      const N = 1 << 16;
      const mask = N - 1;
      interface Req {
        readonly doc: AccessDocument;
        readonly bytes: Buffer;
        readonly request: CheckRequest;
        readonly wire: Uint8Array;
      }
      const reqs: Req[] = [];
      for (let i = 0; i < N; i++) {
        const d = Math.floor(r() * a.docs);
        const f = CHECK_FEATURES[Math.floor(r() * CHECK_FEATURES.length)] as string;
        const request: CheckRequest = { customerId: customerId(d), feature: f, quantity: f === "seats" ? 1 + Math.floor(r() * 20) : undefined, minRevision: undefined };
        reqs.push({ doc: decoded[d] as AccessDocument, bytes: bytes[d] as Buffer, request, wire: CheckRequest.encode(request).finish() });
      }
      const at = (i: number): Req => reqs[i & mask] as Req;
      const statuses: Record<string, number> = {};
      for (const q of reqs) {
        const s = statusName(evaluate(q.doc, catalog, q.request.feature, q.request.quantity, now).status);
        statuses[s] = (statuses[s] ?? 0) + 1;
      }
      const docBytes = bytes.map((b) => b.length).sort((x, y) => x - y);

      const evaluateOnly = measure(a.ms, (i) => {
        const q = at(i);
        return evaluate(q.doc, catalog, q.request.feature, q.request.quantity, now);
      });
      const decodeEvaluate = measure(a.ms, (i) => {
        const q = at(i);
        return evaluate(AccessDocument.decode(q.bytes), catalog, q.request.feature, q.request.quantity, now);
      });
      const decodeOnly = measure(a.ms, (i) => AccessDocument.decode(at(i).bytes));

      // The sidecar's replica and Check handler, in process.
      const dir = mkdtempSync(join(tmpdir(), "proofgate-bench-eval-"));
      try {
        const replica = Replica.open(join(dir, "replica.db"), benchLogger("eval-replica"));
        const catalogRecord = encodeCatalogRecord(demoCatalog());
        await replica.apply([{ seq: 1, record: decodeStateRecord(CATALOG_SUBJECT, catalogRecord) }], 1);
        for (let i = 0; i < a.docs; i += 1000) {
          const batch = [];
          for (let k = i; k < Math.min(a.docs, i + 1000); k++) batch.push({ seq: k + 2, record: decodeStateRecord(customerSubject(customerId(k)), encodeDocumentRecord(bytes[k] as Buffer)) });
          await replica.apply(batch, Math.min(a.docs, i + 1000) + 1);
        }
        const readDecodeEvaluate = measure(a.ms, (i) => {
          const q = at(i);
          const raw = replica.document(q.request.customerId);
          return evaluate(raw ? AccessDocument.decode(raw) : undefined, catalog, q.request.feature, q.request.quantity, now);
        });
        const replicaRead = measure(a.ms, (i) => replica.document(at(i).request.customerId));
        const freshness = new Freshness();
        // Current by a writer heartbeat at the replica's revision (a confirmation alone, with no heartbeat ever, leaves answers stale).
        const current = (): void => freshness.heartbeat(replica.revision, performance.now(), replica.revision);
        current();
        const handler = new CheckHandler({
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
          logger: benchLogger("eval-check"),
          now: Date.now,
          minRevisionWaitMs: 1000,
          decisionLog: undefined,
        });
        // Keep the replica "current" so answers take the fresh path, as in a healthy sidecar.
        const refresh = (i: number): void => {
          if ((i & 8191) === 0) current();
        };
        const handlerOnly = measure(a.ms, (i) => {
          refresh(i);
          return handler.check(at(i).request);
        });
        const handlerWire = measure(a.ms, (i) => {
          refresh(i);
          const res = handler.check(CheckRequest.decode(at(i).wire)) as CheckResponse;
          return CheckResponse.encode(res).finish();
        });
        // What the gRPC binding runs: request decode, then answers from the answer cache, encoded.
        const handlerCached = measure(a.ms, (i) => {
          refresh(i);
          return handler.checkWire(CheckRequest.decode(at(i).wire));
        });
        // CheckBatch of 10 features of one customer, as the load client sends it.
        const batches = Array.from({ length: 4096 }, (_, i) => {
          const id = at(i).request.customerId;
          const checks = Array.from({ length: 10 }, (_, k) => {
            const f = CHECK_FEATURES[(i + k) % CHECK_FEATURES.length] as string;
            return { customerId: id, feature: f, quantity: f === "seats" ? 1 + (k % 20) : undefined, minRevision: undefined };
          });
          return CheckBatchRequest.encode({ checks, minRevision: undefined }).finish();
        });
        const batchWire = measure(a.ms, (i) => {
          refresh(i);
          const res = handler.checkBatch(CheckBatchRequest.decode(batches[i & 4095] as Uint8Array)) as CheckBatchResponse;
          return CheckBatchResponse.encode(res).finish();
        });
        // What the gRPC binding runs for CheckBatch: request decode, answers from the answer cache, the response framed from their bytes.
        const batchCached = measure(a.ms, (i) => {
          refresh(i);
          return handler.checkBatchWire(CheckBatchRequest.decode(batches[i & 4095] as Uint8Array));
        });
        // The same, about a few customers asked again and again (512 checks, 256 batches): after the first round, every answer is a hit.
        const handlerHit = measure(a.ms, (i) => {
          refresh(i);
          return handler.checkWire(CheckRequest.decode(at(i & 511).wire));
        });
        const batchHit = measure(a.ms, (i) => {
          refresh(i);
          return handler.checkBatchWire(CheckBatchRequest.decode(batches[i & 255] as Uint8Array));
        });
        await replica.close();
        return {
          docs: a.docs,
          templates: a.templates,
          documentBytes: { median: docBytes[Math.floor(docBytes.length / 2)], p99: docBytes[Math.floor(docBytes.length * 0.99)], max: docBytes.at(-1) },
          statuses,
          evaluate: evaluateOnly,
          decode: decodeOnly,
          decodeEvaluate,
          replicaRead,
          readDecodeEvaluate,
          handler: handlerOnly,
          handlerWire,
          handlerCached,
          batchWire,
          batchCached,
          handlerHit,
          batchHit,
        };
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  });
}
