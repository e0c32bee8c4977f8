import { createHash, createHmac } from "node:crypto";
import { string } from "../config/options.js";
import { InvalidArgumentError } from "../errors/index.js";

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
 * The key of customer tokens when none is configured: public, so tokens made with it reverse by
 * guessing ids (e-mail addresses) exactly like an unkeyed hash. For development only.
 */
export const DEV_CUSTOMER_TOKEN_KEY = "proofgate-development-customer-token-key";

/**
 * The option, declared once for every process that computes customer tokens: the writer, every
 * sidecar (lazy mode included), the client's local mode and the operator commands. All of them
 * must use the same key (docs/security.md, "Customer tokens").
 */
export const customerTokenOptionSpec = {
  customerTokenKey: {
    ...string(
      "secret key of customer tokens (HMAC-SHA-256 of the customer id: NATS subjects, replica keys, logs, audit), the same on the writer, every sidecar and client; at least 32 random bytes in production. After a rotation the writer lists the new key first, then the old ones, comma separated (docs/security.md)",
      DEV_CUSTOMER_TOKEN_KEY,
    ),
    shownDefault: "a public development key",
  },
};

let tokenKey = DEV_CUSTOMER_TOKEN_KEY;
/** Keys of earlier rotations: the audit still holds entries under their tokens. */
let previousKeys: readonly string[] = [];

/**
 * Sets this process's customer token key (one deployment per process): services call it once at
 * start, before computing any token. `keys` is the option's value: the current key, then any
 * previous ones, comma separated.
 */
export function useCustomerTokenKey(keys: string): void {
  const list = keys.split(",").map((k) => k.trim());
  if (list.some((k) => k.length === 0)) throw new InvalidArgumentError("customer_token_key", "must not be empty (nor hold an empty key between commas)");
  [tokenKey = DEV_CUSTOMER_TOKEN_KEY, ...previousKeys] = list;
}

/** The key itself, for a worker thread that must compute tokens too (the replica's writer thread). Never log it. */
export function customerTokenKeyForThread(): string {
  return tokenKey;
}

/** Whether tokens are made with the public development key (services warn outside loopback). */
export function usingDevCustomerTokenKey(): boolean {
  return tokenKey === DEV_CUSTOMER_TOKEN_KEY;
}

/**
 * The 32-byte keyed digest of a customer id, HMAC-SHA-256(key, UTF-8 id): the customer token's
 * bytes, and the first 8 the replica's row key.
 */
export function customerDigest(customerId: string): Buffer {
  return createHmac("sha256", tokenKey).update(customerId, "utf8").digest();
}

/**
 * The subject token of a customer: base64url(HMAC-SHA-256(key, customer id)), 43 characters.
 * Customer ids are arbitrary strings (dots, wildcards, spaces, 256 bytes), so they never appear
 * raw in a subject. A one-way digest rather than a reversible encoding because erasure leaves a
 * tombstone on the customer's subject: the tombstone must not carry the id it erased. Keyed, so
 * that whoever reads subjects or logs cannot confirm a guessed id (an e-mail address) without
 * the key. Logs use the token too.
 */
export function customerToken(customerId: string): string {
  return customerDigest(customerId).toString("base64url");
}

/**
 * The customer's tokens under the current key, every previous one (newest first) and the unkeyed
 * SHA-256 of versions before keyed tokens: what erasure anonymizes and a customer's audit
 * timeline is looked up by, since audit entries keep the token they were written with.
 */
export function customerTokens(customerId: string): string[] {
  return [
    customerToken(customerId),
    ...previousKeys.map((k) => createHmac("sha256", k).update(customerId, "utf8").digest("base64url")),
    createHash("sha256").update(customerId, "utf8").digest("base64url"),
  ];
}

/**
 * Names the key without revealing it (a digest of a fixed text), so processes can tell that they
 * share one: e.g. `k1:3q2-7wEjQ1uV`.
 */
export function customerTokenKeyId(): string {
  return `k1:${createHmac("sha256", tokenKey).update("proofgate customer token key id").digest("base64url").slice(0, 12)}`;
}

export function customerSubject(customerId: string): string {
  return subjectOfToken(customerToken(customerId));
}

/** The customer subject of a token from `customerToken` (saves computing the token twice). */
export function subjectOfToken(token: string): string {
  return CUSTOMER_SUBJECT_PREFIX + token;
}

/** The token from a customer subject, or undefined for any other subject. */
export function tokenOfSubject(subject: string): string | undefined {
  return subject.startsWith(CUSTOMER_SUBJECT_PREFIX) ? subject.slice(CUSTOMER_SUBJECT_PREFIX.length) : undefined;
}
