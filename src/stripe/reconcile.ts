import { Counter, Gauge, type Registry } from "prom-client";
import { describeEvent } from "../billing/index.js";
import { errorMessage } from "../errors/index.js";
import { IngestResult } from "../gen/proofgate/v1/ingest.js";
import type { BillingEvent, SubscriptionChanged } from "../gen/proofgate/v1/billing.js";
import type { Intent } from "../gen/proofgate/v1/document.js";
import type { Logger } from "../observability/logger.js";
import type { StripeReader } from "./api.js";
import { completeEvent } from "./complete.js";
import type { LinkStore } from "./links.js";
import { factId, learnFromEvent, mapStripeEvent, type MapContext } from "./map.js";
import type { ChargeShape, InvoiceShape, StripeEventShape } from "./objects.js";
import type { PriceMap } from "./price-map.js";
import type { ApplyEvents } from "./webhook.js";

/**
 * Reconciliation: what Stripe's objects say, against what the ledger holds. Webhooks get lost,
 * truncated and reordered; this pages through subscriptions, invoices (with all their lines),
 * charges, refunds and disputes, derives the billing events they imply with the same
 * deterministic ids the webhook gives them (map.ts `factId`), and publishes those the ledger does
 * not hold. A subscription's state is published only when the ledger's intent differs from it.
 * Running it again changes nothing.
 */

/** What the ledger holds for a customer: the ids of its facts and each subscription's intent. */
export interface LedgerView {
  customer(customerId: string): Promise<{ readonly eventIds: ReadonlySet<string>; readonly intents: ReadonlyMap<string, Intent | undefined> } | undefined>;
}

export interface ReconcileOptions {
  readonly reader: StripeReader;
  readonly prices: PriceMap;
  readonly links: LinkStore;
  readonly ledger: LedgerView;
  readonly apply: ApplyEvents;
  readonly logger: Logger;
  readonly registry?: Registry | undefined;
  /** Report, publish nothing, keep the checkpoint. */
  readonly dryRun?: boolean;
  /** How far before the checkpoint invoices, charges, refunds and disputes are read again (dunning, late disputes). Seconds; default 45 days. */
  readonly lookbackSeconds?: number;
  /** Unix ms; default Date.now. */
  readonly now?: () => number;
}

export interface Drift {
  readonly customerId: string;
  readonly subscriptionId: string;
  readonly eventId: string;
  /** What was missing, in words (the billing event's description and the Stripe object it comes from). */
  readonly why: string;
  readonly result: "accepted" | "duplicate" | "rejected" | "dry_run";
}

export interface ReconcileReport {
  /** Unix seconds: objects created since then were read (subscriptions: all). */
  readonly since: number;
  readonly read: Readonly<Record<"subscriptions" | "invoices" | "charges" | "refunds" | "disputes", number>>;
  /** Billing events the ledger lacked (published unless dry run). */
  readonly drift: readonly Drift[];
  /** Customers whose access changed because of the drift. */
  readonly customers: readonly string[];
  /** Objects that could not be mapped (a price the map does not know, …): fix and run again. */
  readonly problems: readonly string[];
}

const CHECKPOINT = "reconcile:checkpoint";
const DEFAULT_LOOKBACK_S = 45 * 86_400;
const APPLY_BATCH = 500;

interface ReconcileMetrics {
  readonly drift: Counter<"kind">;
  readonly runs: Counter<"outcome">;
  readonly lastSuccess: Gauge;
}

function metricsOf(registry: Registry | undefined): ReconcileMetrics | undefined {
  if (!registry) return undefined;
  const get = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  return {
    drift: get("proofgate_stripe_reconcile_drift_total", () => new Counter({ name: "proofgate_stripe_reconcile_drift_total", help: "Billing events reconciliation found missing from the ledger, by kind (subscription, payment, recovery)", labelNames: ["kind"], registers: [registry] })),
    runs: get("proofgate_stripe_reconcile_runs_total", () => new Counter({ name: "proofgate_stripe_reconcile_runs_total", help: "Stripe reconciliation runs by outcome (ok, failed)", labelNames: ["outcome"], registers: [registry] })),
    lastSuccess: get("proofgate_stripe_reconcile_last_success_seconds", () => new Gauge({ name: "proofgate_stripe_reconcile_last_success_seconds", help: "When the last Stripe reconciliation run finished (Unix seconds)", registers: [registry] })),
  };
}

