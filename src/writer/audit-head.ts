import { AUDIT_HEAD_SUBJECT } from "../replication/subjects.js";
import type { Ledger } from "./ledger/ledger.js";
import type { NatsLink } from "./nats-link.js";

/** The message on proofgate.audit.head (JSON): the chain's last entry and hash, for one ledger. */
export interface AuditHead {
  readonly ledgerId: string;
  readonly seq: number;
  readonly hash: string;
  readonly atMs: number;
}

/**
 * Publishes the audit chain's head every `intervalMs` when it moved (and once after start), so
 * PROOFGATE_AUDIT holds an outside record: a ledger rewritten after a head went out no longer
 * contains that head (`proofgate audit verify --nats-url`).
 */
export class AuditHeadSender {
  private timer: NodeJS.Timeout | undefined;
  private lastSent = "";

  constructor(
    private readonly ledger: Ledger,
    private readonly link: NatsLink,
    private readonly intervalMs: number,
    private readonly now: () => number,
  ) {}

  start(): void {
    if (this.intervalMs <= 0) return;
    this.timer = setInterval(() => this.send(), this.intervalMs);
    this.timer.unref();
  }

  send(): void {
    if (!this.ledger.open || !this.link.ready) return;
    const head = this.ledger.auditHead();
    if (!head || head.hash === this.lastSent) return;
    const message: AuditHead = { ledgerId: this.ledger.ledgerId, seq: head.seq, hash: head.hash, atMs: this.now() };
    this.link.publishCore(AUDIT_HEAD_SUBJECT, Buffer.from(JSON.stringify(message)));
    this.lastSent = head.hash;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
