import { StalePolicy } from "../gen/proofgate/v1/catalog.js";
import type { CatalogIndex } from "../catalog/index.js";
import { statusName, type Decision } from "./decision.js";

/**
 * What a stale answer says and does. The sidecar and the client's local mode both answer with
 * these, so a stale answer reads the same whichever of them gave it.
 */

/** Why the replica is stale, from how long ago it was last confirmed current (Infinity: never). */
export function staleReason(ageMs: number, coherencyWindowMs: number): string {
  return Number.isFinite(ageMs)
    ? `the replica was last confirmed current ${formatMs(ageMs)} ago (coherency window ${formatMs(coherencyWindowMs)})`
    : "the replica has not yet been confirmed current with the state stream";
}

/** The catalog's stale_policy applied to a decision; `why` undefined means fresh. */
export function withStalePolicy(d: Decision, catalog: CatalogIndex, why: string | undefined): Decision {
  return why !== undefined && catalog.stalePolicy === StalePolicy.STALE_POLICY_DENY ? staleDenial(d, why) : d;
}

/** stale_policy: deny. The status stays what the replica would have answered; `allowed` is false. */
export function staleDenial(d: Decision, why: string): Decision {
  if (!d.allowed) return { ...d, reason: `Stale replica: ${why}. ${d.reason}` };
  return {
    allowed: false,
    status: d.status,
    reason: `Denied because the replica is stale (${why}); it would have answered ${statusName(d.status)}: ${d.reason}`,
    value: "",
    limit: undefined,
    validUntilMs: undefined,
  };
}

export function formatMs(ms: number): string {
  return ms >= 10_000 ? `${Math.round(ms / 1000)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}
