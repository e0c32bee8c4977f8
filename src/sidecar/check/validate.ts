import { checkId } from "../../billing/ids.js";
import { InvalidArgumentError } from "../../errors/index.js";
import type { CheckRequest } from "../../gen/proofgate/v1/check.js";

export const MAX_FEATURE_BYTES = 256;
export const MAX_BATCH = 1_000;

/** UTF-8 length, computed only when the string could be over the limit (3 bytes per UTF-16 unit at most). */
function tooLong(s: string, maxBytes: number): number | undefined {
  if (s.length * 3 <= maxBytes) return undefined;
  const bytes = Buffer.byteLength(s, "utf8");
  return bytes > maxBytes ? bytes : undefined;
}

/** The writer's id rule (billing/ids.ts): an id it would refuse names no customer. */
export function validateCustomerId(id: string, field: string): void {
  checkId(id, field);
}

/** Throws InvalidArgumentError naming the field (with `prefix`, e.g. `checks[3].`). */
export function validateCheck(req: CheckRequest, prefix: string): void {
  validateCustomerId(req.customerId, `${prefix}customer_id`);
  if (req.feature === "") throw new InvalidArgumentError(`${prefix}feature`, "required");
  const bytes = tooLong(req.feature, MAX_FEATURE_BYTES);
  if (bytes !== undefined) throw new InvalidArgumentError(`${prefix}feature`, `must be at most ${MAX_FEATURE_BYTES} bytes, got ${bytes}`);
  if (req.quantity !== undefined && req.quantity < 0) throw new InvalidArgumentError(`${prefix}quantity`, `must be >= 0, got ${req.quantity}`);
}
