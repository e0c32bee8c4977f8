import { InvalidArgumentError, quote } from "../errors/index.js";
import { isKnownEnum } from "../billing/describe.js";
import { Catalog, FeatureType, type Feature, type FeatureGrant, type FeatureValue } from "../gen/proofgate/v1/catalog.js";

const KEY = /^[a-z0-9][a-z0-9._-]{0,63}$/;
/** Plan, add-on and override ids: they appear in docs, URLs and the CLI, so a plain alphabet. */
const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const ID_RULE = "must be 1-128 of A-Z a-z 0-9 . _ : -";
/** A STRING feature's value, granted by a plan, an add-on or an override. */
export const MAX_TEXT_VALUE_BYTES = 256;

/** Throws InvalidArgumentError(field, …) unless `id` is a valid plan, add-on or override id. */
export function checkCatalogId(id: string, field: string): void {
  if (!ID.test(id)) throw new InvalidArgumentError(field, `${quote(id)} ${ID_RULE}`);
}

/** Throws InvalidArgumentError(field, …) unless `value` fits `feature`'s type (and its listed values). */
export function checkFeatureValue(feature: Feature, value: FeatureValue | undefined, field: string): void {
  const v = value?.kind;
  const ok =
    (feature.type === FeatureType.FEATURE_TYPE_BOOLEAN && v?.$case === "enabled") ||
    (feature.type === FeatureType.FEATURE_TYPE_NUMERIC && v?.$case === "limit" && Number.isSafeInteger(v.value) && v.value >= 0) ||
    (feature.type === FeatureType.FEATURE_TYPE_STRING && v?.$case === "text");
  if (!ok) throw new InvalidArgumentError(field, `${quote(feature.key)} needs a ${typeWord(feature.type)} value`);
  if (v.$case !== "text") return;
  if (feature.values.length > 0 && !feature.values.includes(v.value))
    throw new InvalidArgumentError(field, `${quote(v.value)} is not one of ${feature.values.join(", ")}`);
  const bytes = Buffer.byteLength(v.value, "utf8");
  if (bytes > MAX_TEXT_VALUE_BYTES) throw new InvalidArgumentError(field, `${bytes} bytes, above the limit of ${MAX_TEXT_VALUE_BYTES} bytes`);
}

/**
 * A catalog rides the state stream as one message, so it gets the bound a document gets
 * (--max-document-bytes): one that could not be replicated is never applied.
 */
export function checkCatalogSize(catalog: Catalog, maxBytes: number, field: string): void {
  const bytes = Catalog.encode(catalog).finish().length;
  if (bytes > maxBytes) throw new InvalidArgumentError(field, `${bytes} bytes encoded, above the limit of ${maxBytes} (--max-document-bytes)`);
}

/** Throws InvalidArgumentError naming the first offending field, e.g. `plans[1].features[0].value`. */
export function validateCatalog(catalog: Catalog): void {
  const features = new Map<string, Feature>();
  catalog.features.forEach((f, i) => {
    const at = `features[${i}]`;
    if (!KEY.test(f.key)) throw new InvalidArgumentError(`${at}.key`, `${quote(f.key)} must be 1-64 of a-z 0-9 . _ - starting with a letter or digit`);
    if (features.has(f.key)) throw new InvalidArgumentError(`${at}.key`, `duplicate feature "${f.key}"`);
    if (!isKnownEnum(FeatureType, f.type))
      throw new InvalidArgumentError(`${at}.type`, `feature "${f.key}" needs a type: boolean, numeric or string`);
    if (f.perUnit && f.type !== FeatureType.FEATURE_TYPE_NUMERIC)
      throw new InvalidArgumentError(`${at}.per_unit`, `only numeric features can be per_unit ("${f.key}")`);
    if (f.values.length > 0 && f.type !== FeatureType.FEATURE_TYPE_STRING)
      throw new InvalidArgumentError(`${at}.values`, `only string features have values ("${f.key}")`);
    if (new Set(f.values).size !== f.values.length) throw new InvalidArgumentError(`${at}.values`, `duplicate value in "${f.key}"`);
    f.values.forEach((v, j) => {
      const bytes = Buffer.byteLength(v, "utf8");
      if (bytes > MAX_TEXT_VALUE_BYTES) throw new InvalidArgumentError(`${at}.values[${j}]`, `${bytes} bytes, above the limit of ${MAX_TEXT_VALUE_BYTES} bytes`);
    });
    features.set(f.key, f);
  });
  const checkGrants = (at: string, grants: FeatureGrant[]): void => {
    const seen = new Set<string>();
    grants.forEach((g, j) => {
      const gat = `${at}.features[${j}]`;
      const feature = features.get(g.feature);
      if (feature === undefined) throw new InvalidArgumentError(`${gat}.feature`, `unknown feature ${quote(g.feature)}`);
      if (seen.has(g.feature)) throw new InvalidArgumentError(`${gat}.feature`, `feature "${g.feature}" listed twice`);
      seen.add(g.feature);
      checkFeatureValue(feature, g.value, `${gat}.value`);
    });
  };
  const ids = (what: "plans" | "addons"): void => {
    const seen = new Set<string>();
    catalog[what].forEach((p, i) => {
      checkCatalogId(p.id, `${what}[${i}].id`);
      if (seen.has(p.id)) throw new InvalidArgumentError(`${what}[${i}].id`, `duplicate id "${p.id}"`);
      seen.add(p.id);
      checkGrants(`${what}[${i}]`, p.features);
    });
  };
  ids("plans");
  ids("addons");
  const policy = catalog.policy;
  if (policy) {
    for (const k of ["gracePeriod", "coherencyWindow"] as const) {
      const d = policy[k];
      if (d && (d.seconds < 0 || d.nanos < 0)) throw new InvalidArgumentError(`policy.${snake(k)}`, "must not be negative");
    }
  }
}

export function typeWord(type: FeatureType): string {
  return type === FeatureType.FEATURE_TYPE_BOOLEAN ? "boolean" : type === FeatureType.FEATURE_TYPE_NUMERIC ? "numeric (integer >= 0)" : "string";
}

const snake = (s: string): string => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
