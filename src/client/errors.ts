import { status, type ServiceError } from "@grpc/grpc-js";
import { DeadlineExceededError, InvalidArgumentError, ProofgateError, UnavailableError } from "../errors/index.js";

/**
 * A gRPC failure as one of proofgate's typed errors (src/errors), so callers catch
 * `InvalidArgumentError`, `UnavailableError`, `DeadlineExceededError` or, for anything else,
 * `ProofgateError` with its gRPC `code`.
 */
export function fromServiceError(err: unknown): ProofgateError {
  if (err instanceof ProofgateError) return err;
  const e = err as Partial<ServiceError>;
  if (typeof e.code !== "number") return new ProofgateError(err instanceof Error ? err.message : String(err), status.UNKNOWN, { cause: err });
  const details = e.details || e.message || status[e.code] || "";
  switch (e.code) {
    case status.INVALID_ARGUMENT: {
      const at = details.indexOf(": ");
      return at > 0 ? new InvalidArgumentError(details.slice(0, at), details.slice(at + 2)) : new InvalidArgumentError("request", details);
    }
    case status.UNAVAILABLE:
      return new UnavailableError(`proofgate sidecar unavailable: ${details}`, { cause: err });
    case status.DEADLINE_EXCEEDED:
      return new DeadlineExceededError(`proofgate sidecar did not answer in time: ${details}`);
    default:
      return new ProofgateError(`proofgate sidecar: ${status[e.code]}: ${details}`, e.code, { cause: err });
  }
}

/** The sidecar could not be reached (the case the fail policy is for). */
export const unreachable = (e: ProofgateError): boolean => e.code === status.UNAVAILABLE || e.code === status.DEADLINE_EXCEEDED;
