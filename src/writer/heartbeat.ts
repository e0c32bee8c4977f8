import { Heartbeat } from "../gen/proofgate/v1/document.js";
import { HEARTBEAT_SUBJECT } from "../replication/subjects.js";
import type { NatsLink } from "./nats-link.js";

/**
 * Announces `Heartbeat{head_revision, writer_id, sent_at}` on core NATS `proofgate.heartbeat`
 * every `intervalMs` while connected, so replicas know how far behind they are even when
 * nothing changes. Sent only once the publisher has reconciled, so head_revision is never a
 * guess.
 */
export class HeartbeatSender {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly link: NatsLink,
    private readonly writerId: string,
    private readonly intervalMs: number,
    private readonly head: () => number | undefined,
    private readonly now: () => number,
    private readonly snapshotInProgress: () => boolean = () => false,
  ) {}

  start(): void {
    if (this.intervalMs <= 0) return;
    this.timer = setInterval(() => this.beat(), this.intervalMs);
    this.timer.unref();
  }

  beat(): void {
    const head = this.head();
    if (head === undefined) return;
    this.link.publishCore(HEARTBEAT_SUBJECT, Heartbeat.encode({ headRevision: head, writerId: this.writerId, sentAt: new Date(this.now()), snapshotInProgress: this.snapshotInProgress() }).finish());
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
