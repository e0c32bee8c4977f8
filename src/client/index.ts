/**
 * `proofgate/client`: what a product service imports to ask proofgate for access decisions.
 * See README.md, "Calling Check".
 */
export { ProofgateClient, DEFAULT_SIDECAR_ADDRESS, type ProofgateClientOptions } from "./client.js";
export type { RetryOptions } from "./remote.js";
export {
  ACCESS_STATUSES,
  type AccessStatusName,
  type AnswerSource,
  type BatchResult,
  type CallOptions,
  type CheckQuery,
  type CheckResult,
  type Decision,
  type Entitlement,
  type EntitlementsResult,
  type FailPolicy,
} from "./types.js";
export { ProofgateError, InvalidArgumentError, UnavailableError, DeadlineExceededError } from "../errors/index.js";
