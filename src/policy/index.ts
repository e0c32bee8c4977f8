/**
 * The pure decision core, shared by writer and sidecar: facts → document → decision.
 * No I/O and no clock reads: time is always an argument.
 */
export { foldDocument, MAX_INVOICES_PER_SUBSCRIPTION } from "./fold.js";
export { answersHoldUntil, evaluate, evaluateAll } from "./evaluate.js";
export { ALLOWED_STATUSES, DENIAL_PRECEDENCE, statusName, type Decision } from "./decision.js";
export { toCheckResponse, toEntitlement } from "./wire.js";
export { TRANSITIONS, renderAccessStates, type Transition, type Trigger } from "./transitions.js";
export { staleReason, withStalePolicy, staleDenial, formatMs } from "./stale.js";
