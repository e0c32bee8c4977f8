import { status } from "@grpc/grpc-js";

/**
 * Errors that cross a service boundary. Each carries the gRPC status it maps to, so transport
 * code translates them in one place (`transport/grpc.ts`) and domain code never imports grpc.
 */
export class ProofgateError extends Error {
  constructor(
    message: string,
    readonly code: status,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad input. The message names the field, e.g. `payment.period_end: must be after period_start`. */
export class InvalidArgumentError extends ProofgateError {
  constructor(
    readonly field: string,
    problem: string,
  ) {
    super(`${field}: ${problem}`, status.INVALID_ARGUMENT);
  }
}

export class NotFoundError extends ProofgateError {
  constructor(message: string) {
    super(message, status.NOT_FOUND);
  }
}

/** The request is valid but the system is not in a state to serve it (e.g. no catalog yet). */
export class FailedPreconditionError extends ProofgateError {
  constructor(message: string) {
    super(message, status.FAILED_PRECONDITION);
  }
}

/** A dependency (NATS, the ledger) is not reachable right now; retrying may succeed. */
export class UnavailableError extends ProofgateError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, status.UNAVAILABLE, options);
  }
}

/** No credentials, or credentials that name no principal. */
export class UnauthenticatedError extends ProofgateError {
  constructor(message: string) {
    super(message, status.UNAUTHENTICATED);
  }
}

/** A known principal without the role the operation needs. */
export class PermissionDeniedError extends ProofgateError {
  constructor(message: string) {
    super(message, status.PERMISSION_DENIED);
  }
}

/** Out of a resource the operator must provide (disk space): retrying helps only once they have. */
export class ResourceExhaustedError extends ProofgateError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, status.RESOURCE_EXHAUSTED, options);
  }
}

/**
 * A SQLite failure of a store (`what`: "ledger", "replica") as a typed error, when it says
 * something the caller can act on; undefined otherwise (a bug, answered INTERNAL). Nothing was
 * committed when SQLite reports these, so the caller may retry once the cause is gone.
 */
export function storageError(err: unknown, what: string, outcome = "nothing was written, retry once there is space"): ProofgateError | undefined {
  if (err instanceof ProofgateError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string" || !code.startsWith("SQLITE_")) return undefined;
  const detail = `${errorMessage(err)} (${code})`;
  if (code === "SQLITE_FULL") return new ResourceExhaustedError(`${what} disk is full: ${detail}; ${outcome}`, { cause: err });
  if (code.startsWith("SQLITE_IOERR") || code.startsWith("SQLITE_READONLY") || code.startsWith("SQLITE_CANTOPEN"))
    return new UnavailableError(`${what} cannot be written: ${detail}; ${outcome}`, { cause: err });
  return undefined;
}

export class DeadlineExceededError extends ProofgateError {
  constructor(message: string) {
    super(message, status.DEADLINE_EXCEEDED);
  }
}

/** Input echoed in an error or a log line, bounded: `"abc"`, or its first bytes and its size when long. */
export function quote(value: string, max = 64): string {
  if (value.length <= max) return JSON.stringify(value);
  return `${JSON.stringify(value.slice(0, max))}… (${Buffer.byteLength(value, "utf8")} bytes)`;
}

/** At most `max` UTF-16 units of `text` (reasons and messages that may carry input), marked when cut. */
export function bounded(text: string, max = 1024): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
