import { isUtf8 } from "node:buffer";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { InvalidArgumentError, bounded, quote } from "../errors/index.js";
import { BillingEvent } from "../gen/proofgate/v1/billing.js";

/**
 * A billing event from NATS: protobuf by default, canonical proto3 JSON when the
 * `Content-Type` header says `application/json`. Both are checked against the event's shape
 * before the generated decoders see them, so every problem is refused with the field it is in
 * (InvalidArgumentError) rather than coerced, folded or thrown from deep inside a decoder.
 */
export function decodeEvent(payload: Uint8Array, contentType: string | undefined): BillingEvent {
  if (contentType?.toLowerCase().startsWith("application/json")) {
    if (!isUtf8(payload)) throw new InvalidArgumentError("payload", "not valid UTF-8");
    let json: unknown;
    try {
      json = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString("utf8"));
    } catch (err) {
      throw new InvalidArgumentError("payload", `not valid JSON: ${bounded((err as Error).message, 200)}`);
    }
    checkJson(json, EVENT, "");
    return BillingEvent.fromJSON(json);
  }
  try {
    checkWire(new BinaryReader(payload), payload.length, EVENT, "");
    return BillingEvent.decode(payload);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    throw new InvalidArgumentError("payload", `not a protobuf BillingEvent (send JSON with Content-Type: application/json): ${bounded((err as Error).message, 200)}`);
  }
}

export function encodeEventJson(event: BillingEvent): string {
  return JSON.stringify(BillingEvent.toJSON(event));
}

/** One element of a repeated BillingEvent field, decoded on its own. */
export interface DecodedEvent {
  /** The event, or undefined when `error` says why it could not be decoded. */
  readonly event: BillingEvent | undefined;
  readonly error?: InvalidArgumentError;
  /** Its bytes as received. */
  readonly payload: Uint8Array;
  /** Its event_id when it could be read (for the answer), else "". */
  readonly eventId: string;
}

/** The inverse of decodeEventList: events as received, malformed ones too, as field `fieldNo` of a message. */
export function encodeEventList(payloads: readonly Uint8Array[], fieldNo: number): Uint8Array {
  const w = new BinaryWriter();
  for (const p of payloads) w.tag(fieldNo, WireType.LengthDelimited).bytes(p);
  return w.finish();
}

/**
 * The elements of field `fieldNo` (a repeated BillingEvent, e.g. IngestService's
 * PublishRequest.events) of `message`, each decoded apart, so one malformed event is refused on
 * its own while the others are applied. Throws InvalidArgumentError only when the message
 * itself cannot be split.
 */
export function decodeEventList(message: Uint8Array, fieldNo: number, field: string): DecodedEvent[] {
  const out: DecodedEvent[] = [];
  const r = new BinaryReader(message);
  try {
    while (r.pos < r.len) {
      const [no, wt] = r.tag();
      if (no !== fieldNo) {
        r.skip(wt, no);
        continue;
      }
      if (wt !== WireType.LengthDelimited) throw new InvalidArgumentError(field, "must be a repeated message");
      const payload = r.bytes();
      try {
        out.push({ event: decodeEvent(payload, undefined), payload, eventId: "" });
      } catch (err) {
        out.push({ event: undefined, error: err as InvalidArgumentError, payload, eventId: peekEventId(payload) });
      }
    }
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    throw new InvalidArgumentError(field, `not a protobuf message: ${bounded((err as Error).message, 200)}`);
  }
  for (let i = 0; i < out.length; i++) {
    const d = out[i];
    if (d?.event) out[i] = { ...d, eventId: d.event.eventId };
  }
  return out;
}

/** The event_id of an event that failed to decode, if it can be read at all. */
function peekEventId(payload: Uint8Array): string {
  try {
    const r = new BinaryReader(payload);
    let id = "";
    while (r.pos < r.len) {
      const [no, wt] = r.tag();
      if (no === 1 && wt === WireType.LengthDelimited) id = r.string();
      else r.skip(wt, no);
    }
    return bounded(id, 256);
  } catch {
    return "";
  }
}

/**
 * The event's shape, once for both decoders: each field's JSON (lowerCamel) name, its protobuf
 * field number and its type. JSON is checked before ts-proto's fromJSON, which coerces whatever it
 * is given (`{"a":1}` would become the id "[object Object]", "next week" an invalid date) and
 * ignores unknown or conflicting fields; protobuf before ts-proto's decode, which throws on an
 * int64 beyond 2^53 without saying where, folds invalid UTF-8 into U+FFFD and skips fields of
 * the wrong wire type. Proto names are accepted in JSON too, as proto3 JSON requires.
 */
type Scalar = "string" | "strings" | "time" | "int64" | "uint64" | "uint32" | "enum";
type Shape = Scalar | { readonly [key: string]: readonly [number, Shape] };

