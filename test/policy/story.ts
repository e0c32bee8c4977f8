import { CatalogIndex, demoCatalog } from "../../src/catalog/index.js";
import {
  PaymentResult,
  PaymentSession,
  RecoveryResult,
  SubscriptionStatus,
  type BillingEvent,
  type PaymentOutcome,
  type SubscriptionChanged,
} from "../../src/gen/proofgate/v1/billing.js";
import { OverrideEffect, type Override } from "../../src/gen/proofgate/v1/document.js";
import type { Catalog } from "../../src/gen/proofgate/v1/catalog.js";
import { evaluate, foldDocument, statusName, type Decision } from "../../src/policy/index.js";

export const DAY = 86_400_000;
export const T0 = Date.UTC(2026, 10, 1); // 2026-11-01
export { demoCatalog };

/**
 * A customer's billing history told as a story: each call adds a realistic event at the story's
 * current time; `check` folds everything seen so far and evaluates at that time.
 */
export class Story {
  readonly events: BillingEvent[] = [];
  readonly overrides: Override[] = [];
  now = T0;
  private n = 0;
  private version = 0;
  private invoiceNo = 0;
  catalog: CatalogIndex;

  constructor(
    catalog: Catalog = demoCatalog(),
    readonly customerId = "cus_1",
    readonly subscriptionId = "sub_1",
  ) {
    this.catalog = CatalogIndex.from(catalog);
  }

  at(ms: number): this {
    this.now = ms;
    return this;
  }
  advance(days: number): this {
    this.now += days * DAY;
    return this;
  }

  private push(kind: BillingEvent["kind"], subscriptionId = this.subscriptionId): BillingEvent {
    const e: BillingEvent = {
      eventId: `evt_${++this.n}`,
      occurredAt: new Date(this.now),
      customerId: this.customerId,
      subscriptionId,
      source: "test",
      correlationId: "",
      kind,
    };
    this.events.push(e);
    return e;
  }

  subscribe(plan: string, opts: Partial<SubscriptionChanged> & { subscriptionId?: string } = {}): this {
    const { subscriptionId, ...rest } = opts;
    const s: SubscriptionChanged = {
      status: SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE,
      planId: plan,
      addonIds: [],
      quantity: 1,
      currentPeriodStart: new Date(this.now),
      currentPeriodEnd: new Date(this.now + 30 * DAY),
      cancelAt: undefined,
      trialEnd: undefined,
      version: ++this.version,
      ...rest,
    };
    this.push({ $case: "subscription", value: s }, subscriptionId);
    return this;
  }

  cancel(opts: { at?: number; subscriptionId?: string; plan?: string } = {}): this {
    return this.subscribe(opts.plan ?? "premium", {
      ...(opts.subscriptionId ? { subscriptionId: opts.subscriptionId } : {}),
      ...(opts.at === undefined ? { status: SubscriptionStatus.SUBSCRIPTION_STATUS_CANCELED } : { cancelAt: new Date(opts.at) }),
    });
  }

  newInvoice(): string {
    return `in_${++this.invoiceNo}`;
  }

  pay(result: PaymentResult, opts: Partial<PaymentOutcome> & { days?: number; subscriptionId?: string } = {}): this {
    const { days = 30, subscriptionId, ...rest } = opts;
    const p: PaymentOutcome = {
      invoiceId: rest.invoiceId ?? (this.invoiceNo ? `in_${this.invoiceNo}` : this.newInvoice()),
      result,
      periodStart: new Date(this.now),
      periodEnd: new Date(this.now + days * DAY),
      planId: "premium",
      addonIds: [],
      quantity: 1,
      session: PaymentSession.PAYMENT_SESSION_UNSPECIFIED,
      amountMinor: 4900,
      currency: "EUR",
      failureReason: result === PaymentResult.PAYMENT_RESULT_FAILED ? "card_declined" : "",
      ...rest,
    };
    this.push({ $case: "payment", value: p }, subscriptionId);
    return this;
  }

  recovery(invoiceId: string, result: RecoveryResult, nextAttemptAt?: Date): this {
    this.push({ $case: "recovery", value: { invoiceId, result, nextAttemptAt } });
    return this;
  }

  override(feature: string, effect: OverrideEffect, opts: Partial<Override> = {}): this {
    this.overrides.push({
      overrideId: `ovr_${this.overrides.length + 1}`,
      feature,
      effect,
      value: undefined,
      validFromMs: 0,
      validUntilMs: 0,
      reason: "support ticket 42",
      actor: "alice@example.com",
      createdAtMs: this.now,
      ...opts,
    });
    return this;
  }

  document() {
    return foldDocument(this.customerId, this.events, this.overrides);
  }

  check(feature: string, quantity?: number): Decision {
    return evaluate(this.document(), this.catalog, feature, quantity, this.now);
  }

  /** `GRANTED`, `PAYMENT_PENDING`…: what a test usually compares. */
  status(feature: string, quantity?: number): string {
    return statusName(this.check(feature, quantity).status);
  }
}
