import type { BillingEvent } from "../gen/proofgate/v1/billing.js";
import type { AccessDocument, Override } from "../gen/proofgate/v1/document.js";

export const MAX_INVOICES_PER_SUBSCRIPTION = 24;

/**
 * Folds every accepted event of one customer, and the customer's overrides, into the customer's
 * access document. Deterministic: any order and any duplication of the same events gives a
 * byte-identical document (`AccessDocument.encode`).
 */
export function foldDocument(_customerId: string, _facts: readonly BillingEvent[], _overrides: readonly Override[]): AccessDocument {
  throw new Error("not implemented yet");
}