const SUBSCRIPTION: Shape = {
  status: [1, "enum"],
  planId: [2, "string"],
  addonIds: [3, "strings"],
  quantity: [4, "uint32"],
  currentPeriodStart: [5, "time"],
  currentPeriodEnd: [6, "time"],
  cancelAt: [7, "time"],
  trialEnd: [8, "time"],
  version: [9, "uint64"],
};
const PAYMENT: Shape = {
  invoiceId: [1, "string"],
  result: [2, "enum"],
  periodStart: [3, "time"],
  periodEnd: [4, "time"],
  planId: [5, "string"],
  addonIds: [6, "strings"],
  quantity: [7, "uint32"],
  session: [8, "enum"],
  amountMinor: [9, "int64"],
  currency: [10, "string"],
  failureReason: [11, "string"],
};
const RECOVERY: Shape = { invoiceId: [1, "string"], result: [2, "enum"], nextAttemptAt: [3, "time"] };
const EVENT: Shape = {
  eventId: [1, "string"],
  occurredAt: [2, "time"],
  customerId: [3, "string"],
  subscriptionId: [4, "string"],
  source: [5, "string"],
  correlationId: [6, "string"],
  subscription: [10, SUBSCRIPTION],
  payment: [11, PAYMENT],
  recovery: [12, RECOVERY],
};
const KINDS = ["subscription", "payment", "recovery"];

/** google.protobuf.Timestamp's range in seconds: 0001-01-01 to 9999-12-31. */
const MIN_SECONDS = -62_135_596_800n;
const MAX_SECONDS = 253_402_300_799n;
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

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
      const inner = shape[k]?.[1];
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
    case "int64":
    case "uint64":
    case "uint32":
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

/** Field numbers to names and shapes, per message shape. */
const byNumber = new WeakMap<object, Map<number, readonly [string, Shape]>>();
function fieldsOf(shape: { readonly [key: string]: readonly [number, Shape] }): Map<number, readonly [string, Shape]> {
  let m = byNumber.get(shape);
  if (!m) {
    m = new Map(Object.entries(shape).map(([name, [no, inner]]) => [no, [name, inner] as const]));
    byNumber.set(shape, m);
  }
  return m;
}

/** Walks one message's wire bytes (up to `end`) against its shape; throws InvalidArgumentError naming the field. */
function checkWire(r: BinaryReader, end: number, shape: Shape, at: string): void {
  if (typeof shape !== "object") return;
  const fields = fieldsOf(shape);
  let kind: string | undefined;
  while (r.pos < end) {
    const [no, wt] = r.tag();
    const f = fields.get(no);
    if (!f) {
      r.skip(wt, no); // a field from a newer schema: ignored, as proto3 requires
      continue;
    }
    const [name, inner] = f;
    const path = at ? `${at}.${name}` : name;
    const field = snake(path);
    const varint = inner === "int64" || inner === "uint64" || inner === "uint32" || inner === "enum";
    if (wt !== (varint ? WireType.Varint : WireType.LengthDelimited))
      throw new InvalidArgumentError(field, `wrong protobuf wire type ${wt} for a ${typeof inner === "object" ? "message" : inner} field`);
    if (!at && KINDS.includes(name)) {
      if (kind !== undefined && kind !== name) throw new InvalidArgumentError("kind", `only one of subscription, payment or recovery, got ${kind} and ${name}`);
      kind = name;
    }
    switch (inner) {
      case "string":
      case "strings":
        if (!isUtf8(r.bytes())) throw new InvalidArgumentError(field, "not valid UTF-8");
        break;
      case "int64":
      case "uint64": {
        const v = BigInt(inner === "int64" ? r.int64() : r.uint64());
        if (v > SAFE || v < -SAFE) throw new InvalidArgumentError(field, `must be an integer within ±2^53, got ${v}`);
        break;
      }
      case "uint32":
        r.uint32();
        break;
      case "enum":
        r.int32();
        break;
      case "time":
        checkTimestamp(r.bytes(), field);
        break;
      default: {
        const len = r.uint32();
        const stop = r.pos + len;
        if (stop > end) throw new InvalidArgumentError(field, "truncated");
        checkWire(r, stop, inner, path);
        if (r.pos !== stop) throw new InvalidArgumentError(field, "truncated");
      }
    }
  }
  if (r.pos !== end) throw new InvalidArgumentError(at ? snake(at) : "payload", "truncated");
}

/** google.protobuf.Timestamp: seconds (1, int64) within 0001..9999 and nanos (2, int32) within 0..999,999,999. */
function checkTimestamp(bytes: Uint8Array, field: string): void {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no === 1 && wt === WireType.Varint) {
      const s = BigInt(r.int64());
      if (s < MIN_SECONDS || s > MAX_SECONDS) throw new InvalidArgumentError(field, `${s} seconds is outside 0001-01-01..9999-12-31`);
    } else if (no === 2 && wt === WireType.Varint) {
      const n = r.int32();
      if (n < 0 || n > 999_999_999) throw new InvalidArgumentError(field, `nanos must be from 0 to 999999999, got ${n}`);
    } else throw new InvalidArgumentError(field, `not a google.protobuf.Timestamp (field ${no}, wire type ${wt})`);
  }
}
