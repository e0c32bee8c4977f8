import type { AccessDocument } from "../gen/proofgate/v1/document.js";
import type { CatalogIndex } from "../catalog/index.js";
import type { Decision } from "./decision.js";

/**
 * The check rules (docs/check-rules.md): may the document's customer use `feature` at `nowMs`?
 * `doc` undefined means no document (UNKNOWN_CUSTOMER). Never throws; an unknown feature is
 * NOT_ENTITLED with a reason saying so.
 */
export function evaluate(_doc: AccessDocument | undefined, _catalog: CatalogIndex, _feature: string, _quantity: number | undefined, _nowMs: number): Decision {
  throw new Error("not implemented yet");
}

/** Every catalog feature, sorted by key. */
export function evaluateAll(doc: AccessDocument | undefined, catalog: CatalogIndex, nowMs: number): { feature: string; decision: Decision }[] {
  return catalog.featureKeys.map((feature) => ({ feature, decision: evaluate(doc, catalog, feature, undefined, nowMs) }));
}
