import { AccessStatus } from "../gen/proofgate/v1/check.js";

/** The answer to one check, before it is put on the wire. Times are Unix milliseconds. */
export interface Decision {
  readonly allowed: boolean;
  readonly status: AccessStatus;
  /** One human sentence. */
  readonly reason: string;
  /** "true"/"false" for booleans, the limit for numerics, the string for strings; "" when denied. */
  readonly value: string;
  /** Numeric features only. */
  readonly limit: number | undefined;
  /** When the answer stops holding by itself, if anything scheduled changes it. */
  readonly validUntilMs: number | undefined;
}

export const ALLOWED_STATUSES: ReadonlySet<AccessStatus> = new Set([AccessStatus.ACCESS_STATUS_GRANTED, AccessStatus.ACCESS_STATUS_GRACE_PERIOD]);

/** Rule 6: when nothing allows, the most informative denial wins, in this order. */
export const DENIAL_PRECEDENCE: readonly AccessStatus[] = [
  AccessStatus.ACCESS_STATUS_BLOCKED,
  AccessStatus.ACCESS_STATUS_REVOKED,
  AccessStatus.ACCESS_STATUS_PAYMENT_PENDING,
  AccessStatus.ACCESS_STATUS_SUSPENDED,
  AccessStatus.ACCESS_STATUS_PAYMENT_REQUIRED,
  AccessStatus.ACCESS_STATUS_CANCELED,
  AccessStatus.ACCESS_STATUS_EXPIRED,
  AccessStatus.ACCESS_STATUS_NOT_ENTITLED,
];

/** `ACCESS_STATUS_GRACE_PERIOD` → `GRACE_PERIOD`, for logs, CLIs and docs. */
export function statusName(status: AccessStatus): string {
  return (AccessStatus[status] as string | undefined)?.replace(/^ACCESS_STATUS_/, "") ?? `UNKNOWN(${status})`;
}
