import { InvalidArgumentError } from "../errors/index.js";

/**
 * The rule for every id proofgate stores or looks up (customer, subscription, event, invoice,
 * plan, add-on and override ids): non-empty, at most MAX_ID_BYTES of UTF-8, and free of U+FFFD.
 * Writer, admin API, sidecar Check and ext_authz all apply this one rule, so an id accepted at one
 * door is never refused at another. docs/writer.md, "Limits".
 */
export const MAX_ID_BYTES = 256;

/**
 * What is wrong with an id, or undefined. Decoders replace invalid UTF-8 with U+FFFD, which would
 * fold distinct ids into one, so an id holding U+FFFD is refused rather than guessed at.
 */
export function idProblem(v: string, empty = "required"): string | undefined {
  if (v === "") return empty;
  const bytes = utf8Over(v, MAX_ID_BYTES);
  if (bytes !== undefined) return `${bytes} bytes, above the limit of ${MAX_ID_BYTES} bytes`;
  if (v.includes("\uFFFD")) return "not valid UTF-8";
  return undefined;
}

/** Throws InvalidArgumentError(field, …) unless `v` is a valid id. */
export function checkId(v: string, field: string, empty = "required"): void {
  if (typeof v !== "string") throw new InvalidArgumentError(field, "must be a string");
  const problem = idProblem(v, empty);
  if (problem !== undefined) throw new InvalidArgumentError(field, problem);
}

/** A string field within `max` UTF-8 bytes. */
export function checkText(v: string, field: string, max: number): void {
  if (typeof v !== "string") throw new InvalidArgumentError(field, "must be a string");
  const bytes = utf8Over(v, max);
  if (bytes !== undefined) throw new InvalidArgumentError(field, `${bytes} bytes, above the limit of ${max} bytes`);
}

/** The UTF-8 size of `v` when above `max`; computed only when it could be (3 bytes per UTF-16 unit at most). */
function utf8Over(v: string, max: number): number | undefined {
  if (v.length * 3 <= max) return undefined;
  const bytes = Buffer.byteLength(v, "utf8");
  return bytes > max ? bytes : undefined;
}
