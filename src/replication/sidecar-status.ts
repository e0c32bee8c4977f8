/**
 * The sidecar's status announcement on core NATS `proofgate.sidecar.status`: small JSON, sent
 * every few seconds, fire and forget. The writer's console shows who was heard from recently,
 * at which revision, and how stale. Nothing decides on it.
 */
export interface SidecarStatus {
  /** The sidecar's name (its host name, the pod name on Kubernetes) and process id. */
  readonly id: string;
  readonly appliedRevision: number;
  /** The writer's head revision from the latest heartbeat the sidecar received. */
  readonly headRevision: number;
  readonly ready: boolean;
  /** Answers given now would carry `stale = true`. */
  readonly stale: boolean;
  /** Seconds since the replica was last known current (-1 if never). */
  readonly lagSeconds: number;
  readonly sentAtMs: number;
}

export const MAX_SIDECAR_STATUS_BYTES = 1_024;

export function encodeSidecarStatus(s: SidecarStatus): Uint8Array {
  return new TextEncoder().encode(
    JSON.stringify({
      id: s.id,
      applied_revision: s.appliedRevision,
      head_revision: s.headRevision,
      ready: s.ready,
      stale: s.stale,
      lag_seconds: s.lagSeconds,
      sent_at_ms: s.sentAtMs,
    }),
  );
}

/** The announcement, or undefined for anything malformed or oversized (announcements are advisory). */
export function parseSidecarStatus(bytes: Uint8Array): SidecarStatus | undefined {
  if (bytes.length > MAX_SIDECAR_STATUS_BYTES) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const num = (k: string): number | undefined => (typeof o[k] === "number" && Number.isFinite(o[k]) ? o[k] : undefined);
  const id = typeof o["id"] === "string" && o["id"].length > 0 && o["id"].length <= 256 ? o["id"] : undefined;
  const applied = num("applied_revision");
  const head = num("head_revision");
  const lag = num("lag_seconds");
  const sent = num("sent_at_ms");
  if (id === undefined || applied === undefined || head === undefined || lag === undefined || sent === undefined) return undefined;
  if (typeof o["ready"] !== "boolean" || typeof o["stale"] !== "boolean") return undefined;
  return { id, appliedRevision: applied, headRevision: head, ready: o["ready"], stale: o["stale"], lagSeconds: lag, sentAtMs: sent };
}