/** A synthetic Stripe event for an object's current state, mapped like a webhook delivery. */
function synthetic(type: string, object: unknown, created: number, id: string): StripeEventShape {
  return { id, object: "event", type, created, data: { object }, request: null };
}

/** The events an invoice's state implies. */
function invoiceEvents(inv: InvoiceShape, nowS: number): StripeEventShape[] {
  const t = inv.status_transitions ?? {};
  const at = (s: number | null | undefined): number => s ?? inv.created ?? nowS;
  const out: StripeEventShape[] = [synthetic("invoice.finalized", inv, at(t.finalized_at), `rec:${inv.id}:finalized`)];
  if (inv.status === "paid") out.push(synthetic("invoice.paid", inv, at(t.paid_at), `rec:${inv.id}:paid`));
  else if (inv.status === "void") out.push(synthetic("invoice.voided", inv, at(t.voided_at), `rec:${inv.id}:void`));
  else if (inv.status === "uncollectible") out.push(synthetic("invoice.marked_uncollectible", inv, at(t.marked_uncollectible_at), `rec:${inv.id}:uncollectible`));
  else if (inv.status === "open" && (inv.attempt_count ?? 0) > 0) out.push(synthetic("invoice.payment_failed", inv, at(t.finalized_at), `rec:${inv.id}:failed`));
  return out;
}

const sameIntent = (a: Intent | undefined, b: SubscriptionChanged): boolean =>
  a !== undefined &&
  a.status === b.status &&
  a.planId === b.planId &&
  a.addonIds.join(",") === [...b.addonIds].sort().join(",") &&
  a.quantity === Math.max(1, b.quantity) &&
  a.cancelAtMs === (b.cancelAt?.getTime() ?? 0) &&
  a.trialEndMs === (b.trialEnd?.getTime() ?? 0);

