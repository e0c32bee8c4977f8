import { parse, stringify } from "yaml";
import { InvalidArgumentError } from "../errors/index.js";
import { parseDuration } from "../config/duration.js";
import {
  DisputePolicy,
  FeatureType,
  StalePolicy,
  type Catalog,
  type FeatureGrant,
  type FeatureValue,
} from "../gen/proofgate/v1/catalog.js";
import { enumLabel } from "../billing/describe.js";
import { durationMs, msDuration } from "./catalog-index.js";
import { validateCatalog } from "./validate.js";

/**
 * The catalog file: YAML or JSON (JSON is YAML), written for humans. Plans and add-ons list
 * feature values as a map; durations read like `7d` or `36h`. See examples/catalog.yaml.
 * The result is validated; errors name the field as it appears in the file.
 */
export function parseCatalogText(text: string): Catalog {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new InvalidArgumentError("catalog", `not valid YAML or JSON: ${(err as Error).message}`);
  }
  const root = record(doc, "catalog");
  const features = list(root["features"], "features").map((raw, i) => {
    const f = record(raw, `features[${i}]`);
    return {
      key: str(f["key"], `features[${i}].key`),
      type: enumOf(f["type"], `features[${i}].type`, { boolean: FeatureType.FEATURE_TYPE_BOOLEAN, numeric: FeatureType.FEATURE_TYPE_NUMERIC, string: FeatureType.FEATURE_TYPE_STRING }),
      perUnit: f["per_unit"] === undefined ? false : bool(f["per_unit"], `features[${i}].per_unit`),
      values: f["values"] === undefined ? [] : list(f["values"], `features[${i}].values`).map((v, j) => str(v, `features[${i}].values[${j}]`)),
      description: f["description"] === undefined ? "" : str(f["description"], `features[${i}].description`),
    };
  });
  const items = (what: "plans" | "addons") =>
    list(root[what] ?? [], what).map((raw, i) => {
      const p = record(raw, `${what}[${i}]`);
      const values = record(p["features"] ?? {}, `${what}[${i}].features`);
      return {
        id: str(p["id"], `${what}[${i}].id`),
        name: p["name"] === undefined ? "" : str(p["name"], `${what}[${i}].name`),
        features: Object.entries(values).map(([feature, v]): FeatureGrant => ({ feature, value: featureValue(v, `${what}[${i}].features.${feature}`) })),
      };
    });
  const policyRaw = root["policy"] === undefined ? {} : record(root["policy"], "policy");
  const dur = (k: string) => {
    const v = policyRaw[k];
    if (v === undefined) return undefined;
    if (typeof v !== "string" && typeof v !== "number") throw new InvalidArgumentError(`policy.${k}`, "must be a duration like 7d or 36h");
    return msDuration(parseDuration(String(v), `policy.${k}`));
  };
  const catalog: Catalog = {
    features,
    plans: items("plans"),
    addons: items("addons"),
    policy: {
      gracePeriod: dur("grace_period"),
      coherencyWindow: dur("coherency_window"),
      disputePolicy:
        policyRaw["dispute_policy"] === undefined
          ? DisputePolicy.DISPUTE_POLICY_UNSPECIFIED
          : enumOf(policyRaw["dispute_policy"], "policy.dispute_policy", { revoke: DisputePolicy.DISPUTE_POLICY_REVOKE, keep_until_lost: DisputePolicy.DISPUTE_POLICY_KEEP_UNTIL_LOST }),
      stalePolicy:
        policyRaw["stale_policy"] === undefined
          ? StalePolicy.STALE_POLICY_UNSPECIFIED
          : enumOf(policyRaw["stale_policy"], "policy.stale_policy", { serve: StalePolicy.STALE_POLICY_SERVE, deny: StalePolicy.STALE_POLICY_DENY }),
    },
  };
  validateCatalog(catalog);
  return catalog;
}

/** The inverse of `parseCatalogText`, for `GetCatalog` output and round trips. */
export function catalogToText(catalog: Catalog): string {
  const name = (t: FeatureType): string => enumLabel(FeatureType, t, "FEATURE_TYPE_").toLowerCase();
  const plain = (v: FeatureValue | undefined) => (v?.kind ? v.kind.value : null);
  const items = (xs: Catalog["plans"]) => xs.map((p) => ({ id: p.id, ...(p.name ? { name: p.name } : {}), features: Object.fromEntries(p.features.map((g) => [g.feature, plain(g.value)])) }));
  const p = catalog.policy;
  const human = (d: { seconds: number; nanos: number } | undefined) => (d ? `${durationMs(d)}ms` : undefined);
  return stringify({
    features: catalog.features.map((f) => ({
      key: f.key,
      type: name(f.type),
      ...(f.perUnit ? { per_unit: true } : {}),
      ...(f.values.length ? { values: f.values } : {}),
      ...(f.description ? { description: f.description } : {}),
    })),
    plans: items(catalog.plans),
    addons: items(catalog.addons),
    policy: {
      ...(human(p?.gracePeriod) ? { grace_period: human(p?.gracePeriod) } : {}),
      ...(human(p?.coherencyWindow) ? { coherency_window: human(p?.coherencyWindow) } : {}),
      ...(p?.disputePolicy === DisputePolicy.DISPUTE_POLICY_KEEP_UNTIL_LOST ? { dispute_policy: "keep_until_lost" } : p?.disputePolicy ? { dispute_policy: "revoke" } : {}),
      ...(p?.stalePolicy === StalePolicy.STALE_POLICY_DENY ? { stale_policy: "deny" } : p?.stalePolicy ? { stale_policy: "serve" } : {}),
    },
  });
}

function featureValue(v: unknown, at: string): FeatureValue {
  if (typeof v === "boolean") return { kind: { $case: "enabled", value: v } };
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v) || v < 0) throw new InvalidArgumentError(at, `limit must be an integer >= 0, got ${v}`);
    return { kind: { $case: "limit", value: v } };
  }
  if (typeof v === "string") return { kind: { $case: "text", value: v } };
  throw new InvalidArgumentError(at, "must be true/false, a number or a string");
}

function record(v: unknown, at: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new InvalidArgumentError(at, "must be a mapping");
  return v as Record<string, unknown>;
}
function list(v: unknown, at: string): unknown[] {
  if (!Array.isArray(v)) throw new InvalidArgumentError(at, "must be a list");
  return v;
}
function str(v: unknown, at: string): string {
  if (typeof v !== "string" || v === "") throw new InvalidArgumentError(at, "must be a non-empty string");
  return v;
}
function bool(v: unknown, at: string): boolean {
  if (typeof v !== "boolean") throw new InvalidArgumentError(at, "must be true or false");
  return v;
}
function enumOf<T>(v: unknown, at: string, values: Record<string, T>): T {
  const hit = typeof v === "string" ? values[v] : undefined;
  if (hit === undefined) throw new InvalidArgumentError(at, `must be one of ${Object.keys(values).join(", ")}, got ${JSON.stringify(v)}`);
  return hit;
}
