import type { IncomingMessage, ServerResponse } from "node:http";
import { Counter, type Registry } from "prom-client";
import Stripe from "stripe";
import { describeEvent } from "../billing/index.js";
import { errorMessage } from "../errors/index.js";
import type { BillingEvent } from "../gen/proofgate/v1/billing.js";
import { IngestResult, type PublishResponse } from "../gen/proofgate/v1/ingest.js";
import type { Logger } from "../observability/logger.js";
import { customerToken } from "../replication/subjects.js";
import type { RouteHandler } from "../transport/http.js";
import type { StripeReader } from "./api.js";
import { completeEvent } from "./complete.js";
import { MemoryLinkStore, learnedKeys, type LinkStore } from "./links.js";
import { learnFromEvent, mapStripeEvent, type MapContext } from "./map.js";
import type { StripeEventShape } from "./objects.js";
import { PriceMap } from "./price-map.js";

export const STRIPE_WEBHOOK_ROUTE = "POST /webhooks/stripe";
/** Stripe's own default: a signed delivery older than five minutes is refused (replay protection). */
export const DEFAULT_TOLERANCE_SECONDS = 300;

/** Applies billing events in order, each on its own (the writer's ingest); resolves per-event results. */
export type ApplyEvents = (events: BillingEvent[]) => Promise<PublishResponse>;

export interface StripeWebhookOptions {
  /**
   * The endpoint's signing secret(s) (`whsec_...`). Several are accepted while a secret is being
   * rolled: Stripe signs with both during the overlap.
   */
  readonly secret: string | readonly string[];
  /** Maximum age of the signature timestamp, seconds. 0 turns the check off (never do that in production). */
  readonly toleranceSeconds?: number;
  readonly priceMap?: PriceMap;
  /** What earlier events taught (refund → invoice, price → plan). In memory when not given. */
  readonly links?: LinkStore;
  readonly apply: ApplyEvents;
  /** Stripe's API, for what a payload cannot carry (complete.ts). Without it those cases are mapped from the payload alone (docs/stripe.md). */
  readonly reader?: StripeReader | undefined;
  readonly logger: Logger;
  readonly registry: Registry;
  /** The clock for the timestamp check, Unix ms; for tests. Default: Date.now. */
  readonly nowMs?: () => number;
}

export interface StripeWebhookMetrics {
  /** Verified Stripe events by type and what became of them. */
  readonly events: Counter<"type" | "outcome">;
  /** Deliveries refused before anything was read from them. */
  readonly refused: Counter<"reason">;
}

export function createStripeWebhookMetrics(registry: Registry): StripeWebhookMetrics {
  const existing = registry.getSingleMetric("proofgate_stripe_events_total") as Counter<"type" | "outcome"> | undefined;
  const events =
    existing ??
    new Counter({
      name: "proofgate_stripe_events_total",
      help: "Verified Stripe webhook events by type and outcome (applied, duplicate, rejected, ignored_<why>, unmapped, failed)",
      labelNames: ["type", "outcome"],
      registers: [registry],
    });
  const refused =
    (registry.getSingleMetric("proofgate_stripe_refused_total") as Counter<"reason"> | undefined) ??
    new Counter({
      name: "proofgate_stripe_refused_total",
      help: "Stripe webhook deliveries refused with 400 (missing_signature, bad_signature, expired, not_json)",
      labelNames: ["reason"],
      registers: [registry],
    });
  return { events, refused };
}

const stripeWebhooks = Stripe.webhooks;

type Verified = { ok: true; event: StripeEventShape } | { ok: false; reason: "missing_signature" | "bad_signature" | "expired" | "not_json"; message: string };

/**
 * Verifies a delivery with the official package: the HMAC over the exact raw bytes, with any of
 * the secrets, and the timestamp within the tolerance.
 */
