/** The answers `ProofgateClient` gives: plain objects, statuses as strings, times as Dates. */

/** What `AccessStatus` says, without the `ACCESS_STATUS_` prefix. Allowed: GRANTED and GRACE_PERIOD. */
export const ACCESS_STATUSES = [
  "GRANTED",
  "GRACE_PERIOD",
  "NOT_ENTITLED",
  "PAYMENT_REQUIRED",
  "PAYMENT_PENDING",
  "SUSPENDED",
  "CANCELED",
  "EXPIRED",
  "REVOKED",
  "BLOCKED",
  "LIMIT_EXCEEDED",
  "UNKNOWN_CUSTOMER",
] as const;

/**
 * A decision's status. `SIDECAR_UNAVAILABLE`: the sidecar could not be reached and the feature's
 * fail policy answered (`source: "fail-policy"`). `UNSPECIFIED`: a status this client does not
 * know (a newer sidecar); `allowed` still says what to do.
 */
export type AccessStatusName = (typeof ACCESS_STATUSES)[number] | "SIDECAR_UNAVAILABLE" | "UNSPECIFIED";

/** Where an answer came from: the replica file in process, the sidecar over gRPC, or the fail policy. */
export type AnswerSource = "local" | "sidecar" | "fail-policy";

/** What the sidecar does when unreachable, per feature: allow (`open`), deny (`closed`), or throw. */
export type FailPolicy = "open" | "closed" | "throw";

export interface CheckQuery {
  readonly customerId: string;
  readonly feature: string;
  /** NUMERIC features: allowed only if within the limit. */
  readonly quantity?: number | undefined;
  /** Read-your-writes: a revision from `Publish` or the admin API. */
  readonly minRevision?: number | undefined;
}

export interface CallOptions {
  /** This call's deadline in ms, retries included (default: the client's `deadlineMs`). */
  readonly deadlineMs?: number | undefined;
  /** Read-your-writes for batches and entitlement lists. */
  readonly minRevision?: number | undefined;
}

export interface Decision {
  /** The only field a caller must look at. */
  readonly allowed: boolean;
  readonly status: AccessStatusName;
  /** One human sentence saying why. */
  readonly reason: string;
  /** "true" for booleans, the limit for numerics, the string itself; "" when denied. */
  readonly value: string;
  /** NUMERIC features: the limit that applies. */
  readonly limit: number | undefined;
  /** When this answer stops holding by itself (trial, paid period, grace or override end). */
  readonly validUntil: Date | undefined;
}

export interface CheckResult extends Decision {
  /** The replica revision the answer was evaluated at (0 from the fail policy). */
  readonly revision: number;
  /** The replica could not confirm it is current, or did not reach `minRevision` in time; always true from the fail policy. */
  readonly stale: boolean;
  readonly source: AnswerSource;
}

export interface BatchResult {
  /** In query order. */
  readonly results: CheckResult[];
  readonly revision: number;
  readonly stale: boolean;
  readonly source: AnswerSource;
}

export interface Entitlement extends Decision {
  readonly feature: string;
}

export interface EntitlementsResult {
  /** Every catalog feature, sorted by key. */
  readonly entitlements: Entitlement[];
  readonly revision: number;
  readonly stale: boolean;
  readonly source: Exclude<AnswerSource, "fail-policy">;
}
