/**
 * A billing system and a product service at once, for the writer benchmarks: publishes billing
 * events (to NATS, or through IngestService.Publish) and, for event-to-enforcement, watches a
 * sidecar's Check until each event shows.
 *
 * Watching uses the product's own consistency token: once the writer's document for the event
 * goes by on NATS (its `Nats-Expected-Last-Sequence` header names the revision before it), one
 * Check with `min_revision` = that revision is answered as soon as the sidecar applies it, so a
 * change is seen one local round trip after it lands, with no polling interval and one call per
 * event. (Polling every in-flight event with `min_revision = last seen + 1` answered every
 * outstanding poll on every applied revision: behind at 1,000/s, hundreds of checks per revision,
 * load the benchmark made for itself.) If that answer does not show the change yet, it asks again
 * with `min_revision = answered revision + 1`.
 */
import * as grpc from "@grpc/grpc-js";
import { connect, type JetStreamClient, type NatsConnection } from "nats";
import { AdminServiceClient } from "#proofgate/gen/proofgate/v1/admin.js";
import { BillingEvent, PaymentResult } from "#proofgate/gen/proofgate/v1/billing.js";
import { AccessStatus, CheckServiceClient, type CheckResponse } from "#proofgate/gen/proofgate/v1/check.js";
import { IngestResult, type IngestServiceClient, type PublishResponse } from "#proofgate/gen/proofgate/v1/ingest.js";
import { writerClients } from "#proofgate/cli/client.js";
import { unaryCall } from "#proofgate/transport/grpc-client.js";
import { CUSTOMER_SUBJECT_PREFIX, customerSubject } from "#proofgate/replication/subjects.js";
import { EventStream, customerId, demoCatalog, paymentEvent, subscriptionEvent } from "../data.js";
import { Histogram, type HistogramJson } from "../histogram.js";
import { serve } from "../ipc.js";
import { sleep } from "../util.js";

const SUBJECT = "proofgate.billing.bench";

export interface E2eResult {
  readonly rate: number;
  readonly offered: number;
  /** Events whose effect was seen. */
  readonly seen: number;
  readonly missed: number;
  readonly publishedPerSecond: number;
  readonly hist: HistogramJson;
  /** JetStream publish acknowledgement (the event is durable in PROOFGATE_BILLING). */
  readonly ackHist: HistogramJson;
  readonly checks: number;
  /** Published → the writer's document seen on PROOFGATE_STATE (core NATS subscriber): ledger commit and outbox publish. */
  readonly writerStage: HistogramJson;
  /** Document on PROOFGATE_STATE → the sidecar's Check shows it: delivery, apply, answer. */
  readonly sidecarStage: HistogramJson;
}

