export { validateEvent, MAX_ID_BYTES } from "./validate.js";
export { decodeEvent, encodeEventJson } from "./decode.js";
export { describeEvent, enumLabel, isKnownEnum } from "./describe.js";
export {
  BillingEvents,
  billingEvent,
  paymentOutcome,
  recoveryOutcome,
  subscriptionChange,
  type BillingEventsOptions,
  type Envelope,
  type EnvelopeOverrides,
  type EventKind,
  type Instant,
  type PaymentFields,
  type SubscriptionFields,
} from "./events.js";
