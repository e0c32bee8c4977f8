/**
 * The Stripe webhook adapter: verifies deliveries, maps Stripe events to BillingEvents and hands
 * them to the writer's ingest. See docs/stripe.md.
 */
export {
  createStripeWebhook,
  createStripeWebhookMetrics,
  verifyStripeSignature,
  STRIPE_WEBHOOK_ROUTE,
  DEFAULT_TOLERANCE_SECONDS,
  type ApplyEvents,
  type StripeWebhookOptions,
} from "./webhook.js";
export { mapStripeEvent, learnFromEvent, HANDLED_TYPES, SOURCE, METADATA_INVOICE, METADATA_SUBSCRIPTION, type MapResult, type MapContext, type IgnoreReason } from "./map.js";
export { PriceMap, METADATA_PLAN, METADATA_ADDON, METADATA_IGNORE, type PriceMapSpec, type PriceRole } from "./price-map.js";
export { MemoryLinkStore, SqliteLinkStore, type LinkStore, type LinkReader, type LinkUpdate, type InvoiceLink } from "./links.js";
export type { StripeEventShape } from "./objects.js";
