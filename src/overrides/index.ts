import { checkCatalogId, checkFeatureValue, type CatalogIndex } from "../catalog/index.js";
import { InvalidArgumentError, quote } from "../errors/index.js";
import { OverrideEffect, type Override } from "../gen/proofgate/v1/document.js";

/**
 * Overrides: per-customer GRANT or DENY of a catalog feature (docs/writer.md). The rules for one
 * live here; the admin API calls them. Fields are named within the override (`effect`,
 * `value`…); the caller says where the override sits.
 */
export function validateOverride(o: Override, catalog: CatalogIndex): void {
  if (o.overrideId) checkCatalogId(o.overrideId, "override_id");
  if (o.effect !== OverrideEffect.OVERRIDE_EFFECT_GRANT && o.effect !== OverrideEffect.OVERRIDE_EFFECT_DENY)
    throw new InvalidArgumentError("effect", "must be GRANT or DENY");
  if (!o.feature) throw new InvalidArgumentError("feature", "required: a catalog feature key, or * (DENY only)");
  if (o.feature === "*") {
    if (o.effect !== OverrideEffect.OVERRIDE_EFFECT_DENY) throw new InvalidArgumentError("feature", "* (every feature) is only allowed for DENY");
  } else {
    const feature = catalog.feature(o.feature);
    if (!feature) throw new InvalidArgumentError("feature", `unknown feature ${quote(o.feature)}`);
    if (o.value?.kind) {
      if (o.effect === OverrideEffect.OVERRIDE_EFFECT_DENY) throw new InvalidArgumentError("value", "only GRANT overrides carry a value");
      checkFeatureValue(feature, o.value, "value");
    }
  }
  if (o.validFromMs < 0) throw new InvalidArgumentError("valid_from_ms", "must not be negative");
  if (o.validUntilMs < 0) throw new InvalidArgumentError("valid_until_ms", "must not be negative");
  if (o.validFromMs && o.validUntilMs && o.validUntilMs <= o.validFromMs) throw new InvalidArgumentError("valid_until_ms", "must be after valid_from_ms");
}

const iso = (ms: number): string => (Number.isFinite(ms) && Math.abs(ms) < 8.64e15 ? new Date(ms).toISOString() : String(ms));

/** One line for the audit log, e.g. "override ovr_1: GRANT seats = 10 until 2026-12-01T00:00:00.000Z". */
export function describeOverride(o: Override): string {
  const effect = o.effect === OverrideEffect.OVERRIDE_EFFECT_GRANT ? "GRANT" : "DENY";
  const v = o.value?.kind;
  const value = v ? ` = ${String(v.value)}` : "";
  const window = [o.validFromMs ? `from ${iso(o.validFromMs)}` : "", o.validUntilMs ? `until ${iso(o.validUntilMs)}` : ""].filter(Boolean).join(" ");
  return `override ${o.overrideId}: ${effect} ${o.feature}${value}${window ? ` ${window}` : ""}`;
}
