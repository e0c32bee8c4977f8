import type { CheckResponse, Entitlement } from "../gen/proofgate/v1/check.js";
import type { Decision } from "./decision.js";

/** Decision → the wire's CheckResponse. Kept small: this runs on every Check. */
export function toCheckResponse(d: Decision, revision: number, stale: boolean): CheckResponse {
  return {
    allowed: d.allowed,
    status: d.status,
    reason: d.reason,
    value: d.value,
    limit: d.limit,
    validUntil: d.validUntilMs === undefined ? undefined : new Date(d.validUntilMs),
    revision,
    stale,
  };
}

export function toEntitlement(feature: string, d: Decision): Entitlement {
  return {
    feature,
    allowed: d.allowed,
    status: d.status,
    reason: d.reason,
    value: d.value,
    limit: d.limit,
    validUntil: d.validUntilMs === undefined ? undefined : new Date(d.validUntilMs),
  };
}
