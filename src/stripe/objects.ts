/**
 * The parts of Stripe API objects the adapter reads, across API versions. The `stripe` package's
 * own types describe only its pinned API version, while a webhook endpoint receives objects in
 * the account's (or endpoint's) API version, so fields that moved are typed here as optional on
 * both sides: e.g. `invoice.subscription` (before 2025-03-31.basil) and
 * `invoice.parent.subscription_details.subscription` (since).
 *
 * Expandable fields arrive as ids in webhooks; they are typed as `Ref<T>` (id or object) anyway,
 * so an expanded object never breaks the adapter.
 */

export type Ref<T extends { id: string }> = string | T | null | undefined;
export type Metadata = Record<string, string> | null | undefined;

/** The id of an expandable field, whether it arrived as an id or expanded. */
export function refId<T extends { id: string }>(ref: Ref<T>): string | undefined {
  if (typeof ref === "string") return ref || undefined;
  if (ref && typeof ref === "object" && typeof ref.id === "string") return ref.id || undefined;
  return undefined;
}

/** The object of an expandable field when it arrived expanded. */
export function refObject<T extends { id: string }>(ref: Ref<T>): T | undefined {
  return ref && typeof ref === "object" ? ref : undefined;
}

export interface StripeEventShape {
  readonly id: string;
  readonly object?: string;
  readonly type: string;
  /** Unix seconds. */
  readonly created: number;
  readonly api_version?: string | null;
  readonly livemode?: boolean;
  readonly data: { readonly object: unknown; readonly previous_attributes?: unknown };
  /**
   * Not Stripe's: set by the adapter when `data.object` was read from Stripe's API after the
   * event (its state now, at least as new as the event's), so it wins over a payload of the same
   * second (complete.ts).
   */
  readonly observed?: boolean;
  readonly request?: { readonly id?: string | null; readonly idempotency_key?: string | null } | null;
}

export interface ProductShape {
  readonly id: string;
  readonly metadata?: Metadata;
}

export interface PriceShape {
  readonly id: string;
  readonly unit_amount?: number | null;
  readonly lookup_key?: string | null;
  readonly metadata?: Metadata;
  readonly product?: Ref<ProductShape>;
}

export interface SubscriptionItemShape {
  readonly id: string;
  readonly price?: PriceShape | null;
  readonly quantity?: number | null;
  readonly quantity_decimal?: string | null;
  /** On items since 2025-03-31.basil. */
  readonly current_period_start?: number | null;
  readonly current_period_end?: number | null;
  readonly metadata?: Metadata;
}

export interface ListShape<T> {
  readonly data?: readonly T[] | null;
  readonly has_more?: boolean;
}

export interface SubscriptionShape {
  readonly id: string;
  readonly object?: "subscription";
  readonly customer: Ref<{ id: string }>;
  readonly status: string;
  readonly items?: ListShape<SubscriptionItemShape> | null;
  /** On the subscription before 2025-03-31.basil. */
  readonly current_period_start?: number | null;
  readonly current_period_end?: number | null;
  readonly cancel_at?: number | null;
  readonly cancel_at_period_end?: boolean | null;
  readonly canceled_at?: number | null;
  readonly ended_at?: number | null;
  readonly trial_end?: number | null;
  readonly latest_invoice?: Ref<{ id: string }>;
  readonly metadata?: Metadata;
  /** Collection paused: renewals are voided, marked uncollectible or kept as drafts. */
  readonly pause_collection?: { readonly behavior?: string | null; readonly resumes_at?: number | null } | null;
  /** An update held until its invoice is paid (`payment_behavior: pending_if_incomplete`). */
  readonly pending_update?: { readonly subscription_items?: readonly SubscriptionItemShape[] | null; readonly expires_at?: number | null } | null;
  readonly collection_method?: string | null;
}

export interface InvoiceLineShape {
  readonly id: string;
  readonly amount?: number | null;
  readonly quantity?: number | null;
  /** Newer API versions: fractional quantities, as a decimal string. */
  readonly quantity_decimal?: string | null;
  readonly discount_amounts?: readonly unknown[] | null;
  readonly period?: { readonly start: number; readonly end: number } | null;
  /** Before 2025-03-31.basil: the price object itself. */
  readonly price?: PriceShape | null;
  /** Since 2025-03-31.basil: `pricing.price_details.price` (an id unless expanded) and `product`. */
  readonly pricing?: {
    readonly price_details?: { readonly price?: Ref<PriceShape>; readonly product?: string | null } | null;
    readonly unit_amount_decimal?: string | null;
  } | null;
  readonly proration?: boolean | null;
  readonly type?: string | null;
  readonly subscription?: Ref<{ id: string }>;
  readonly subscription_item?: Ref<{ id: string }>;
  readonly parent?: {
    readonly type?: string | null;
    readonly subscription_item_details?: {
      readonly subscription?: string | null;
      readonly subscription_item?: string | null;
      readonly proration?: boolean | null;
    } | null;
    readonly invoice_item_details?: { readonly subscription?: string | null; readonly proration?: boolean | null } | null;
  } | null;
}

