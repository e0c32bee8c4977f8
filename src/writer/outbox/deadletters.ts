import { createHash } from "node:crypto";
import { DEADLETTER_SUBJECT } from "../../replication/subjects.js";
import { bounded, errorMessage } from "../../errors/index.js";
import { DeadLetter } from "../../gen/proofgate/v1/document.js";
import type { Logger } from "../../observability/logger.js";
import type { Ledger } from "../ledger/ledger.js";
import type { WriterMetrics } from "../metrics.js";
import type { NatsLink } from "../nats-link.js";
import { backoffMs, pause } from "../../replication/connection.js";
import { Signal } from "../signal.js";

/** The most of a rejected payload a dead letter carries; the rest is identified by size and SHA-256. */
export const DEAD_LETTER_PAYLOAD_BYTES = 8 * 1024;

/**
 * A dead letter, bounded whatever was received: the reason and ids are cut to a few hundred
 * bytes and the payload to its first DEAD_LETTER_PAYLOAD_BYTES, with its size and digest, so
 * it always fits NATS's max_payload and can never wedge the dead-letter publisher.
 */
export function deadLetterBytes(d: { reason: string; eventId: string; origin: string; payload: Uint8Array; contentType: string; receivedAt: Date }): Uint8Array {
  const payload = Buffer.from(d.payload.buffer, d.payload.byteOffset, d.payload.byteLength);
  const truncated = payload.length > DEAD_LETTER_PAYLOAD_BYTES;
  return DeadLetter.encode({
    reason: bounded(d.reason, 2048),
    eventId: bounded(d.eventId, 256),
    origin: bounded(d.origin, 256),
    payload: truncated ? payload.subarray(0, DEAD_LETTER_PAYLOAD_BYTES) : payload,
    contentType: bounded(d.contentType, 256),
    receivedAt: d.receivedAt,
    payloadSize: payload.length,
    payloadSha256: createHash("sha256").update(payload).digest("hex"),
    payloadTruncated: truncated,
  }).finish();
}

/** How long a standby keeps its dead letters (the leader publishes them). */
const STANDBY_KEEP_MS = 10 * 60_000;

/** A dead letter stored by an older writer may be of any size: bound it the same way. */
function boundedDeadLetter(stored: Uint8Array): Uint8Array {
  if (stored.length <= DEAD_LETTER_PAYLOAD_BYTES + 4096) return stored;
  try {
    const d = DeadLetter.decode(stored);
    if (d.payloadSha256) return stored;
    return deadLetterBytes({ ...d, receivedAt: d.receivedAt ?? new Date(0) });
  } catch {
    return deadLetterBytes({ reason: "stored dead letter unreadable", eventId: "", origin: "", payload: stored, contentType: "", receivedAt: new Date(0) });
  }
}

/**
 * Moves dead letters from the ledger to PROOFGATE_DEADLETTER. They are written in the same
 * transaction as the rejection (so an event acked on NATS can never lose its dead letter), and
 * deleted from the ledger once JetStream acknowledged them. Only the leader publishes them: every
 * writer folds the same inputs into the same dead letters (byte for byte), and Nats-Msg-Id
 * `dl:<SHA-256 of the dead letter>` de-duplicates a resend after a crash or a takeover. A
 * standby drops its copies once they are older than STANDBY_KEEP_MS (long published by the leader).
 */
export class DeadLetterPublisher {
  private readonly signal = new Signal();
  private readonly stop = new AbortController();
  private readonly stopped = (): boolean => this.stop.signal.aborted;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly ledger: Ledger,
    private readonly link: NatsLink,
    private readonly logger: Logger,
    private readonly metrics: WriterMetrics,
    private readonly leading: () => boolean = () => true,
    private readonly now: () => number = Date.now,
  ) {}

  start(): void {
    this.link.onReady(() => this.signal.kick());
    this.loop = this.run();
  }

  kick(): void {
    this.signal.kick();
  }

  async close(): Promise<void> {
    this.stop.abort();
    this.signal.kick();
    await this.loop;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped()) {
      if (!this.leading()) {
        if (this.ledger.open) this.ledger.pruneDeadLetters(this.now() - STANDBY_KEEP_MS);
        await this.signal.wait(1_000);
        continue;
      }
      const handles = this.link.ready;
      const rows = handles ? this.ledger.pendingDeadLetters(100) : [];
      if (!handles || rows.length === 0) {
        await this.signal.wait();
        continue;
      }
      try {
        for (const r of rows) {
          const bytes = boundedDeadLetter(r.payload);
          await handles.js.publish(DEADLETTER_SUBJECT, bytes, { msgID: `dl:${createHash("sha256").update(bytes).digest("base64url")}`, timeout: 5_000 });
          this.ledger.deleteDeadLetter(r.id);
          this.metrics.deadLetters.inc();
        }
        failures = 0;
      } catch (err) {
        if (this.stopped()) break;
        this.logger.warn({ err: errorMessage(err) }, "cannot publish dead letters yet; retrying");
        await pause(backoffMs(failures++), this.stop.signal);
      }
    }
  }
}