export function verifyStripeSignature(
  rawBody: Buffer,
  header: string | string[] | undefined,
  secrets: readonly string[],
  toleranceSeconds: number,
  nowMs?: number,
): Verified {
  if (header === undefined || header === "" || Array.isArray(header))
    return { ok: false, reason: "missing_signature", message: "missing Stripe-Signature header: only signed deliveries from Stripe are accepted" };
  let last: unknown;
  for (const secret of secrets) {
    try {
      const event = stripeWebhooks.constructEvent(rawBody, header, secret, toleranceSeconds, undefined, nowMs) as unknown;
      if (!isEvent(event)) return { ok: false, reason: "not_json", message: "the signed body is not a Stripe event" };
      return { ok: true, event };
    } catch (err) {
      last = err;
      // A timestamp outside the tolerance is about the delivery, not the secret: no other secret helps.
      if (/tolerance/i.test(errorMessage(err))) break;
    }
  }
  const msg = errorMessage(last);
  if (/tolerance/i.test(msg)) return { ok: false, reason: "expired", message: `signature timestamp is outside the tolerance of ${toleranceSeconds}s (a replayed or delayed delivery, or a clock off)` };
  if (last instanceof SyntaxError) return { ok: false, reason: "not_json", message: "the signed body is not JSON" };
  if (/timestamp and signatures|expected scheme/i.test(msg)) return { ok: false, reason: "bad_signature", message: `malformed Stripe-Signature header: ${msg}` };
  return { ok: false, reason: "bad_signature", message: "signature does not match: the body was modified or the endpoint's signing secret is different" };
}

function isEvent(v: unknown): v is StripeEventShape {
  if (typeof v !== "object" || v === null) return false;
  const e = v as Record<string, unknown>;
  const data: unknown = e["data"];
  return typeof e["id"] === "string" && typeof e["type"] === "string" && typeof e["created"] === "number" && typeof data === "object" && data !== null && "object" in data;
}

const RESULT: Record<number, string | undefined> = {
  [IngestResult.INGEST_RESULT_ACCEPTED]: "accepted",
  [IngestResult.INGEST_RESULT_DUPLICATE]: "duplicate",
  [IngestResult.INGEST_RESULT_REJECTED]: "rejected",
};

function send(res: ServerResponse, status: number, body: Record<string, unknown>): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body) + "\n");
}

/**
 * The `POST /webhooks/stripe` route for OpsServer. Answers:
 * - 400, nothing applied: missing or bad signature, wrong secret, expired timestamp, not JSON;
 * - 200: applied (accepted, duplicate, or rejected and dead-lettered: a retry cannot help), or a
 *   verified event proofgate does not use (ignored, counted by type), or a refund, dispute or
 *   processing payment parked until its payment is linked to an invoice (then applied with the
 *   event that teaches the link);
 * - 500, so Stripe retries: a price that maps to no plan or add-on (fix the map; the retry then
 *   applies), or the writer could not apply the events.
 */