export function start(): void {
  let nc: NatsConnection | undefined;
  let js: JetStreamClient | undefined;
  let ingest: InstanceType<typeof IngestServiceClient> | undefined;
  let admin: InstanceType<typeof AdminServiceClient> | undefined;
  let check: InstanceType<typeof CheckServiceClient> | undefined;
  /** e2e customers: how many payments each has had (even: unpaid or refunded; odd: paid). */
  const paid = new Map<number, number>();
  let eventSeq = 0;
  const runId = Math.random().toString(36).slice(2, 8);

  const need = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`${what} not connected`);
    return v;
  };

  async function publishGrpc(events: BillingEvent[]): Promise<PublishResponse> {
    const c = need(ingest, "writer");
    const res = await unaryCall<PublishResponse>((md, o, cb) => c.publish({ events }, md, o, cb), { timeoutMs: 60_000 });
    const bad = res.results.find((x) => x.result === IngestResult.INGEST_RESULT_REJECTED);
    if (bad) throw new Error(`event ${bad.eventId} rejected: ${bad.reason}`);
    return res;
  }

  /**
   * When the writer has applied everything published before `marker` (a last event of its own
   * customer): the writer folds its inputs in order, so the marker's fact means all of them.
   */
  async function writerCaughtUp(marker: string, timeoutMs: number): Promise<number> {
    const c = need(admin, "writer");
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = await unaryCall<{ facts: unknown[] }>((md, o, cb) => c.getCustomer({ customerId: marker }, md, o, cb), { timeoutMs: 10_000 }).then(
        (r) => r.facts.length > 0,
        () => false,
      );
      if (found) return performance.now();
      if (performance.now() > deadline) throw new Error(`the writer had not applied the events before ${marker} after ${timeoutMs} ms`);
      await sleep(10);
    }
  }

  serve(
    {
      connect: async (a: { natsUrl: string; writer: string; sidecar?: string; token?: string }) => {
        nc = await connect({ servers: a.natsUrl, maxReconnectAttempts: -1 });
        js = nc.jetstream({ timeout: 10_000 });
        // The writer runs with an auth file, as in production: every call carries the token.
        ({ ingest, admin } = writerClients(a.writer, a.token, {}));
        if (a.sidecar) check = new CheckServiceClient(a.sidecar, grpc.credentials.createInsecure());
        return {};
      },
      applyCatalog: async () => {
        const c = need(admin, "writer");
        const res = await unaryCall<{ revision: number }>((md, o, cb) => c.applyCatalog({ catalog: demoCatalog(), actor: "bench", reason: "benchmark", allowRemovals: false }, md, o, cb), { timeoutMs: 60_000 });
        return { revision: res.revision };
      },
      /** Customers offset..offset+count-1 subscribe to premium (not paid yet). Returns the revision that holds them. */
      precreate: async (a: { offset: number; count: number }) => {
        let revision = 0;
        const now = Date.now();
        for (let i = 0; i < a.count; i += 500) {
          const events: BillingEvent[] = [];
          for (let k = i; k < Math.min(a.count, i + 500); k++) events.push(subscriptionEvent(customerId(a.offset + k), `pre_${runId}_${a.offset + k}`, now, "premium", 1));
          revision = Math.max(revision, (await publishGrpc(events)).revision);
        }
        return { revision };
      },
      /**
       * Event-to-enforcement at `rate` events/s for `durationMs`: each event pays for (or refunds)
       * one customer's premium plan, which flips `api-access` on the sidecar (GRANTED / REVOKED).
       */
      e2e: async (a: { rate: number; durationMs: number; offset: number; customers: number; timeoutMs: number }): Promise<E2eResult> => {
        const j = need(js, "nats");
        const cl = need(check, "sidecar");
        const hist = new Histogram();
        const ackHist = new Histogram();
        const writerStage = new Histogram();
        const sidecarStage = new Histogram();
        /** Subject → when its event was published, when the writer's document for it went by, and how to start watching. */
        const inFlight = new Map<string, { t0: number; state?: number; watchFrom: (minRevision: number | undefined) => void }>();
        const sub = need(nc, "nats").subscribe(`${CUSTOMER_SUBJECT_PREFIX}>`, {
          callback: (_err, msg) => {
            const f = inFlight.get(msg.subject);
            if (!f || f.state !== undefined) return;
            f.state = performance.now();
            const before = Number(msg.headers?.get("Nats-Expected-Last-Sequence") || NaN);
            f.watchFrom(Number.isInteger(before) ? before + 1 : undefined);
          },
        });
        const total = Math.round((a.rate * a.durationMs) / 1000);
        const interval = 1000 / a.rate;
        let seen = 0;
        let missed = 0;
        let checks = 0;
        let published = 0;
        let lastPublishAt = 0;
        const busy = new Set<number>();
        const begin = performance.now();
        const watch = (c: number, expectGranted: boolean, t0: number, deadline: number, done: () => void): void => {
          const id = customerId(c);
          const subject = customerSubject(id);
          // Not seen on NATS by the deadline: missed.
          const unseen = setTimeout(() => {
            if (inFlight.get(subject)?.state !== undefined || !inFlight.delete(subject)) return;
            missed++;
            done();
          }, deadline - t0);
          const watchFrom = (minRevision: number | undefined): void => {
            clearTimeout(unseen);
            poll(minRevision);
          };
          inFlight.set(subject, { t0, watchFrom });
          const poll = (minRevision: number | undefined): void => {
            checks++;
            cl.check({ customerId: id, feature: "api-access", quantity: undefined, minRevision }, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err: grpc.ServiceError | null, res: CheckResponse) => {
              const t1 = performance.now();
              if (!err) {
                const ok = expectGranted ? res.allowed && res.status === AccessStatus.ACCESS_STATUS_GRANTED : res.status === AccessStatus.ACCESS_STATUS_REVOKED;
                if (ok) {
                  hist.record((t1 - t0) * 1e6);
                  const state = inFlight.get(subject)?.state;
                  if (state !== undefined) {
                    writerStage.record((state - t0) * 1e6);
                    sidecarStage.record((t1 - state) * 1e6);
                  }
                  inFlight.delete(subject);
                  seen++;
                  done();
                  return;
                }
              }
              if (t1 > deadline) {
                inFlight.delete(subject);
                missed++;
                done();
                return;
              }
              poll(err ? minRevision : res.revision + 1);
            });
          };
        };
        await new Promise<void>((resolve) => {
          let i = 0;
          let outstanding = 0;
          let timerDone = false;
          const finish = (): void => {
            outstanding--;
            if (timerDone && outstanding === 0) resolve();
          };
          const pump = (): void => {
            const t = performance.now();
            while (i < total && begin + i * interval <= t) {
              const c = a.offset + (i % a.customers);
              i++;
              if (busy.has(c)) {
                // This customer's previous event has not shown yet; never overlap two on one customer.
                missed++;
                continue;
              }
              busy.add(c);
              const n = paid.get(c) ?? 0;
              const id = customerId(c);
              const eventId = `e2e_${runId}_${eventSeq++}`;
              const invoice = `in_${runId}_${c}_${Math.floor(n / 2)}`;
              const ev = n % 2 === 0 ? paymentEvent(id, eventId, Date.now(), invoice, PaymentResult.PAYMENT_RESULT_SUCCEEDED) : paymentEvent(id, eventId, Date.now(), invoice, PaymentResult.PAYMENT_RESULT_REFUNDED);
              paid.set(c, n + 1);
              outstanding++;
              const t0 = performance.now();
              j.publish(SUBJECT, BillingEvent.encode(ev).finish()).then(
                () => {
                  ackHist.record((performance.now() - t0) * 1e6);
                  published++;
                  lastPublishAt = performance.now();
                },
                () => undefined,
              );
              watch(c, n % 2 === 0, t0, t0 + a.timeoutMs, () => {
                busy.delete(c);
                finish();
              });
            }
            if (i >= total) {
              timerDone = true;
              if (outstanding === 0) resolve();
              return;
            }
            setTimeout(pump, Math.max(0, begin + i * interval - performance.now() - 0.2));
          };
          pump();
        });
        sub.unsubscribe();
        return {
          rate: a.rate,
          offered: total,
          seen,
          missed,
          publishedPerSecond: (published / Math.max(1, lastPublishAt - begin)) * 1000,
          hist: hist.toJSON(),
          ackHist: ackHist.toJSON(),
          checks,
          writerStage: writerStage.toJSON(),
          sidecarStage: sidecarStage.toJSON(),
        };
      },
      /** IngestService.Publish, `concurrency` callers each sending `batch` events per call, for `durationMs`. */
      ingestGrpc: async (a: { batch: number; concurrency: number; durationMs: number; warmupMs: number; customers: number; offset: number }) => {
        const stream = new EventStream(a.customers, `g${a.batch}c${a.concurrency}_${runId}`, a.offset);
        const hist = new Histogram();
        let events = 0;
        let total = 0;
        let errors = 0;
        let firstError: string | undefined;
        const t = performance.now();
        const from = t + a.warmupMs;
        const end = from + a.durationMs;
        await Promise.all(
          Array.from({ length: a.concurrency }, async () => {
            while (performance.now() < end) {
              const batch = Array.from({ length: a.batch }, () => stream.next());
              const t0 = performance.now();
              try {
                await publishGrpc(batch);
                total += a.batch;
                const t1 = performance.now();
                if (t0 >= from) {
                  hist.record((t1 - t0) * 1e6);
                  if (t1 <= end) events += a.batch;
                }
              } catch (err) {
                errors++;
                firstError ??= err instanceof Error ? err.message : String(err);
              }
            }
          }),
        );
        return { batch: a.batch, concurrency: a.concurrency, eventsPerSecond: (events / a.durationMs) * 1000, totalEvents: total, calls: hist.count, hist: hist.toJSON(), errors, firstError };
      },
      /**
       * `count` events published to PROOFGATE_BILLING as fast as JetStream acknowledges them
       * (pipelined), then the time until the writer has committed and acked them all.
       */
      ingestNats: async (a: { count: number; customers: number; offset: number; window: number; timeoutMs: number }) => {
        const j = need(js, "nats");
        const stream = new EventStream(a.customers, `n_${runId}`, a.offset);
        const payloads = Array.from({ length: a.count }, () => BillingEvent.encode(stream.next()).finish());
        const t = performance.now();
        let next = 0;
        let done = 0;
        await new Promise<void>((resolve, reject) => {
          const launch = (): void => {
            while (next < a.count && next - done < a.window) {
              j.publish(SUBJECT, payloads[next++] as Uint8Array).then(() => {
                if (++done === a.count) resolve();
                else launch();
              }, reject);
            }
          };
          launch();
        });
        const marker = `marker_${runId}_${a.offset}_${a.count}`;
        await j.publish(SUBJECT, BillingEvent.encode(subscriptionEvent(marker, `${marker}_e`, Date.now(), "premium", 1)).finish());
        const publishedAt = performance.now();
        const end = await writerCaughtUp(marker, a.timeoutMs);
        return { count: a.count, publishSeconds: (publishedAt - t) / 1000, seconds: (end - t) / 1000, eventsPerSecond: a.count / ((end - t) / 1000) };
      },
    },
    async () => {
      ingest?.close();
      admin?.close();
      check?.close();
      await nc?.drain();
    },
  );
}
