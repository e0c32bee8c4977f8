/**
 * Fills PROOFGATE_STATE as a writer would, without a writer: the catalog, then one document per
 * customer, published with pipelined JetStream publishes (each acknowledged by the server), and
 * later bursts of document updates.
 */
import { connect, type JetStreamClient, type NatsConnection } from "nats";
import { encodeCatalogRecord, encodeDocumentRecord } from "#proofgate/replication/state-record.js";
import { ensureStreams } from "#proofgate/replication/streams.js";
import { CATALOG_SUBJECT, HEARTBEAT_SUBJECT, STATE_STREAM, customerSubject } from "#proofgate/replication/subjects.js";
import { Heartbeat } from "#proofgate/gen/proofgate/v1/document.js";
import { customerId, demoCatalog, documentBytes, selfCheck, templateOf, templates } from "../data.js";
import { emit, serve } from "../ipc.js";

export function start(): void {
  let nc: NatsConnection | undefined;
  let js: JetStreamClient | undefined;
  let bodies: Buffer[] = [];
  let heartbeat: NodeJS.Timeout | undefined;

  /**
   * Publishes `count` records with at most `window` unacknowledged, and at most `rate` per second
   * when given; returns the first and last sequences.
   */
  async function pipeline(
    count: number,
    window: number,
    record: (i: number) => { subject: string; data: Uint8Array },
    options: { progress?: (done: number) => void; rate?: number } = {},
  ): Promise<{ first: number; last: number; bytes: number }> {
    const j = js;
    if (!j) throw new Error("not connected");
    let first = Infinity;
    let last = 0;
    let bytes = 0;
    let next = 0;
    let done = 0;
    let failure: unknown;
    let timer: NodeJS.Timeout | undefined;
    const begin = performance.now();
    const interval = options.rate ? 1000 / options.rate : 0;
    await new Promise<void>((resolve, reject) => {
      const launch = (): void => {
        timer = undefined;
        while (next < count && next - done < window && failure === undefined) {
          if (interval > 0) {
            const due = begin + next * interval;
            const now = performance.now();
            if (due > now) {
              timer ??= setTimeout(launch, Math.max(1, due - now));
              return;
            }
          }
          const { subject, data } = record(next++);
          bytes += data.length;
          j.publish(subject, data, { timeout: 30_000 }).then(
            (ack) => {
              if (ack.seq < first) first = ack.seq;
              if (ack.seq > last) last = ack.seq;
              done++;
              if (options.progress && done % 50_000 === 0) options.progress(done);
              if (done === count) resolve();
              else if (!timer) launch();
            },
            (err: unknown) => {
              failure = err;
              reject(err instanceof Error ? err : new Error(String(err)));
            },
          );
        }
      };
      if (count === 0) resolve();
      else launch();
    });
    return { first, last, bytes };
  }

  serve(
    {
      connect: async (a: { url: string }) => {
        nc = await connect({ servers: a.url, maxReconnectAttempts: -1 });
        const jsm = await nc.jetstreamManager();
        await ensureStreams(jsm);
        js = nc.jetstream({ timeout: 30_000 });
        return {};
      },
      /** Builds the document templates (same seed, same set in every process that asks). */
      templates: (a: { count: number; seed: number; now: number }) => {
        const t = performance.now();
        bodies = templates(a.count, a.seed, a.now).bodies;
        const first = bodies[0];
        if (first) selfCheck(first);
        const sizes = bodies.map((b) => b.length).sort((x, y) => x - y);
        return { ms: performance.now() - t, medianBytes: sizes[Math.floor(sizes.length / 2)], maxBytes: sizes.at(-1) };
      },
      catalog: async () => {
        if (!js) throw new Error("not connected");
        const ack = await js.publish(CATALOG_SUBJECT, encodeCatalogRecord(demoCatalog()));
        return { seq: ack.seq };
      },
      /** One document per customer 0..count-1. */
      documents: async (a: { count: number; window: number }) => {
        const t = performance.now();
        const r = await pipeline(
          a.count,
          a.window,
          (i) => {
            const id = customerId(i);
            return { subject: customerSubject(id), data: encodeDocumentRecord(documentBytes(id, bodies[templateOf(i, bodies.length)] as Buffer)) };
          },
          { progress: (done) => emit("seeded", { done, seconds: (performance.now() - t) / 1000 }) },
        );
        const seconds = (performance.now() - t) / 1000;
        return { count: a.count, seconds, rate: a.count / seconds, firstSeq: r.first, lastSeq: r.last, bytes: r.bytes };
      },
      /** `count` updates of random customers (each gets another template's document), at most `rate` per second if given. */
      burst: async (a: { count: number; customers: number; window: number; rate?: number }) => {
        const t = performance.now();
        const r = await pipeline(
          a.count,
          a.window,
          (k) => {
            const i = Math.floor(Math.random() * a.customers);
            const id = customerId(i);
            return { subject: customerSubject(id), data: encodeDocumentRecord(documentBytes(id, bodies[(templateOf(i, bodies.length) + 1 + k) % bodies.length] as Buffer)) };
          },
          a.rate ? { rate: a.rate } : {},
        );
        const seconds = (performance.now() - t) / 1000;
        return { count: a.count, seconds, rate: a.count / seconds, firstSeq: r.first, lastSeq: r.last };
      },
      /**
       * Writer heartbeats (head = the stream's last sequence) every `intervalMs`, as the writer
       * sends them: without them a sidecar never knows it is current and marks every answer stale.
       */
      heartbeats: (a: { intervalMs: number }) => {
        const conn = nc;
        if (!conn) throw new Error("not connected");
        clearInterval(heartbeat);
        const beat = async (): Promise<void> => {
          const info = await (await conn.jetstreamManager()).streams.info(STATE_STREAM);
          conn.publish(HEARTBEAT_SUBJECT, Heartbeat.encode({ headRevision: info.state.last_seq, writerId: "bench-seed", sentAt: new Date(), snapshotInProgress: false }).finish());
        };
        heartbeat = setInterval(() => void beat().catch(() => undefined), a.intervalMs);
        return beat().then(() => ({}));
      },
      streamInfo: async () => {
        if (!nc) throw new Error("not connected");
        const info = await (await nc.jetstreamManager()).streams.info(STATE_STREAM);
        return { messages: info.state.messages, bytes: info.state.bytes, lastSeq: info.state.last_seq };
      },
    },
    async () => {
      clearInterval(heartbeat);
      await nc?.drain();
    },
  );
}
