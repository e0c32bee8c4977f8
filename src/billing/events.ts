/**
 * Billing events built in code, rather than decoded from a billing system: the demo story, the
 * tests and the benchmark. One builder, so every field gets a deliberate value (proto3 cannot
 * tell "unset" from zero for most of them) and a field added to billing.proto is filled in one place.
 */
import {
  PaymentSession,
  PaymentResult,
  SubscriptionStatus,
  type BillingEvent,
  type PaymentOutcome,
  type RecoveryOutcome,
  type RecoveryResult,
  type SubscriptionChanged,
} from "../gen/proofgate/v1/billing.js";

/** Unix ms or a Date. */
export type Instant = number | Date;

export type EventKind = NonNullable<BillingEvent["kind"]>;

const date = (t: Instant): Date => new Date(t);
const maybeDate = (t: Instant | undefined): Date | undefined => (t === undefined ? undefined : new Date(t));

/**
 * A subscription's intent, by the message's own field names (partial messages spread in): plan and
 * period, the rest defaults to an active single seat.
 */
export interface SubscriptionFields {
  readonly planId: string;
  readonly currentPeriodStart: Instant | undefined;
  readonly currentPeriodEnd: Instant | undefined;
  readonly status?: SubscriptionStatus;
  readonly addonIds?: readonly string[];
  readonly quantity?: number;
  readonly cancelAt?: Instant | undefined;
  readonly trialEnd?: Instant | undefined;
  readonly version: number;
}

export function subscriptionChange(f: SubscriptionFields): { $case: "subscription"; value: SubscriptionChanged } {
  return {
    $case: "subscription",
    value: {
      status: f.status ?? SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE,
      planId: f.planId,
      addonIds: [...(f.addonIds ?? [])],
      quantity: f.quantity ?? 1,
      currentPeriodStart: maybeDate(f.currentPeriodStart),
      currentPeriodEnd: maybeDate(f.currentPeriodEnd),
      cancelAt: maybeDate(f.cancelAt),
      trialEnd: maybeDate(f.trialEnd),
      version: f.version,
    },
  };
}

/**
 * An invoice's payment, by the message's own field names; a failure without a reason says
 * `card_declined`, as most do.
 */
export interface PaymentFields {
  readonly invoiceId: string;
  readonly result: PaymentResult;
  readonly periodStart: Instant | undefined;
  readonly periodEnd: Instant | undefined;
  readonly planId: string;
  readonly addonIds?: readonly string[];
  readonly quantity?: number;
  readonly session?: PaymentSession;
  readonly amountMinor?: number;
  readonly currency?: string;
  readonly failureReason?: string;
}

export function paymentOutcome(f: PaymentFields): { $case: "payment"; value: PaymentOutcome } {
  return {
    $case: "payment",
    value: {
      invoiceId: f.invoiceId,
      result: f.result,
      periodStart: maybeDate(f.periodStart),
      periodEnd: maybeDate(f.periodEnd),
      planId: f.planId,
      addonIds: [...(f.addonIds ?? [])],
      quantity: f.quantity ?? 1,
      session: f.session ?? PaymentSession.PAYMENT_SESSION_UNSPECIFIED,
      amountMinor: f.amountMinor ?? 0,
      currency: f.currency ?? "",
      failureReason: f.failureReason ?? (f.result === PaymentResult.PAYMENT_RESULT_FAILED ? "card_declined" : ""),
    },
  };
}

export function recoveryOutcome(invoiceId: string, result: RecoveryResult, nextAttemptAt?: Instant): { $case: "recovery"; value: RecoveryOutcome } {
  return { $case: "recovery", value: { invoiceId, result, nextAttemptAt: maybeDate(nextAttemptAt) } };
}

/** Who and where an event is from. */
export interface Envelope {
  readonly eventId: string;
  readonly customerId: string;
  readonly subscriptionId: string;
  readonly source: string;
  readonly correlationId?: string;
}

/** `kind` may be absent only to build an invalid event on purpose. */
export function billingEvent(envelope: Envelope, at: Instant, kind: BillingEvent["kind"]): BillingEvent {
  return { correlationId: "", ...envelope, occurredAt: date(at), kind };
}

export interface BillingEventsOptions {
  readonly customerId: string;
  /** Default `sub_1`. */
  readonly subscriptionId?: string;
  readonly source: string;
  /** The id of the n-th event (from 1); default `evt_<n>`. */
  readonly eventId?: (n: number) => string;
  /** The correlation id of the n-th event; default none. */
  readonly correlationId?: (n: number) => string;
}

/** What one event may set apart from the builder's defaults. */
export type EnvelopeOverrides = Partial<Pick<Envelope, "eventId" | "subscriptionId" | "correlationId">>;

/**
 * The events of one customer, numbered: `subscription` versions count up unless given.
 * `new BillingEvents({ customerId: "cus_1", source: "test" }).payment(now, {...})`.
 */
export class BillingEvents {
  private n = 0;
  private version = 0;

  constructor(private readonly o: BillingEventsOptions) {}

  get customerId(): string {
    return this.o.customerId;
  }

  event(at: Instant, kind: EventKind, over: EnvelopeOverrides = {}): BillingEvent {
    const n = ++this.n;
    return billingEvent(
      {
        eventId: this.o.eventId ? this.o.eventId(n) : `evt_${n}`,
        customerId: this.o.customerId,
        subscriptionId: this.o.subscriptionId ?? "sub_1",
        source: this.o.source,
        correlationId: this.o.correlationId ? this.o.correlationId(n) : "",
        ...over,
      },
      at,
      kind,
    );
  }

  subscription(at: Instant, f: Omit<SubscriptionFields, "version"> & { version?: number }, over?: EnvelopeOverrides): BillingEvent {
    const version = f.version ?? ++this.version;
    this.version = Math.max(this.version, version);
    return this.event(at, subscriptionChange({ ...f, version }), over);
  }

  payment(at: Instant, f: PaymentFields, over?: EnvelopeOverrides): BillingEvent {
    return this.event(at, paymentOutcome(f), over);
  }

  recovery(at: Instant, invoiceId: string, result: RecoveryResult, nextAttemptAt?: Instant, over?: EnvelopeOverrides): BillingEvent {
    return this.event(at, recoveryOutcome(invoiceId, result, nextAttemptAt), over);
  }
}
