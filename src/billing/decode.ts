import { InvalidArgumentError } from "../errors/index.js";
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
    if (typeof json !== "object" || json === null || Array.isArray(json)) throw new InvalidArgumentError("payload", "JSON event must be an object");
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
