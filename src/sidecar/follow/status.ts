import type { NatsConnection } from "nats";
import { SIDECAR_STATUS_SUBJECT } from "../../replication/subjects.js";
import { encodeSidecarStatus, type SidecarStatus } from "../../replication/sidecar-status.js";

/** Publishes the sidecar's status every `intervalMs` while connected (see replication/sidecar-status.ts). */
export class StatusAnnouncer {
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    intervalMs: number,
    private readonly connection: () => NatsConnection | undefined,
    private readonly status: () => SidecarStatus,
  ) {
    if (intervalMs <= 0) return;
    this.timer = setInterval(() => this.announce(), intervalMs);
    this.timer.unref();
  }

  announce(): void {
    const nc = this.connection();
    if (!nc || nc.isClosed()) return;
    try {
      nc.publish(SIDECAR_STATUS_SUBJECT, encodeSidecarStatus(this.status()));
    } catch {
      // Advisory only: a closing or reconnecting connection drops it, the next one goes out.
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
