import type { Catalog } from "../../gen/proofgate/v1/catalog.js";
import { AccessDocument } from "../../gen/proofgate/v1/document.js";
import type { Ledger } from "../ledger/ledger.js";

const PAGE = 500;
const SHOWN = 20;

/**
 * What replacing `before` with `after` takes away from customers: plans and add-ons their
 * documents name (intent or invoices), and features granted to them by a plan or add-on they use
 * or named by one of their overrides. Undefined when nothing in use is removed. Scans the
 * documents only when the new catalog drops something.
 */
export function catalogRemovals(ledger: Ledger, before: Catalog, after: Catalog): string | undefined {
  const gone = (a: { id?: string; key?: string }[], b: { id?: string; key?: string }[]): Set<string> => {
    const kept = new Set(b.map((x) => x.id ?? x.key ?? ""));
    return new Set(a.map((x) => x.id ?? x.key ?? "").filter((k) => !kept.has(k)));
  };
  const plans = gone(before.plans, after.plans);
  const addons = gone(before.addons, after.addons);
  const features = gone(before.features, after.features);
  if (plans.size + addons.size + features.size === 0) return undefined;
  const grants = new Map<string, string[]>();
  for (const p of before.plans) grants.set(`plan:${p.id}`, p.features.map((f) => f.feature));
  for (const a of before.addons) grants.set(`addon:${a.id}`, a.features.map((f) => f.feature));
  const users = new Map<string, Set<string>>();
  const use = (what: string, customer: string): void => {
    let s = users.get(what);
    if (!s) users.set(what, (s = new Set()));
    s.add(customer);
  };
  let after_ = "";
  for (;;) {
    const page = ledger.documentsPage(after_, PAGE);
    if (page.length === 0) break;
    for (const row of page) {
      after_ = row.customerId;
      const doc = AccessDocument.decode(row.document);
      const held = new Set<string>();
      for (const s of doc.subscriptions) {
        if (s.intent?.planId) held.add(`plan:${s.intent.planId}`);
        for (const a of s.intent?.addonIds ?? []) held.add(`addon:${a}`);
        for (const i of s.invoices) {
          if (i.planId) held.add(`plan:${i.planId}`);
          for (const a of i.addonIds) held.add(`addon:${a}`);
        }
      }
      for (const h of held) {
        const [kind, id = ""] = h.split(/:(.*)/s);
        if ((kind === "plan" && plans.has(id)) || (kind === "addon" && addons.has(id))) use(h, row.customerId);
        for (const f of grants.get(h) ?? []) if (features.has(f)) use(`feature:${f}`, row.customerId);
      }
      for (const o of doc.overrides) if (features.has(o.feature)) use(`feature:${o.feature}`, row.customerId);
    }
  }
  if (users.size === 0) return undefined;
  const list = [...users.entries()].sort(([a], [b]) => a.localeCompare(b));
  const shown = list.slice(0, SHOWN).map(([what, s]) => `${what.replace(":", " ")} (${s.size} customer${s.size === 1 ? "" : "s"})`);
  return list.length > SHOWN ? `${shown.join(", ")} and ${list.length - SHOWN} more` : shown.join(", ");
}
