import type { CatalogIndex } from "../../catalog/index.js";
import { AuditKind, type AuditEntry } from "../../gen/proofgate/v1/admin.js";
import { PaymentResult, RecoveryResult, SubscriptionStatus, type BillingEvent } from "../../gen/proofgate/v1/billing.js";
import { AccessStatus } from "../../gen/proofgate/v1/check.js";
import { OverrideEffect, type AccessDocument, type Override } from "../../gen/proofgate/v1/document.js";
import { evaluateAll, foldDocument, statusName } from "../../policy/index.js";

/**
 * The customer page's picture as data: what was wanted, what was paid, what happened, and what
 * the rules answered, on one time axis. Pure (facts, overrides, audit, catalog and a clock in;
 * no I/O), so it is tested and rendered without services.
 */

/** Lanes of a subscription band, top to bottom. */
export type Lane = "intent" | "paid" | "in-flight" | "recovery" | "refund";
export const LANES: readonly Lane[] = ["intent", "paid", "in-flight", "recovery", "refund"];

/** A stretch of time on a lane: an intent (plan × quantity), a trial, a paid invoice, a payment in flight… */
export interface Span {
  readonly lane: Lane;
  readonly fromMs: number;
  /** Open-ended spans end at the axis end. */
  readonly toMs: number;
  readonly kind: "intent" | "trial" | "canceled" | "paid" | "revoked" | "in-flight" | "retry";
  readonly label: string;
}

/** One event (or override) at an instant; `info` is what hovering or clicking it shows. */
export interface Mark {
  readonly lane: Lane | "override";
  readonly atMs: number;
  readonly kind: string;
  readonly label: string;
  readonly info: Readonly<Record<string, string>>;
}

export interface SubscriptionBand {
  readonly subscriptionId: string;
  readonly spans: readonly Span[];
  readonly marks: readonly Mark[];
}

export interface OverrideSpan {
  readonly overrideId: string;
  readonly effect: "GRANT" | "DENY";
  readonly feature: string;
  readonly fromMs: number;
  readonly toMs: number;
  readonly info: Readonly<Record<string, string>>;
}

/** What the rules answer for one feature over [fromMs, toMs). */
export interface FeatureSegment {
  readonly fromMs: number;
  readonly toMs: number;
  readonly status: string;
  readonly allowed: boolean;
  readonly reason: string;
}

export interface Timeline {
  readonly startMs: number;
  readonly endMs: number;
  readonly nowMs: number;
  readonly bands: readonly SubscriptionBand[];
  readonly overrides: readonly OverrideSpan[];
  readonly features: readonly { readonly feature: string; readonly segments: readonly FeatureSegment[] }[];
  /** Facts left out of the access bands (only the latest MAX_INSTANTS event instants are evaluated). */
  readonly truncated: number;
}

export interface TimelineInput {
  readonly customerId: string;
  readonly facts: readonly BillingEvent[];
  readonly overrides: readonly Override[];
  /** The customer's audit entries: ACCESS_CHANGED ones name the rule that decided an event. */
  readonly audit: readonly AuditEntry[];
  readonly catalog: CatalogIndex | undefined;
  readonly nowMs: number;
  /** The axis; default: the first event to a little after now. */
  readonly fromMs?: number;
  readonly toMs?: number;
}

/** Evaluating a fold per event instant costs O(events²): the bands cover the latest instants only. */
export const MAX_INSTANTS = 1_000;

const ms = (d: Date | undefined): number => (d ? d.getTime() : 0);
const iso = (t: number): string => new Date(t).toISOString().replace(".000Z", "Z");
const PAYMENT = (r: PaymentResult): string => (PaymentResult[r] as string | undefined)?.replace("PAYMENT_RESULT_", "") ?? String(r);
const RECOVERY = (r: RecoveryResult): string => (RecoveryResult[r] as string | undefined)?.replace("RECOVERY_RESULT_", "") ?? String(r);
const IN_FLIGHT = new Set([PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION, PaymentResult.PAYMENT_RESULT_PROCESSING]);
const TERMINAL = new Set([PaymentResult.PAYMENT_RESULT_SUCCEEDED, PaymentResult.PAYMENT_RESULT_FAILED, PaymentResult.PAYMENT_RESULT_CANCELED]);