export function createStripeWebhook(options: StripeWebhookOptions): RouteHandler {
  const secrets = (typeof options.secret === "string" ? options.secret.split(",") : [...options.secret]).map((s) => s.trim()).filter(Boolean);
  if (secrets.length === 0) throw new Error("createStripeWebhook: a signing secret (whsec_...) is required");
  const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  const ctx: MapContext = { prices: options.priceMap ?? PriceMap.EMPTY, links: options.links ?? new MemoryLinkStore() };
  const links = ctx.links as LinkStore;
  const metrics = createStripeWebhookMetrics(options.registry);
  const log = options.logger;

  /** Parked events waiting for one of `keys` that now map; those still unlinked stay parked (under their new keys too). */
  const releaseParked = (keys: readonly string[], currentId: string): { eventId: string; type: string; events: BillingEvent[] }[] => {
    if (keys.length === 0) return [];
    const out: { eventId: string; type: string; events: BillingEvent[] }[] = [];
    for (const p of links.parked(keys)) {
      if (p.eventId === currentId) continue;
      const parked = JSON.parse(p.event) as StripeEventShape;
      const r = mapStripeEvent(parked, ctx);
      if (r.outcome === "mapped") out.push({ eventId: p.eventId, type: parked.type, events: r.events });
      else if (r.outcome === "ignored" && r.waitFor?.length) links.park(r.waitFor, p);
      else links.unpark([p.eventId]);
    }
    return out;
  };

  return async (req: IncomingMessage, res: ServerResponse, rawBody: Buffer): Promise<void> => {
    const verified = verifyStripeSignature(rawBody, req.headers["stripe-signature"], secrets, tolerance, options.nowMs?.());
    if (!verified.ok) {
      metrics.refused.inc({ reason: verified.reason });
      log.warn({ reason: verified.reason, remote: req.socket.remoteAddress }, "Stripe webhook refused");
      send(res, 400, { error: verified.message });
      return;
    }
    const count = (type: string, outcome: string): void => metrics.events.inc({ type, outcome });
    let event: StripeEventShape;
    try {
      event = await completeEvent(verified.event, options.reader, links, ctx.prices);
    } catch (err) {
      count(verified.event.type, "failed");
      log.error({ err, stripeEvent: verified.event.id, type: verified.event.type }, "could not read from Stripe's API; Stripe will retry");
      send(res, 500, { error: `could not read ${verified.event.type} details from Stripe's API: ${errorMessage(err)}` });
      return;
    }

    const learned = learnFromEvent(event, ctx);
    links.learn(learned);
    const result = mapStripeEvent(event, ctx);
    if (result.outcome === "unmapped") {
      count(event.type, "unmapped");
      log.error({ stripeEvent: event.id, type: event.type, detail: result.detail }, "Stripe event cannot be mapped: fix the price map; Stripe will retry");
      send(res, 500, { error: result.detail });
      return;
    }

    // Events parked earlier for a link this event just taught (a refund delivered before the
    // payment it reverses): map them again and apply them together with this one.
    const released = releaseParked(learnedKeys(learned), event.id);
    const events = [...(result.outcome === "mapped" ? result.events : []), ...released.flatMap((r) => r.events)];

    if (result.outcome === "ignored") {
      if (result.waitFor?.length) {
        links.park(result.waitFor, { eventId: event.id, event: JSON.stringify(event) });
        log.info({ stripeEvent: event.id, type: event.type, detail: result.detail }, "Stripe event parked until its payment is linked to an invoice");
      } else {
        log.debug({ stripeEvent: event.id, type: event.type, why: result.reason, detail: result.detail }, "Stripe event ignored");
      }
      count(event.type, result.waitFor?.length ? "parked" : `ignored_${result.reason}`);
      if (events.length === 0) {
        send(res, 200, { received: true, ignored: result.reason, detail: result.detail, ...(result.waitFor?.length ? { parked: true } : {}) });
        return;
      }
    }

    let applied: PublishResponse;
    try {
      applied = await options.apply(events);
    } catch (err) {
      count(event.type, "failed");
      log.error({ err, stripeEvent: event.id, type: event.type }, "could not apply a Stripe event; Stripe will retry");
      send(res, 500, { error: `could not apply the event: ${errorMessage(err)}` });
      return;
    }
    const failed = applied.results.filter((r) => RESULT[r.result] === undefined);
    const rejected = applied.results.filter((r) => r.result === IngestResult.INGEST_RESULT_REJECTED);
    for (const e of events) {
      const r = applied.results.find((x) => x.eventId === e.eventId);
      log.info(
        { stripeEvent: event.id, type: event.type, eventId: e.eventId, customer: customerToken(e.customerId), result: r ? (RESULT[r.result] ?? "failed") : "missing", reason: r?.reason },
        describeEvent(e),
      );
    }
    if (failed.length > 0 || applied.results.length !== events.length) {
      count(event.type, "failed");
      send(res, 500, { error: `the writer could not apply ${failed.map((f) => f.eventId).join(", ") || "every event"}: ${failed.map((f) => f.reason).join("; ")}` });
      return;
    }
    if (released.length > 0) {
      links.unpark(released.map((r) => r.eventId));
      for (const r of released) count(r.type, "released");
    }
    if (result.outcome === "mapped") {
      const own = applied.results.slice(0, result.events.length);
      count(event.type, own.some((r) => r.result === IngestResult.INGEST_RESULT_REJECTED) ? "rejected" : own.every((r) => r.result === IngestResult.INGEST_RESULT_DUPLICATE) ? "duplicate" : "applied");
    }
    if (rejected.length > 0) log.warn({ stripeEvent: event.id, type: event.type, reasons: rejected.map((r) => r.reason) }, "Stripe event rejected and dead-lettered");
    send(res, 200, {
      received: true,
      revision: applied.revision,
      results: applied.results.map((r) => ({ event_id: r.eventId, result: RESULT[r.result], ...(r.reason ? { reason: r.reason } : {}) })),
    });
  };
}
