import { InvalidArgumentError, quote } from "../errors/index.js";
import { isKnownEnum } from "../billing/describe.js";
import { FeatureType, type Catalog, type FeatureGrant } from "../gen/proofgate/v1/catalog.js";

const KEY = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/** Throws InvalidArgumentError naming the first offending field, e.g. `plans[1].features[0].value`. */
export function validateCatalog(catalog: Catalog): void {
  const types = new Map<string, FeatureType>();
  catalog.features.forEach((f, i) => {
    const at = `features[${i}]`;
    if (!KEY.test(f.key)) throw new InvalidArgumentError(`${at}.key`, `${quote(f.key)} must be 1-64 of a-z 0-9 . _ - starting with a letter or digit`);
    if (types.has(f.key)) throw new InvalidArgumentError(`${at}.key`, `duplicate feature "${f.key}"`);
    if (!isKnownEnum(FeatureType, f.type))
      throw new InvalidArgumentError(`${at}.type`, `feature "${f.key}" needs a type: boolean, numeric or string`);
    if (f.perUnit && f.type !== FeatureType.FEATURE_TYPE_NUMERIC)
      throw new InvalidArgumentError(`${at}.per_unit`, `only numeric features can be per_unit ("${f.key}")`);
    if (f.values.length > 0 && f.type !== FeatureType.FEATURE_TYPE_STRING)
      throw new InvalidArgumentError(`${at}.values`, `only string features have values ("${f.key}")`);
    if (new Set(f.values).size !== f.values.length) throw new InvalidArgumentError(`${at}.values`, `duplicate value in "${f.key}"`);
    types.set(f.key, f.type);
  });
  const checkGrants = (at: string, grants: FeatureGrant[]): void => {
    const seen = new Set<string>();
    grants.forEach((g, j) => {
      const gat = `${at}.features[${j}]`;
      const type = types.get(g.feature);
      if (type === undefined) throw new InvalidArgumentError(`${gat}.feature`, `unknown feature ${quote(g.feature)}`);
      if (seen.has(g.feature)) throw new InvalidArgumentError(`${gat}.feature`, `feature "${g.feature}" listed twice`);
      seen.add(g.feature);
      const v = g.value?.kind;
      const ok =
        (type === FeatureType.FEATURE_TYPE_BOOLEAN && v?.$case === "enabled") ||
        (type === FeatureType.FEATURE_TYPE_NUMERIC && v?.$case === "limit" && Number.isSafeInteger(v.value) && v.value >= 0) ||
        (type === FeatureType.FEATURE_TYPE_STRING && v?.$case === "text");
      if (!ok) throw new InvalidArgumentError(`${gat}.value`, `"${g.feature}" needs a ${typeWord(type)} value`);
      if (v.$case === "text") {
        const allowed = catalog.features.find((f) => f.key === g.feature)?.values ?? [];
        if (allowed.length > 0 && !allowed.includes(v.value))
          throw new InvalidArgumentError(`${gat}.value`, `${quote(v.value)} is not one of ${allowed.join(", ")}`);
      }
    });
  };
  const ids = (what: "plans" | "addons"): void => {
    const seen = new Set<string>();
    catalog[what].forEach((p, i) => {
      if (!ID.test(p.id)) throw new InvalidArgumentError(`${what}[${i}].id`, `${quote(p.id)} must be 1-128 of A-Z a-z 0-9 . _ : -`);
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
