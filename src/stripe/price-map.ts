import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { InvalidArgumentError, errorMessage } from "../errors/index.js";
import type { Metadata } from "./objects.js";

/** What a Stripe price stands for in the catalog. `ignore` marks prices that grant nothing (usage fees, setup fees). */
export type PriceRole = { readonly kind: "plan"; readonly id: string } | { readonly kind: "addon"; readonly id: string } | { readonly kind: "ignore" };

/**
 * Which proofgate plan or add-on each Stripe price stands for. Keys are Stripe price ids
 * (`price_...`), lookup keys, or product ids (`prod_...`); see docs/stripe.md.
 *
 * File form (YAML or JSON):
 * ```yaml
 * plans:
 *   premium: [price_1PremiumMonthly, premium_yearly]   # price ids or lookup keys
 *   enterprise: [prod_Enterprise]                      # or a product: all its prices
 * addons:
 *   ai-assistant: [ai_assistant_monthly]
 * ignore: [price_1SetupFee]                            # lines that grant nothing
 * ```
 */
export interface PriceMapSpec {
  readonly plans?: Readonly<Record<string, readonly string[]>>;
  readonly addons?: Readonly<Record<string, readonly string[]>>;
  readonly ignore?: readonly string[];
}

/** Metadata keys on a Stripe price (or an expanded product) that name the plan or add-on directly. */
export const METADATA_PLAN = "proofgate_plan";
export const METADATA_ADDON = "proofgate_addon";
/** Set to "true" on prices that grant nothing. */
export const METADATA_IGNORE = "proofgate_ignore";

/** What is known about a price at one place in a Stripe object; only `priceId` is always there. */
export interface PriceRef {
  readonly priceId: string | undefined;
  readonly lookupKey?: string | null | undefined;
  readonly metadata?: Metadata;
  readonly productId?: string | undefined;
  readonly productMetadata?: Metadata;
}

export class PriceMap {
  private constructor(private readonly byKey: ReadonlyMap<string, PriceRole>) {}

  static readonly EMPTY = new PriceMap(new Map());

  /** Validates a spec; throws InvalidArgumentError naming the offending entry. */
  static from(input: unknown, at = "price map"): PriceMap {
    if (typeof input !== "object" || input === null || Array.isArray(input)) throw new InvalidArgumentError(at, "must be an object with plans, addons and ignore");
    const spec = input as Record<string, unknown>;
    const byKey = new Map<string, PriceRole>();
    const add = (key: unknown, role: PriceRole, field: string): void => {
      if (typeof key !== "string" || key.length === 0) throw new InvalidArgumentError(`${at}: ${field}`, "must be a non-empty string (a price id, lookup key or product id)");
      const seen = byKey.get(key);
      if (seen && describeRole(seen) !== describeRole(role))
        throw new InvalidArgumentError(`${at}: ${field}`, `"${key}" is already mapped to ${describeRole(seen)}`);
      byKey.set(key, role);
    };
    for (const k of Object.keys(spec)) {
      if (k !== "plans" && k !== "addons" && k !== "ignore") throw new InvalidArgumentError(`${at}: ${k}`, "unknown key (expected plans, addons, ignore)");
    }
    for (const kind of ["plans", "addons"] as const) {
      const group = spec[kind];
      if (group === undefined) continue;
      if (typeof group !== "object" || group === null || Array.isArray(group)) throw new InvalidArgumentError(`${at}: ${kind}`, "must map ids to lists of prices");
      for (const [id, keys] of Object.entries(group)) {
        if (!id) throw new InvalidArgumentError(`${at}: ${kind}`, "ids must not be empty");
        const list: unknown[] = Array.isArray(keys) ? keys : [keys];
        list.forEach((key, i) => {
          add(key, { kind: kind === "plans" ? "plan" : "addon", id }, `${kind}.${id}[${i}]`);
        });
      }
    }
    const ignore = spec["ignore"];
    if (ignore !== undefined) {
      if (!Array.isArray(ignore)) throw new InvalidArgumentError(`${at}: ignore`, "must be a list of prices");
      ignore.forEach((key: unknown, i) => {
        add(key, { kind: "ignore" }, `ignore[${i}]`);
      });
    }
    return new PriceMap(byKey);
  }

  /** Parses YAML or JSON text (JSON is YAML). */
  static parse(text: string, at = "price map"): PriceMap {
    let spec: unknown;
    try {
      spec = parseYaml(text);
    } catch (err) {
      throw new InvalidArgumentError(at, `not valid YAML or JSON: ${errorMessage(err)}`);
    }
    return PriceMap.from(spec ?? {}, at);
  }

  /**
   * The `--stripe-price-map` option: a path to a YAML/JSON file, or the map inline (a value
   * starting with `{`), or "" for none (metadata on the prices alone).
   */
  static load(option: string): PriceMap {
    const trimmed = option.trim();
    if (!trimmed) return PriceMap.EMPTY;
    if (trimmed.startsWith("{")) return PriceMap.parse(trimmed, "stripe-price-map (inline)");
    let text: string;
    try {
      text = readFileSync(trimmed, "utf8");
    } catch (err) {
      throw new InvalidArgumentError("stripe-price-map", `cannot read ${trimmed}: ${errorMessage(err)}`);
    }
    return PriceMap.parse(text, trimmed);
  }

  get size(): number {
    return this.byKey.size;
  }

  /**
   * The role of a price, first match wins: the map by price id, by lookup key, the price's
   * metadata, the map by product id, the (expanded) product's metadata. Undefined when nothing
   * says; the caller may still know it from an earlier event (see links.ts).
   */
  resolve(ref: PriceRef): PriceRole | undefined {
    return (
      this.get(ref.priceId) ??
      this.get(ref.lookupKey ?? undefined) ??
      fromMetadata(ref.metadata) ??
      this.get(ref.productId) ??
      fromMetadata(ref.productMetadata)
    );
  }

  private get(key: string | undefined): PriceRole | undefined {
    return key ? this.byKey.get(key) : undefined;
  }
}

function fromMetadata(m: Metadata): PriceRole | undefined {
  if (!m) return undefined;
  const plan = m[METADATA_PLAN];
  if (plan) return { kind: "plan", id: plan };
  const addon = m[METADATA_ADDON];
  if (addon) return { kind: "addon", id: addon };
  if (m[METADATA_IGNORE]?.toLowerCase() === "true") return { kind: "ignore" };
  return undefined;
}

export function describeRole(role: PriceRole): string {
  return role.kind === "ignore" ? "ignore" : `${role.kind} "${role.id}"`;
}
