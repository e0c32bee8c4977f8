import { AccessStatus, type CheckBatchResponse, type CheckResponse, type Entitlement as WireEntitlement, type ListEntitlementsResponse } from "../gen/proofgate/v1/check.js";
import { ACCESS_STATUSES, type AccessStatusName, type AnswerSource, type BatchResult, type CheckResult, type Entitlement, type EntitlementsResult } from "./types.js";

/** Wire (or locally built) answers → the client's plain results; one conversion for both modes. */

const NAMES = new Map<number, AccessStatusName>(ACCESS_STATUSES.map((name) => [AccessStatus[`ACCESS_STATUS_${name}`], name]));

export const statusOf = (s: AccessStatus): AccessStatusName => NAMES.get(s) ?? "UNSPECIFIED";

export function checkResult(r: CheckResponse, source: AnswerSource): CheckResult {
  return {
    allowed: r.allowed,
    status: statusOf(r.status),
    reason: r.reason,
    value: r.value,
    limit: r.limit,
    validUntil: r.validUntil,
    revision: r.revision,
    stale: r.stale,
    source,
  };
}

export function batchResult(r: CheckBatchResponse, source: AnswerSource): BatchResult {
  return { results: r.results.map((x) => checkResult(x, source)), revision: r.revision, stale: r.stale, source };
}

function entitlement(e: WireEntitlement): Entitlement {
  return { feature: e.feature, allowed: e.allowed, status: statusOf(e.status), reason: e.reason, value: e.value, limit: e.limit, validUntil: e.validUntil };
}

export function entitlementsResult(r: ListEntitlementsResponse, source: EntitlementsResult["source"]): EntitlementsResult {
  return { entitlements: r.entitlements.map(entitlement), revision: r.revision, stale: r.stale, source };
}
