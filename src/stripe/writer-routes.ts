import type { Registry } from "prom-client";
import type { Intent } from "../gen/proofgate/v1/document.js";
import type { BillingEvent } from "../gen/proofgate/v1/billing.js";
import type { Logger } from "../observability/logger.js";
import type { RouteHandler } from "../transport/http.js";
import { MemoryLinkStore, SqliteLinkStore, type LinkStore } from "./links.js";
import { PriceMap } from "./price-map.js";
import { StripeApiReader } from "./api.js";
import { reconcileStripe, type LedgerView } from "./reconcile.js";
import { createStripeWebhook, STRIPE_WEBHOOK_ROUTE, type ApplyEvents } from "./webhook.js";

/** The writer options the adapter reads (declared in src/writer/options.ts). */
export interface StripeWriterOptions {
  /** `whsec_...`, comma separated while a secret is rolled; "" leaves the route off. */
  readonly stripeWebhookSecret: string;
  /** A YAML/JSON file, or the map inline (`{...}`); "" for price metadata alone. */
  readonly stripePriceMap: string;
  /** Maximum signature age, ms (0: no check). */
  readonly stripeTolerance: number;
  /** The ledger path: the links file sits next to it (`<ledger>.stripe-links`). */
  readonly ledger: string;
  /** "" for none: the adapter then maps from payloads alone and reconciliation is off. */
  readonly stripeApiKey: string;
  readonly stripeApiBase: string;
  /** ms; 0 turns scheduled reconciliation off. */
  readonly stripeReconcileInterval: number;
}

/** The writer's view of a customer's facts and document, for reconciliation. */
export interface WriterLedgerAccess {
  facts(customerId: string): readonly BillingEvent[];
  document(customerId: string): { subscriptions: readonly { subscriptionId: string; intent?: Intent | undefined }[] } | undefined;
}

export interface WriterStripeRoutes {
  readonly routes: Readonly<Record<string, RouteHandler>>;
  close(): void;
}

/**
 * The writer's `POST /webhooks/stripe`, when a secret is configured; nothing otherwise. Loads
 * the price map at startup, so a bad map stops the writer with a message naming the entry.
 */
export function writerStripeRoutes(options: StripeWriterOptions, apply: ApplyEvents, logger: Logger, registry: Registry, ledger?: WriterLedgerAccess): WriterStripeRoutes {
  if (!options.stripeWebhookSecret.trim()) {
    if (options.stripeReconcileInterval > 0) throw new Error("--stripe-reconcile-interval needs the Stripe adapter: set --stripe-webhook-secret and --stripe-api-key");
    return { routes: {}, close: () => undefined };
  }
  const priceMap = PriceMap.load(options.stripePriceMap);
  const links: LinkStore = options.ledger === ":memory:" || options.ledger === "" ? new MemoryLinkStore() : new SqliteLinkStore(`${options.ledger}.stripe-links`);
  const apiKey = options.stripeApiKey.trim();
  const reader = apiKey ? new StripeApiReader({ apiKey, ...(options.stripeApiBase.trim() ? { baseUrl: options.stripeApiBase.trim() } : {}) }) : undefined;
  if (options.stripeReconcileInterval > 0 && !reader) throw new Error("--stripe-reconcile-interval needs --stripe-api-key");
  const handler = createStripeWebhook({
    reader,
    secret: options.stripeWebhookSecret,
    toleranceSeconds: Math.ceil(options.stripeTolerance / 1000),
    priceMap,
    links,
    apply,
    logger,
    registry,
  });
  logger.info({ route: STRIPE_WEBHOOK_ROUTE, mappedPrices: priceMap.size, toleranceSeconds: Math.ceil(options.stripeTolerance / 1000), stripeApi: reader !== undefined }, "Stripe webhook enabled");

  // Scheduled reconciliation: one run at a time; a failed run is retried at the next tick from
  // the last checkpoint (every step is idempotent).
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> | undefined;
  if (reader && ledger && options.stripeReconcileInterval > 0) {
    const view: LedgerView = {
      customer: (customerId) => {
        const facts = ledger.facts(customerId);
        const doc = ledger.document(customerId);
        if (!doc && facts.length === 0) return Promise.resolve(undefined);
        return Promise.resolve({ eventIds: new Set(facts.map((f) => f.eventId)), intents: new Map((doc?.subscriptions ?? []).map((s) => [s.subscriptionId, s.intent])) });
      },
    };
    const log = logger.child({ task: "reconcile" });
    timer = setInterval(() => {
      running ??= reconcileStripe({ reader, prices: priceMap, links, ledger: view, apply, logger: log, registry })
        .catch((err: unknown) => log.error({ err }, "Stripe reconciliation failed; retrying at the next interval"))
        .finally(() => (running = undefined));
    }, options.stripeReconcileInterval);
    timer.unref();
    log.info({ intervalMs: options.stripeReconcileInterval }, "Stripe reconciliation scheduled");
  }
  return {
    routes: { [STRIPE_WEBHOOK_ROUTE]: handler },
    close: () => {
      if (timer) clearInterval(timer);
      // A run in flight finishes against the links file before it is closed.
      if (running) void running.finally(() => links.close());
      else links.close();
    },
  };
}