export function buildTimeline(input: TimelineInput): Timeline {
  const facts = [...input.facts].sort((a, b) => ms(a.occurredAt) - ms(b.occurredAt) || (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0));
  const first = Math.min(ms(facts[0]?.occurredAt) || input.nowMs, ...input.overrides.map((o) => o.createdAtMs || input.nowMs));
  const last = Math.max(input.nowMs, ms(facts.at(-1)?.occurredAt));
  const pad = Math.max(1_000, Math.round((last - first) * 0.05));
  const startMs = input.fromMs ?? first - pad;
  const endMs = Math.max(startMs + 1, input.toMs ?? last + pad);

  // Which access changes each event caused, as the writer recorded them.
  const decided = new Map<string, string[]>();
  for (const a of input.audit) {
    if (a.kind !== AuditKind.AUDIT_KIND_ACCESS_CHANGED || !a.eventId) continue;
    const list = decided.get(a.eventId) ?? [];
    list.push(`${a.feature}: ${statusName(a.fromStatus)} → ${statusName(a.toStatus)} (${a.reason})`);
    decided.set(a.eventId, list);
  }

  const bySub = new Map<string, BillingEvent[]>();
  for (const f of facts) bySub.set(f.subscriptionId, [...(bySub.get(f.subscriptionId) ?? []), f]);
  const finalDoc = foldDocument(input.customerId, facts, input.overrides);
  const bands = [...bySub.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([subscriptionId, events]) => band(subscriptionId, events, finalDoc, endMs, decided, input.nowMs));

  const overrides: OverrideSpan[] = input.overrides.map((o) => {
    const effect = o.effect === OverrideEffect.OVERRIDE_EFFECT_DENY ? "DENY" : "GRANT";
    return {
      overrideId: o.overrideId,
      effect,
      feature: o.feature,
      fromMs: o.validFromMs || o.createdAtMs,
      toMs: o.validUntilMs || endMs,
      info: {
        override: o.overrideId,
        effect,
        feature: o.feature,
        window: `${o.validFromMs ? iso(o.validFromMs) : "always"} .. ${o.validUntilMs ? iso(o.validUntilMs) : "open"}`,
        actor: o.actor,
        reason: o.reason,
        created: o.createdAtMs ? iso(o.createdAtMs) : "",
      },
    };
  });

  const { features, truncated } = input.catalog ? featureSegments(input, facts, input.catalog, endMs) : { features: [], truncated: 0 };
  return { startMs, endMs, nowMs: input.nowMs, bands, overrides, features, truncated };
}

function eventInfo(e: BillingEvent, decided: ReadonlyMap<string, string[]>): Record<string, string> {
  const changes = decided.get(e.eventId);
  return {
    event: e.eventId,
    occurred: iso(ms(e.occurredAt)),
    source: e.source || "(none)",
    correlation: e.correlationId || "(none)",
    subscription: e.subscriptionId,
    rule: changes?.join("; ") ?? "no access change recorded for this event",
  };
}

