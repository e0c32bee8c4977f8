import { CatalogIndex, demoCatalog } from "../../src/catalog/index.js";
import { SubscriptionStatus, type BillingEvent, type PaymentOutcome, type PaymentResult, type RecoveryResult, type SubscriptionChanged } from "../../src/gen/proofgate/v1/billing.js";
import { BillingEvents } from "../../src/billing/index.js";
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
  private invoiceNo = 0;
  private readonly builder: BillingEvents;
  catalog: CatalogIndex;

  constructor(
    catalog: Catalog = demoCatalog(),
    readonly customerId = "cus_1",
    readonly subscriptionId = "sub_1",
  ) {
    this.catalog = CatalogIndex.from(catalog);
    this.builder = new BillingEvents({ customerId, subscriptionId, source: "test" });
  }

  at(ms: number): this {
    this.now = ms;
    return this;
  }
  advance(days: number): this {
    this.now += days * DAY;
    return this;
  }

  subscribe(plan: string, opts: Partial<SubscriptionChanged> & { subscriptionId?: string } = {}): this {
    const { subscriptionId, ...rest } = opts;
    const fields = { planId: plan, currentPeriodStart: this.now, currentPeriodEnd: this.now + 30 * DAY, ...rest };
    this.events.push(this.builder.subscription(this.now, fields, subscriptionId ? { subscriptionId } : {}));
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
    const fields = {
      invoiceId: rest.invoiceId ?? (this.invoiceNo ? `in_${this.invoiceNo}` : this.newInvoice()),
      result,
      periodStart: this.now,
      periodEnd: this.now + days * DAY,
      planId: "premium",
      amountMinor: 4900,
      currency: "EUR",
      ...rest,
    };
    this.events.push(this.builder.payment(this.now, fields, subscriptionId ? { subscriptionId } : {}));
    return this;
  }

  recovery(invoiceId: string, result: RecoveryResult, nextAttemptAt?: Date): this {
    this.events.push(this.builder.recovery(this.now, invoiceId, result, nextAttemptAt));
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