export interface InvoiceShape {
  readonly id: string;
  readonly object?: "invoice";
  readonly customer: Ref<{ id: string }>;
  readonly status?: string | null;
  readonly billing_reason?: string | null;
  readonly currency?: string | null;
  readonly amount_due?: number | null;
  readonly amount_paid?: number | null;
  readonly attempt_count?: number | null;
  readonly next_payment_attempt?: number | null;
  readonly collection_method?: string | null;
  /** Unix seconds; invoices sent with payment terms (`send_invoice`). */
  readonly due_date?: number | null;
  readonly created?: number | null;
  readonly status_transitions?: {
    readonly finalized_at?: number | null;
    readonly paid_at?: number | null;
    readonly voided_at?: number | null;
    readonly marked_uncollectible_at?: number | null;
  } | null;
  readonly lines?: ListShape<InvoiceLineShape> | null;
  /** Before 2025-03-31.basil. */
  readonly subscription?: Ref<{ id: string }>;
  readonly payment_intent?: Ref<PaymentIntentShape>;
  readonly charge?: Ref<{ id: string }>;
  /** Since 2025-03-31.basil. */
  readonly parent?: {
    readonly type?: string | null;
    readonly subscription_details?: { readonly subscription?: Ref<{ id: string }>; readonly metadata?: Metadata } | null;
  } | null;
  /** Since 2025-03-31.basil, only when included (`expand[]=payments`). */
  readonly payments?: ListShape<InvoicePaymentShape> | null;
  readonly last_finalization_error?: { readonly message?: string | null; readonly code?: string | null } | null;
  readonly metadata?: Metadata;
}

export interface InvoicePaymentShape {
  readonly id?: string;
  readonly object?: "invoice_payment";
  readonly invoice: Ref<{ id: string }>;
  readonly status?: string | null;
  readonly payment?: {
    readonly type?: string | null;
    readonly payment_intent?: Ref<PaymentIntentShape>;
    readonly charge?: Ref<{ id: string }>;
  } | null;
}

export interface PaymentIntentShape {
  readonly id: string;
  readonly object?: "payment_intent";
  readonly customer?: Ref<{ id: string }>;
  readonly status?: string | null;
  readonly amount?: number | null;
  readonly currency?: string | null;
  /** Before 2025-03-31.basil. */
  readonly invoice?: Ref<InvoiceShape>;
  readonly latest_charge?: Ref<{ id: string }>;
  readonly metadata?: Metadata;
  readonly last_payment_error?: { readonly code?: string | null } | null;
}

export interface RefundShape {
  readonly id: string;
  readonly object?: "refund";
  readonly charge?: Ref<ChargeShape>;
  readonly payment_intent?: Ref<PaymentIntentShape>;
  readonly status?: string | null;
  readonly amount?: number | null;
  readonly currency?: string | null;
  readonly created?: number | null;
  readonly metadata?: Metadata;
}

export interface ChargeShape {
  readonly id: string;
  readonly object?: "charge";
  readonly customer?: Ref<{ id: string }>;
  readonly amount: number;
  readonly amount_refunded?: number | null;
  readonly refunded?: boolean | null;
  readonly currency?: string | null;
  readonly created?: number | null;
  readonly payment_intent?: Ref<PaymentIntentShape>;
  /** Before 2025-03-31.basil. */
  readonly invoice?: Ref<InvoiceShape>;
  readonly metadata?: Metadata;
}

export interface DisputeShape {
  readonly id: string;
  readonly object?: "dispute";
  readonly charge: Ref<ChargeShape>;
  readonly payment_intent?: Ref<PaymentIntentShape>;
  readonly status: string;
  readonly created?: number | null;
  readonly reason?: string | null;
  readonly amount?: number | null;
  readonly currency?: string | null;
  readonly metadata?: Metadata;
}