export async function reconcileStripe(options: ReconcileOptions): Promise<ReconcileReport> {
  const now = options.now ?? Date.now;
  const nowS = Math.floor(now() / 1000);
  const log = options.logger;
  const metrics = metricsOf(options.registry);
  const ctx: MapContext = { prices: options.prices, links: options.links };
  const checkpoint = Number(options.links.note(CHECKPOINT) ?? 0);
  const since = checkpoint > 0 ? Math.max(0, checkpoint - (options.lookbackSeconds ?? DEFAULT_LOOKBACK_S)) : 0;
  const read = { subscriptions: 0, invoices: 0, charges: 0, refunds: 0, disputes: 0 };
  const candidates: { event: BillingEvent; from: string }[] = [];
  const problems: string[] = [];

  const take = async (e: StripeEventShape, from: string): Promise<void> => {
    const event = await completeEvent(e, options.reader, options.links, options.prices);
    options.links.learn(learnFromEvent(event, ctx));
    const r = mapStripeEvent(event, ctx);
    if (r.outcome === "mapped") for (const b of r.events) candidates.push({ event: b, from });
    else if (r.outcome === "unmapped") problems.push(r.detail);
  };

  try {
    // Subscriptions first (they teach what prices stand for), then invoices and charges (which
    // invoice each payment paid), then what reverses payments.
    for await (const sub of options.reader.subscriptions()) {
      read.subscriptions++;
      await take({ ...synthetic("customer.subscription.updated", sub, nowS, factId(`${sub.id}:observed:${nowS}`)), observed: true }, `subscription ${sub.id} (${sub.status})`);
    }
    for await (const inv of options.reader.invoices(since)) {
      read.invoices++;
      const full = inv.lines?.has_more ? { ...inv, lines: { ...inv.lines, data: await options.reader.invoiceLines(inv.id), has_more: false } } : inv;
      for (const e of invoiceEvents(full, nowS)) await take(e, `invoice ${inv.id} (${inv.status ?? "?"})`);
    }
    const charges: ChargeShape[] = [];
    for await (const ch of options.reader.charges(since)) {
      read.charges++;
      options.links.learn(learnFromEvent(synthetic("charge.succeeded", ch, ch.created ?? nowS, `rec:${ch.id}`), ctx));
      if (ch.refunded) charges.push(ch);
    }
    for (const ch of charges) await take(synthetic("charge.refunded", ch, nowS, `rec:${ch.id}:refunded`), `charge ${ch.id} (refunded)`);
    for await (const re of options.reader.refunds(since)) {
      read.refunds++;
      if ((re).status === "failed") await take(synthetic("refund.failed", re, nowS, `rec:${re.id}:failed`), `refund ${re.id} (failed)`);
    }
    for await (const du of options.reader.disputes(since)) {
      read.disputes++;
      await take(synthetic("charge.dispute.updated", du, nowS, `rec:${du.id}`), `dispute ${du.id} (${du.status})`);
    }
  } catch (err) {
    metrics?.runs.inc({ outcome: "failed" });
    log.error({ err, read }, "Stripe reconciliation stopped; the next run starts again from the last checkpoint");
    throw new Error(`reconciliation stopped after reading ${JSON.stringify(read)}: ${errorMessage(err)}`);
  }

  // What the ledger lacks: facts by id; a subscription's state when its intent differs.
  const views = new Map<string, Awaited<ReturnType<LedgerView["customer"]>>>();
  const missing: { event: BillingEvent; from: string }[] = [];
  const seen = new Set<string>();
  for (const c of candidates) {
    const e = c.event;
    if (seen.has(e.eventId)) continue;
    seen.add(e.eventId);
    if (!views.has(e.customerId)) views.set(e.customerId, await options.ledger.customer(e.customerId));
    const view = views.get(e.customerId);
    if (e.kind?.$case === "subscription") {
      // An intent derived from an invoice (version 1) only stands in for a missing subscription event.
      if (e.kind.value.version === 1) continue;
      if (sameIntent(view?.intents.get(e.subscriptionId), e.kind.value)) continue;
    } else if (view?.eventIds.has(e.eventId)) continue;
    missing.push(c);
  }

  const drift: Drift[] = [];
  if (options.dryRun) {
    for (const m of missing) drift.push({ customerId: m.event.customerId, subscriptionId: m.event.subscriptionId, eventId: m.event.eventId, why: `${describeEvent(m.event)} (from ${m.from})`, result: "dry_run" });
  } else if (missing.length > 0) {
    // In batches well under the writer's limit per call, in the order Stripe's objects imply.
    const results: Awaited<ReturnType<ApplyEvents>>["results"] = [];
    for (let i = 0; i < missing.length; i += APPLY_BATCH) results.push(...(await options.apply(missing.slice(i, i + APPLY_BATCH).map((m) => m.event))).results);
    for (const [i, m] of missing.entries()) {
      const r = results[i];
      const result = r?.result === IngestResult.INGEST_RESULT_ACCEPTED ? "accepted" : r?.result === IngestResult.INGEST_RESULT_DUPLICATE ? "duplicate" : "rejected";
      drift.push({ customerId: m.event.customerId, subscriptionId: m.event.subscriptionId, eventId: m.event.eventId, why: `${describeEvent(m.event)} (from ${m.from})${r?.reason ? `: ${r.reason}` : ""}`, result });
      if (result === "accepted") metrics?.drift.inc({ kind: m.event.kind?.$case ?? "unknown" });
    }
    options.links.learn([{ kind: "note", key: CHECKPOINT, value: String(nowS) }]);
  } else {
    options.links.learn([{ kind: "note", key: CHECKPOINT, value: String(nowS) }]);
  }
  const customers = [...new Set(drift.filter((d) => d.result === "accepted" || d.result === "dry_run").map((d) => d.customerId))].sort();
  for (const d of drift) log.warn({ customer: d.customerId, subscription: d.subscriptionId, eventId: d.eventId, result: d.result }, `Stripe drift: ${d.why}`);
  metrics?.runs.inc({ outcome: "ok" });
  metrics?.lastSuccess.set(nowS);
  log.info({ since, read, drift: drift.length, customers: customers.length, problems: problems.length, dryRun: options.dryRun ?? false }, "Stripe reconciliation finished");
  return { since, read, drift, customers, problems };
}