function band(
  subscriptionId: string,
  events: readonly BillingEvent[],
  doc: AccessDocument,
  endMs: number,
  decided: ReadonlyMap<string, string[]>,
  nowMs: number,
): SubscriptionBand {
  const spans: Span[] = [];
  const marks: Mark[] = [];
  // Intent: each SubscriptionChanged holds from when it occurred to the next one.
  const intents = events.filter((e) => e.kind?.$case === "subscription");
  intents.forEach((e, i) => {
    if (e.kind?.$case !== "subscription") return;
    const s = e.kind.value;
    const at = ms(e.occurredAt);
    const next = ms(intents[i + 1]?.occurredAt) || endMs;
    const status = (SubscriptionStatus[s.status] as string | undefined)?.replace("SUBSCRIPTION_STATUS_", "") ?? String(s.status);
    const plan = `${s.planId || "(no plan)"}${s.addonIds.length ? ` + ${s.addonIds.join(", ")}` : ""} × ${Math.max(1, s.quantity)}`;
    const canceled = s.status !== SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE;
    const trialEnd = ms(s.trialEnd);
    const cancelAt = ms(s.cancelAt);
    if (trialEnd > at) spans.push({ lane: "intent", fromMs: at, toMs: Math.min(trialEnd, next), kind: "trial", label: `trial until ${iso(trialEnd)}` });
    const intentFrom = trialEnd > at ? Math.min(trialEnd, next) : at;
    const intentTo = cancelAt && cancelAt < next ? cancelAt : next;
    if (intentTo > intentFrom) spans.push({ lane: "intent", fromMs: intentFrom, toMs: intentTo, kind: canceled ? "canceled" : "intent", label: `${status} ${plan}` });
    if (cancelAt && cancelAt < next) spans.push({ lane: "intent", fromMs: cancelAt, toMs: next, kind: "canceled", label: `canceled at ${iso(cancelAt)}` });
    marks.push({
      lane: "intent",
      atMs: at,
      kind: "intent",
      label: `${status} ${plan} (v${s.version})`,
      info: {
        what: `subscription ${status}: ${plan}, version ${s.version}${trialEnd ? `, trial ends ${iso(trialEnd)}` : ""}${cancelAt ? `, cancel at ${iso(cancelAt)}` : ""}`,
        ...eventInfo(e, decided),
      },
    });
  });

  // Paid coverage per invoice, from the folded document (the rules' view); revoked from the refund
  // or dispute on. Invoices too old to be kept in the document show their latest successful payment.
  const sub = doc.subscriptions.find((s) => s.subscriptionId === subscriptionId);
  const inDoc = new Set(sub?.invoices.map((i) => i.invoiceId));
  for (const e of events) {
    const k = e.kind;
    if (k?.$case !== "payment" || k.value.result !== PaymentResult.PAYMENT_RESULT_SUCCEEDED || inDoc.has(k.value.invoiceId) || !k.value.periodEnd) continue;
    inDoc.add(k.value.invoiceId);
    spans.push({ lane: "paid", fromMs: ms(k.value.periodStart), toMs: ms(k.value.periodEnd), kind: "paid", label: `paid ${k.value.invoiceId}: ${k.value.planId} × ${Math.max(1, k.value.quantity)}` });
  }
  for (const inv of sub?.invoices ?? []) {
    if (inv.payment !== PaymentResult.PAYMENT_RESULT_SUCCEEDED || !inv.periodEndMs) continue;
    const revokedAt = inv.refunded ? inv.refundedAtMs : inv.dispute === PaymentResult.PAYMENT_RESULT_DISPUTE_OPENED || inv.dispute === PaymentResult.PAYMENT_RESULT_DISPUTE_LOST ? inv.disputeAtMs : 0;
    const cut = revokedAt ? Math.max(inv.periodStartMs, Math.min(revokedAt, inv.periodEndMs)) : inv.periodEndMs;
    const label = `${inv.invoiceId}: ${inv.planId} × ${inv.quantity}`;
    if (cut > inv.periodStartMs) spans.push({ lane: "paid", fromMs: inv.periodStartMs, toMs: cut, kind: "paid", label: `paid ${label}` });
    if (cut < inv.periodEndMs) spans.push({ lane: "paid", fromMs: cut, toMs: inv.periodEndMs, kind: "revoked", label: `revoked ${label}` });
  }

  // Payments in flight: from the first 3-D Secure / processing result to the invoice's terminal result (or now).
  const byInvoice = new Map<string, BillingEvent[]>();
  for (const e of events) {
    const k = e.kind;
    if (k?.$case === "payment" || k?.$case === "recovery") byInvoice.set(k.value.invoiceId, [...(byInvoice.get(k.value.invoiceId) ?? []), e]);
  }
  for (const [invoiceId, list] of byInvoice) {
    const payments = list.flatMap((e) => (e.kind?.$case === "payment" ? [{ e, p: e.kind.value }] : []));
    const firstInFlight = payments.find(({ p }) => IN_FLIGHT.has(p.result));
    if (firstInFlight) {
      const from = ms(firstInFlight.e.occurredAt);
      const done = payments.find(({ e, p }) => TERMINAL.has(p.result) && ms(e.occurredAt) >= from);
      const to = done ? ms(done.e.occurredAt) : Math.max(nowMs, from);
      spans.push({ lane: "in-flight", fromMs: from, toMs: Math.max(to, from), kind: "in-flight", label: `${invoiceId}: ${PAYMENT(firstInFlight.p.result)}` });
    }
    for (const e of list) {
      const k = e.kind;
      const at = ms(e.occurredAt);
      if (k?.$case === "payment") {
        const r = k.value.result;
        const lane: Lane = r === PaymentResult.PAYMENT_RESULT_REFUNDED || DISPUTE.has(r) ? "refund" : IN_FLIGHT.has(r) ? "in-flight" : "paid";
        const amount = k.value.amountMinor ? ` ${(k.value.amountMinor / 100).toFixed(2)} ${k.value.currency}` : "";
        marks.push({
          lane,
          atMs: at,
          kind: PAYMENT(r).toLowerCase(),
          label: `${invoiceId} ${PAYMENT(r)}`,
          info: {
            what: `payment ${PAYMENT(r)} for ${invoiceId}${amount}${k.value.failureReason ? ` (${k.value.failureReason})` : ""}${k.value.periodEnd ? `, period ${iso(ms(k.value.periodStart))} .. ${iso(ms(k.value.periodEnd))}` : ""}`,
            ...eventInfo(e, decided),
          },
        });
      } else if (k?.$case === "recovery") {
        const r = k.value.result;
        const next = ms(k.value.nextAttemptAt);
        // A scheduled retry waits until its attempt, or until recovery ends first.
        const ended = list.find((x) => x.kind?.$case === "recovery" && x.kind.value.result !== RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED && ms(x.occurredAt) >= at);
        const until = ended ? Math.min(next, ms(ended.occurredAt)) : next;
        if (r === RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED && until > at) spans.push({ lane: "recovery", fromMs: at, toMs: until, kind: "retry", label: `${invoiceId}: next attempt ${iso(next)}` });
        marks.push({
          lane: "recovery",
          atMs: at,
          kind: RECOVERY(r).toLowerCase(),
          label: `${invoiceId} ${RECOVERY(r)}`,
          info: { what: `recovery ${RECOVERY(r)} for ${invoiceId}${next ? `, next attempt ${iso(next)}` : ""}`, ...eventInfo(e, decided) },
        });
      }
    }
  }
  return { subscriptionId, spans, marks: marks.sort((a, b) => a.atMs - b.atMs) };
}

