import { DEADLETTER_SUBJECT } from "../../replication/subjects.js";
import { errorMessage } from "../../errors/index.js";
import type { Logger } from "../../observability/logger.js";
import type { Ledger } from "../ledger/ledger.js";
import type { WriterMetrics } from "../metrics.js";
import type { NatsLink } from "../nats-link.js";
import { backoffMs, pause, Signal } from "../signal.js";

/**
 * Moves dead letters from the ledger to PROOFGATE_DEADLETTER. They are written in the same
 * transaction as the rejection (so an event acked on NATS can never lose its dead letter), and
 * deleted from the ledger once JetStream acknowledged them. Nats-Msg-Id `<ledgerId>:dl:<id>`
 * de-duplicates a resend after a crash.
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
      const handles = this.link.ready;
      const rows = handles ? this.ledger.pendingDeadLetters(100) : [];
      if (!handles || rows.length === 0) {
        await this.signal.wait();
        continue;
      }
      try {
        for (const r of rows) {
          await handles.js.publish(DEADLETTER_SUBJECT, r.payload, { msgID: `${this.ledger.ledgerId}:dl:${r.id}`, timeout: 5_000 });
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
