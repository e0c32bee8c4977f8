import { InvalidArgumentError, quote } from "../errors/index.js";
import { BillingEvent } from "../gen/proofgate/v1/billing.js";

/**
 * A billing event from NATS: protobuf by default, canonical proto3 JSON when the
 * `Content-Type` header says `application/json`. Throws InvalidArgumentError("payload", …).
 */
export function decodeEvent(payload: Uint8Array, contentType: string | undefined): BillingEvent {
  if (contentType?.toLowerCase().startsWith("application/json")) {
    let json: unknown;
    try {
      json = JSON.parse(Buffer.from(payload).toString("utf8"));
    } catch (err) {
      throw new InvalidArgumentError("payload", `not valid JSON: ${(err as Error).message}`);
    }
    checkJson(json, EVENT, "");
    return BillingEvent.fromJSON(json);
  }
  try {
    return BillingEvent.decode(payload);
  } catch (err) {
    throw new InvalidArgumentError("payload", `not a protobuf BillingEvent (send JSON with Content-Type: application/json): ${(err as Error).message}`);
  }
}

export function encodeEventJson(event: BillingEvent): string {
  return JSON.stringify(BillingEvent.toJSON(event));
}

/**
 * The canonical JSON's shape, checked before ts-proto's fromJSON, which coerces whatever it is
 * given (`{"a":1}` would become the id "[object Object]", "next week" an invalid date) and
 * ignores unknown or conflicting fields. Keys are the JSON (lowerCamel) names; proto names are
 * accepted too, as proto3 JSON requires.
 */
type Shape = "string" | "strings" | "time" | "integer" | "enum" | { readonly [key: string]: Shape };

const SUBSCRIPTION: Shape = {
  status: "enum",
  planId: "string",
  addonIds: "strings",
  quantity: "integer",
  currentPeriodStart: "time",
  currentPeriodEnd: "time",
  cancelAt: "time",
  trialEnd: "time",
  version: "integer",
};
const PAYMENT: Shape = {
  invoiceId: "string",
  result: "enum",
  periodStart: "time",
  periodEnd: "time",
  planId: "string",
  addonIds: "strings",
  quantity: "integer",
  session: "enum",
  amountMinor: "integer",
  currency: "string",
  failureReason: "string",
};
const RECOVERY: Shape = { invoiceId: "string", result: "enum", nextAttemptAt: "time" };
const EVENT: Shape = {
  eventId: "string",
  occurredAt: "time",
  customerId: "string",
  subscriptionId: "string",
  source: "string",
  correlationId: "string",
  subscription: SUBSCRIPTION,
  payment: PAYMENT,
  recovery: RECOVERY,
};
const KINDS = ["subscription", "payment", "recovery"];

/** RFC 3339, as proto3 JSON requires for a Timestamp (Date.parse alone accepts far more). */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/i;
const INTEGER = /^-?\d{1,20}$/;

const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const camel = (k: string): string => k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

function checkJson(value: unknown, shape: Shape, at: string): void {
  const name = (k: string): string => (at ? `${at}.${k}` : k);
  if (typeof shape === "object") {
    if (typeof value !== "object" || value === null || Array.isArray(value))
      throw new InvalidArgumentError(at ? snake(at) : "payload", "must be a JSON object");
    const seen = new Set<string>();
    for (const [raw, v] of Object.entries(value)) {
      const k = camel(raw);
      const inner = shape[k];
      if (inner === undefined) throw new InvalidArgumentError(at ? snake(at) : "payload", `unknown field ${quote(raw)}`);
      if (seen.has(k)) throw new InvalidArgumentError(snake(name(k)), "given twice (JSON and proto names)");
      seen.add(k);
      if (v === null) continue;
      checkJson(v, inner, name(k));
    }
    if (!at) {
      const kinds = KINDS.filter((k) => seen.has(k) && (value as Record<string, unknown>)[k] !== null);
      if (kinds.length > 1) throw new InvalidArgumentError("kind", `only one of subscription, payment or recovery, got ${kinds.join(" and ")}`);
    }
    return;
  }
  const f = snake(at);
  switch (shape) {
    case "string":
      if (typeof value !== "string") throw new InvalidArgumentError(f, `must be a string, got ${jsonType(value)}`);
      return;
    case "strings":
      if (!Array.isArray(value)) throw new InvalidArgumentError(f, `must be an array of strings, got ${jsonType(value)}`);
      value.forEach((v, i) => {
        if (typeof v !== "string") throw new InvalidArgumentError(`${f}[${i}]`, `must be a string, got ${jsonType(v)}`);
      });
      return;
    case "time":
      if (typeof value !== "string" || !RFC3339.test(value) || Number.isNaN(Date.parse(value)))
        throw new InvalidArgumentError(f, `must be an RFC 3339 timestamp such as "2026-11-21T10:00:00Z", got ${typeof value === "string" ? quote(value) : jsonType(value)}`);
      return;
    case "integer":
      if (typeof value === "number" ? !Number.isSafeInteger(value) : typeof value !== "string" || !INTEGER.test(value) || !Number.isSafeInteger(Number(value)))
        throw new InvalidArgumentError(f, `must be an integer within ±2^53, got ${typeof value === "string" ? quote(value) : jsonType(value)}`);
      return;
    case "enum":
      if (typeof value !== "string" && !Number.isInteger(value)) throw new InvalidArgumentError(f, `must be an enum name, got ${jsonType(value)}`);
      return;
  }
}

function jsonType(v: unknown): string {
  if (Array.isArray(v)) return "an array";
  if (v === null) return "null";
  if (typeof v === "object") return "an object";
  if (typeof v === "string") return quote(v);
  return JSON.stringify(v);
}
