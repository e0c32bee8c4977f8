import type { NatsConnection, Subscription } from "nats";
import { SIDECAR_STATUS_SUBJECT } from "../../replication/subjects.js";
import { parseSidecarStatus, type SidecarStatus } from "../../replication/sidecar-status.js";

export interface HeardSidecar extends SidecarStatus {
  /** When the writer received the announcement (its clock). */
  readonly heardAtMs: number;
}

/** Sidecars not heard from for this long are forgotten. */
const FORGET_AFTER_MS = 15 * 60_000;
const MAX_SIDECARS = 5_000;

/**
 * The sidecars heard from recently, from their status announcements. Bounded (the oldest are
 * dropped) and in memory only: after a writer restart the list fills again within one interval.
 */
export class SidecarDirectory {
  private readonly heard = new Map<string, HeardSidecar>();
  private sub: Subscription | undefined;
  private subscribedOn: NatsConnection | undefined;

  constructor(private readonly now: () => number) {}

  /** Listens on `nc` (once per connection; the client re-subscribes by itself after a reconnect). */
  listen(nc: NatsConnection): void {
    if (this.subscribedOn === nc) return;
    this.subscribedOn = nc;
    this.sub = nc.subscribe(SIDECAR_STATUS_SUBJECT, {
      callback: (err, msg) => {
        if (err) return;
        const s = parseSidecarStatus(msg.data);
        if (s) this.record(s);
      },
    });
  }

  record(s: SidecarStatus): void {
    this.heard.delete(s.id);
    this.heard.set(s.id, { ...s, heardAtMs: this.now() });
    while (this.heard.size > MAX_SIDECARS) {
      const oldest = this.heard.keys().next().value;
      if (oldest === undefined) break;
      this.heard.delete(oldest);
    }
  }

  /** Most recently heard first. */
  list(): HeardSidecar[] {
    const cutoff = this.now() - FORGET_AFTER_MS;
    for (const [id, s] of this.heard) if (s.heardAtMs < cutoff) this.heard.delete(id);
    return [...this.heard.values()].reverse();
  }

  close(): void {
    this.sub?.unsubscribe();
    this.sub = undefined;
  }
}
