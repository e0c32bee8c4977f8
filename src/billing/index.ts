export { validateEvent } from "./validate.js";
export { MAX_ID_BYTES, checkId, checkText, idProblem } from "./ids.js";
export { decodeEvent, decodeEventList, encodeEventJson, encodeEventList, type DecodedEvent } from "./decode.js";
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