const DISPUTE = new Set([PaymentResult.PAYMENT_RESULT_DISPUTE_OPENED, PaymentResult.PAYMENT_RESULT_DISPUTE_WON, PaymentResult.PAYMENT_RESULT_DISPUTE_LOST]);

/**
 * Each feature's answer over the axis. Between two event instants the document is fixed (the
 * facts that had occurred by then, and the overrides that existed), so the answer can only change
 * at the instants that document names: trial ends, period starts and ends, grace ends, cancel-at,
 * override windows. The rules are evaluated at exactly those instants, so a trial or a grace
 * window ending with no event shows as a change of colour. This is the answer with every fact
 * known now; the audit trail records what the writer answered at the time.
 */
function featureSegments(input: TimelineInput, facts: readonly BillingEvent[], catalog: CatalogIndex, endMs: number): { features: Timeline["features"]; truncated: number } {
  const instants = [...new Set([...facts.map((f) => ms(f.occurredAt)), ...input.overrides.map((o) => o.createdAtMs)])].sort((a, b) => a - b);
  const truncated = Math.max(0, instants.length - MAX_INSTANTS);
  const evaluated = instants.slice(truncated);
  const segments = new Map<string, FeatureSegment[]>(catalog.featureKeys.map((k) => [k, []]));
  const grace = catalog.gracePeriodMs;
  let factIdx = 0;
  const known: BillingEvent[] = [];
  evaluated.forEach((t, i) => {
    while (factIdx < facts.length && ms(facts[factIdx]?.occurredAt) <= t) known.push(facts[factIdx++] as BillingEvent);
    const next = evaluated[i + 1] ?? Math.max(endMs, t + 1);
    const doc = foldDocument(input.customerId, known, input.overrides.filter((o) => o.createdAtMs <= t));
    const points = new Set<number>([t]);
    const add = (x: number): void => {
      if (x > t && x < next) points.add(x);
    };
    for (const s of doc.subscriptions) {
      if (s.intent) {
        add(s.intent.trialEndMs);
        add(s.intent.cancelAtMs);
      }
      for (const inv of s.invoices) {
        add(inv.periodStartMs);
        add(inv.periodEndMs);
        if (inv.periodEndMs) add(inv.periodEndMs + grace);
      }
    }
    for (const o of doc.overrides) {
      add(o.validFromMs);
      add(o.validUntilMs);
    }
    const sorted = [...points].sort((a, b) => a - b);
    sorted.forEach((p, j) => {
      const to = sorted[j + 1] ?? next;
      for (const { feature, decision } of evaluateAll(doc, catalog, p)) {
        const list = segments.get(feature) as FeatureSegment[];
        const status = statusName(decision.status);
        const prev = list.at(-1);
        if (prev && prev.status === status && prev.reason === decision.reason && prev.toMs === p) list[list.length - 1] = { ...prev, toMs: to };
        else list.push({ fromMs: p, toMs: to, status, allowed: decision.allowed, reason: decision.reason });
      }
    });
  });
  return { features: [...segments.entries()].map(([feature, segs]) => ({ feature, segments: segs })), truncated };
}

/** Status names in the order the legend lists them. */
export const STATUS_ORDER: readonly string[] = [
  AccessStatus.ACCESS_STATUS_GRANTED,
  AccessStatus.ACCESS_STATUS_GRACE_PERIOD,
  AccessStatus.ACCESS_STATUS_PAYMENT_PENDING,
  AccessStatus.ACCESS_STATUS_PAYMENT_REQUIRED,
  AccessStatus.ACCESS_STATUS_SUSPENDED,
  AccessStatus.ACCESS_STATUS_REVOKED,
  AccessStatus.ACCESS_STATUS_CANCELED,
  AccessStatus.ACCESS_STATUS_EXPIRED,
  AccessStatus.ACCESS_STATUS_BLOCKED,
  AccessStatus.ACCESS_STATUS_NOT_ENTITLED,
].map(statusName);
