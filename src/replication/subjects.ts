import { createHash } from "node:crypto";

/**
 * Names on NATS shared by writer, sidecar and billing publishers. This file is the contract of
 * the state stream; see docs/replication.md.
 */
export const BILLING_STREAM = "PROOFGATE_BILLING";
export const STATE_STREAM = "PROOFGATE_STATE";
export const DEADLETTER_STREAM = "PROOFGATE_DEADLETTER";

/** Billing systems publish under this prefix, e.g. `proofgate.billing.stripe`. */
export const BILLING_SUBJECTS = "proofgate.billing.>";
export const STATE_SUBJECTS = "proofgate.state.>";
export const CUSTOMER_SUBJECT_PREFIX = "proofgate.state.customer.";
export const CATALOG_SUBJECT = "proofgate.state.catalog";
export const DEADLETTER_SUBJECT = "proofgate.deadletter";
export const HEARTBEAT_SUBJECT = "proofgate.heartbeat";
/** Sidecars announce their replica's state here (JSON, see sidecar-status.ts); the writer's console lists them. */
export const SIDECAR_STATUS_SUBJECT = "proofgate.sidecar.status";
/** The writer's audit chain head, kept in PROOFGATE_AUDIT as an outside copy (docs/security.md). */
export const AUDIT_STREAM = "PROOFGATE_AUDIT";
export const AUDIT_HEAD_SUBJECT = "proofgate.audit.head";

/** Message headers. */
export const HEADER_MSG_ID = "Nats-Msg-Id";
/** The writer's outbox row id, so a restarted writer can tell what reached the stream. */
export const HEADER_OUTBOX_ID = "Proofgate-Outbox-Id";
/** Random id of the writer's ledger file; outbox ids are only comparable within one ledger. */
export const HEADER_LEDGER_ID = "Proofgate-Ledger-Id";
export const HEADER_CONTENT_TYPE = "Content-Type";
/**
 * With several writers (docs/writer.md, "High availability"): the epoch of the lease under which
 * the leader published the message, and the input position (`<input seq>.<index>`) of the change,
 * which names the same change in every writer's ledger.
 */
export const HEADER_LEADER_EPOCH = "Proofgate-Leader-Epoch";
export const HEADER_INPUT_POSITION = "Proofgate-Input-Position";

/**
 * The subject token of a customer: base64url(SHA-256(customer id)), 43 characters.
 * Customer ids are arbitrary strings (dots, wildcards, spaces, 256 bytes), so they never appear
 * raw in a subject. A one-way hash rather than a reversible encoding because erasure leaves a
 * tombstone on the customer's subject: the tombstone must not carry the id it erased. Logs use
 * the token too.
 */
export function customerToken(customerId: string): string {
  return createHash("sha256").update(customerId, "utf8").digest("base64url");
}

export function customerSubject(customerId: string): string {
  return CUSTOMER_SUBJECT_PREFIX + customerToken(customerId);
}

/** The token from a customer subject, or undefined for any other subject. */
export function tokenOfSubject(subject: string): string | undefined {
  return subject.startsWith(CUSTOMER_SUBJECT_PREFIX) ? subject.slice(CUSTOMER_SUBJECT_PREFIX.length) : undefined;
}
