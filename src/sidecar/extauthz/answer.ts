import { status as grpcStatus } from "@grpc/grpc-js";
import { AccessStatus, type CheckResponse as Decision } from "../../gen/proofgate/v1/check.js";
import { statusName } from "../../policy/decision.js";
import type { CheckResponse, HeaderValueOption } from "./envoy.js";

/**
 * How a decision becomes Envoy's answer: the one home of the HTTP mapping (docs/ext-authz.md has
 * the table). Allowed: OK with `x-proofgate-*` headers for the upstream. Denied: an HTTP
 * response Envoy sends to the caller, with a small JSON body and the same headers.
 */

/** `envoy.type.v3.StatusCode` names of the codes used, and their numbers. */
export const HTTP = {
  BadRequest: 400,
  Unauthorized: 401,
  PaymentRequired: 402,
  Forbidden: 403,
  TooManyRequests: 429,
  ServiceUnavailable: 503,
} as const;
export type HttpCode = keyof typeof HTTP;

/** Every header this package sets; any of them arriving from the caller is removed before the upstream sees it. */
export const PROOFGATE_HEADERS = [
  "x-proofgate-status",
  "x-proofgate-valid-until",
  "x-proofgate-value",
  "x-proofgate-limit",
  "x-proofgate-stale",
  "x-proofgate-customer-id",
] as const;

/** The HTTP status of a denial. */
export function httpCodeFor(d: Decision): HttpCode {
  switch (d.status) {
    case AccessStatus.ACCESS_STATUS_PAYMENT_REQUIRED:
    case AccessStatus.ACCESS_STATUS_PAYMENT_PENDING:
      return "PaymentRequired";
    case AccessStatus.ACCESS_STATUS_LIMIT_EXCEEDED:
      return "TooManyRequests";
    case AccessStatus.ACCESS_STATUS_GRANTED:
    case AccessStatus.ACCESS_STATUS_GRACE_PERIOD:
      // Denied only by stale_policy: deny. Nothing is wrong with the caller's entitlement; the sidecar cannot vouch for it now.
      return "ServiceUnavailable";
    default:
      return "Forbidden";
  }
}

const header = (key: string, value: string): HeaderValueOption => ({ header: { key, value }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" });

function decisionHeaders(d: Decision): HeaderValueOption[] {
  const h = [header("x-proofgate-status", statusName(d.status)), header("x-proofgate-stale", d.stale ? "true" : "false")];
  if (d.validUntil) h.push(header("x-proofgate-valid-until", d.validUntil.toISOString()));
  if (d.value !== "") h.push(header("x-proofgate-value", d.value));
  if (d.limit !== undefined) h.push(header("x-proofgate-limit", String(d.limit)));
  return h;
}

function ok(headers: HeaderValueOption[]): CheckResponse {
  const set = new Set(headers.map((h) => h.header.key));
  return {
    status: { code: grpcStatus.OK, message: "" },
    ok_response: { headers, headers_to_remove: PROOFGATE_HEADERS.filter((k) => !set.has(k)) },
  };
}

/** A denial Envoy answers the caller with: `{"allowed": false, "status": ..., "reason": ..., ...}`. */
export function denied(code: HttpCode, body: { status: string; reason: string } & Record<string, unknown>, headers: HeaderValueOption[] = [], extra: HeaderValueOption[] = []): CheckResponse {
  return {
    status: { code: code === "Unauthorized" ? grpcStatus.UNAUTHENTICATED : code === "BadRequest" ? grpcStatus.INVALID_ARGUMENT : grpcStatus.PERMISSION_DENIED, message: body.reason },
    denied_response: {
      status: { code },
      headers: [...headers, ...extra, header("content-type", "application/json")],
      body: JSON.stringify({ allowed: false, ...body }),
    },
  };
}

/** The answer to an evaluated request. */
export function answer(d: Decision, feature: string, customerId: string): CheckResponse {
  if (d.allowed) return ok([...decisionHeaders(d), header("x-proofgate-customer-id", customerId)]);
  return denied(
    httpCodeFor(d),
    {
      status: statusName(d.status),
      reason: d.reason,
      feature,
      ...(d.validUntil ? { valid_until: d.validUntil.toISOString() } : {}),
      ...(d.limit === undefined ? {} : { limit: d.limit }),
      stale: d.stale,
    },
    decisionHeaders(d),
  );
}

/** No rule matched and the default is allow: pass, minus any `x-proofgate-*` header the caller sent. */
export function allowUnmatched(): CheckResponse {
  return ok([]);
}

/** 401: no customer identity. With a bearer token scheme, a `WWW-Authenticate` challenge (RFC 6750). */
export function unauthenticated(reason: string, scheme: "Bearer" | undefined, feature: string): CheckResponse {
  const challenge = scheme ? [header("www-authenticate", `Bearer error="invalid_token", error_description="${reason.replace(/["\\]/g, "'")}"`)] : [];
  return denied("Unauthorized", { status: "UNAUTHENTICATED", reason, feature }, [header("x-proofgate-status", "UNAUTHENTICATED")], challenge);
}

export function badRequest(reason: string, feature: string): CheckResponse {
  return denied("BadRequest", { status: "BAD_REQUEST", reason, feature }, [header("x-proofgate-status", "BAD_REQUEST")]);
}

export function noRule(reason: string): CheckResponse {
  return denied("Forbidden", { status: "NO_MATCHING_RULE", reason }, [header("x-proofgate-status", "NO_MATCHING_RULE")]);
}
