import type { Registry } from "prom-client";
import type { Logger } from "../observability/logger.js";
import type { RouteHandler } from "../transport/http.js";
import { MemoryLinkStore, SqliteLinkStore, type LinkStore } from "./links.js";
import { PriceMap } from "./price-map.js";
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
}

export interface WriterStripeRoutes {
  readonly routes: Readonly<Record<string, RouteHandler>>;
  close(): void;
}

/**
 * The writer's `POST /webhooks/stripe`, when a secret is configured; nothing otherwise. Loads
 * the price map at startup, so a bad map stops the writer with a message naming the entry.
 */
export function writerStripeRoutes(options: StripeWriterOptions, apply: ApplyEvents, logger: Logger, registry: Registry): WriterStripeRoutes {
  if (!options.stripeWebhookSecret.trim()) return { routes: {}, close: () => undefined };
  const priceMap = PriceMap.load(options.stripePriceMap);
  const links: LinkStore = options.ledger === ":memory:" || options.ledger === "" ? new MemoryLinkStore() : new SqliteLinkStore(`${options.ledger}.stripe-links`);
  const handler = createStripeWebhook({
    secret: options.stripeWebhookSecret,
    toleranceSeconds: Math.ceil(options.stripeTolerance / 1000),
    priceMap,
    links,
    apply,
    logger,
    registry,
  });
  logger.info({ route: STRIPE_WEBHOOK_ROUTE, mappedPrices: priceMap.size, toleranceSeconds: Math.ceil(options.stripeTolerance / 1000) }, "Stripe webhook enabled");
  return { routes: { [STRIPE_WEBHOOK_ROUTE]: handler }, close: () => links.close() };
}
