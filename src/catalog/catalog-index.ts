import {
  DisputePolicy,
  StalePolicy,
  type Catalog,
  type Feature,
  type FeatureValue,
} from "../gen/proofgate/v1/catalog.js";

/** Policy defaults when the catalog leaves a field out. */
export const DEFAULT_POLICY = {
  gracePeriodMs: 7 * 86_400_000,
  coherencyWindowMs: 10_000,
  disputePolicy: DisputePolicy.DISPUTE_POLICY_REVOKE,
  stalePolicy: StalePolicy.STALE_POLICY_SERVE,
} as const;

export const EMPTY_CATALOG: Catalog = { features: [], plans: [], addons: [], policy: undefined };

type Values = ReadonlyMap<string, FeatureValue>;
const NO_VALUES: Values = new Map();

/**
 * A catalog indexed for evaluation: built once when a catalog is applied or replicated, then
 * read on every check, so lookups are map gets and policy durations are plain milliseconds.
 * Immutable: a new catalog means a new index, swapped in one assignment.
 */
export class CatalogIndex {
  readonly featureKeys: readonly string[];
  readonly gracePeriodMs: number;
  readonly coherencyWindowMs: number;
  readonly disputePolicy: DisputePolicy;
  readonly stalePolicy: StalePolicy;
  private readonly features: ReadonlyMap<string, Feature>;
  private readonly plans: ReadonlyMap<string, Values>;
  private readonly addons: ReadonlyMap<string, Values>;
  private readonly stringRanks: ReadonlyMap<string, ReadonlyMap<string, number>>;

  private constructor(readonly catalog: Catalog) {
    this.features = new Map(catalog.features.map((f) => [f.key, f]));
    this.featureKeys = [...this.features.keys()].sort();
    const grants = (items: { id: string; features: { feature: string; value: FeatureValue | undefined }[] }[]) =>
      new Map(items.map((p) => [p.id, new Map(p.features.flatMap((g) => (g.value ? [[g.feature, g.value] as const] : [])))]));
    this.plans = grants(catalog.plans);
    this.addons = grants(catalog.addons);
    this.stringRanks = new Map(
      catalog.features.filter((f) => f.values.length > 0).map((f) => [f.key, new Map(f.values.map((v, i) => [v, i]))]),
    );
    const p = catalog.policy;
    this.gracePeriodMs = p?.gracePeriod ? durationMs(p.gracePeriod) : DEFAULT_POLICY.gracePeriodMs;
    this.coherencyWindowMs = p?.coherencyWindow ? durationMs(p.coherencyWindow) : DEFAULT_POLICY.coherencyWindowMs;
    this.disputePolicy = p?.disputePolicy || DEFAULT_POLICY.disputePolicy;
    this.stalePolicy = p?.stalePolicy || DEFAULT_POLICY.stalePolicy;
  }

  /** Assumes a validated catalog (see `validateCatalog`). */
  static from(catalog: Catalog): CatalogIndex {
    return new CatalogIndex(catalog);
  }

  static empty(): CatalogIndex {
    return new CatalogIndex(EMPTY_CATALOG);
  }

  feature(key: string): Feature | undefined {
    return this.features.get(key);
  }

  hasPlan(id: string): boolean {
    return this.plans.has(id);
  }

  hasAddon(id: string): boolean {
    return this.addons.has(id);
  }

  planValue(planId: string, feature: string): FeatureValue | undefined {
    return (this.plans.get(planId) ?? NO_VALUES).get(feature);
  }

  addonValue(addonId: string, feature: string): FeatureValue | undefined {
    return (this.addons.get(addonId) ?? NO_VALUES).get(feature);
  }

  /** Position of a string value in the feature's declared order, or undefined without one. */
  stringRank(feature: string, value: string): number | undefined {
    return this.stringRanks.get(feature)?.get(value);
  }
}

export function durationMs(d: { seconds: number; nanos: number }): number {
  return d.seconds * 1000 + Math.round(d.nanos / 1e6);
}

export function msDuration(ms: number): { seconds: number; nanos: number } {
  return { seconds: Math.trunc(ms / 1000), nanos: (ms % 1000) * 1e6 };
}
