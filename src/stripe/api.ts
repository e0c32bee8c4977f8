import Stripe from "stripe";
import type { ChargeShape, DisputeShape, InvoiceLineShape, InvoiceShape, PaymentIntentShape, PriceShape, RefundShape, SubscriptionShape } from "./objects.js";

/**
 * What the adapter reads from Stripe's API when a webhook cannot carry the truth (a truncated
 * line list, a payment intent that no longer names its invoice, two changes in one second), and
 * what reconciliation pages through. Objects come back in the client's pinned API version; the
 * mapping reads every version (objects.ts). Tests point it at a local HTTP double.
 */
export interface StripeReader {
  invoice(id: string): Promise<InvoiceShape>;
  /** Every line of an invoice, across pages. */
  invoiceLines(invoiceId: string): Promise<InvoiceLineShape[]>;
  paymentIntent(id: string): Promise<PaymentIntentShape>;
  /** The invoice a payment intent pays (`invoice_payments` since basil, the intent's `invoice` before). */
  invoiceOfPaymentIntent(paymentIntentId: string): Promise<string | undefined>;
  subscription(id: string): Promise<SubscriptionShape>;
  price(id: string): Promise<PriceShape>;
  /** Every subscription, whatever its status. */
  subscriptions(): AsyncIterable<SubscriptionShape>;
  /** Objects created at or after `since` (Unix seconds). */
  invoices(since: number): AsyncIterable<InvoiceShape>;
  charges(since: number): AsyncIterable<ChargeShape>;
  refunds(since: number): AsyncIterable<RefundShape>;
  disputes(since: number): AsyncIterable<DisputeShape>;
}

export interface StripeApiOptions {
  /** A secret or restricted key (`sk_...`/`rk_...`) with read access to billing objects. */
  readonly apiKey: string;
  /** Stripe's API by default; a local double in tests, e.g. `http://127.0.0.1:12111`. */
  readonly baseUrl?: string;
  /** Retries of 429s, 5xx and network errors, with Stripe's exponential backoff. */
  readonly maxNetworkRetries?: number;
  readonly timeoutMs?: number;
  /** First wait after a rate limit (429), doubled each time up to 30 s; default 1 s. */
  readonly rateLimitBackoffMs?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Rate limits: the client does not retry them (Stripe asks clients to back off), so this does. */
function rateLimited(err: unknown): boolean {
  const e = err as { type?: unknown; statusCode?: unknown } | null;
  return e?.type === "StripeRateLimitError" || e?.statusCode === 429;
}

const page = (after: string | undefined): { starting_after?: string } => (after ? { starting_after: after } : {});

/** The StripeReader over the official client; its auto-pagination walks every list. */
export class StripeApiReader implements StripeReader {
  private readonly stripe: Stripe;
  private readonly backoffMs: number;
  private readonly retries: number;

  constructor(options: StripeApiOptions) {
    this.backoffMs = options.rateLimitBackoffMs ?? 1_000;
    this.retries = Math.max(options.maxNetworkRetries ?? 5, 1);
    const url = options.baseUrl ? new URL(options.baseUrl) : undefined;
    this.stripe = new Stripe(options.apiKey, {
      maxNetworkRetries: options.maxNetworkRetries ?? 5,
      timeout: options.timeoutMs ?? 30_000,
      telemetry: false,
      ...(url ? { host: url.hostname, port: url.port || (url.protocol === "https:" ? 443 : 80), protocol: url.protocol.replace(":", "") as "http" | "https" } : {}),
    });
  }

  /** A call, again after a backoff while Stripe answers 429. */
  private async retry<T>(call: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await call();
      } catch (err) {
        if (!rateLimited(err) || attempt > this.retries) throw err;
        await sleep(Math.min(30_000, this.backoffMs * 2 ** (attempt - 1)));
      }
    }
  }

  /**
   * The client's auto-pagination, resumed after the last item seen when Stripe rate-limits a
   * page request (after a backoff), so a long listing does not start over.
   */
  private async *resumable<T extends { id: string }>(list: (startingAfter: string | undefined) => AsyncIterable<T>): AsyncIterable<T> {
    let last: string | undefined;
    for (let attempt = 1; ; ) {
      try {
        for await (const item of list(last)) {
          last = item.id;
          attempt = 1;
          yield item;
        }
        return;
      } catch (err) {
        if (!rateLimited(err) || attempt > this.retries) throw err;
        await sleep(Math.min(30_000, this.backoffMs * 2 ** (attempt - 1)));
        attempt++;
      }
    }
  }

  async invoice(id: string): Promise<InvoiceShape> {
    return (await this.retry(() => this.stripe.invoices.retrieve(id, { expand: ["payments.data.payment.payment_intent"] }))) as unknown as InvoiceShape;
  }

  async invoiceLines(invoiceId: string): Promise<InvoiceLineShape[]> {
    const out: InvoiceLineShape[] = [];
    for await (const line of this.resumable((after) => this.stripe.invoices.listLineItems(invoiceId, { limit: 100, ...(after ? { starting_after: after } : {}) }))) {
      out.push(line as unknown as InvoiceLineShape);
      if (out.length >= 10_000) break; // bounded: no invoice has more lines than that
    }
    return out;
  }

  async paymentIntent(id: string): Promise<PaymentIntentShape> {
    return await this.retry(() => this.stripe.paymentIntents.retrieve(id));
  }

  async invoiceOfPaymentIntent(paymentIntentId: string): Promise<string | undefined> {
    const page = await this.retry(() => this.stripe.invoicePayments.list({ payment: { type: "payment_intent", payment_intent: paymentIntentId }, limit: 1 }));
    const found = page.data[0]?.invoice;
    if (found) return typeof found === "string" ? found : found.id;
    // Before basil the payment intent names its invoice itself.
    const pi = await this.paymentIntent(paymentIntentId);
    return typeof pi.invoice === "string" ? pi.invoice : pi.invoice?.id;
  }

  async subscription(id: string): Promise<SubscriptionShape> {
    return await this.retry(() => this.stripe.subscriptions.retrieve(id));
  }

  async price(id: string): Promise<PriceShape> {
    return await this.retry(() => this.stripe.prices.retrieve(id, { expand: ["product"] }));
  }

  subscriptions(): AsyncIterable<SubscriptionShape> {
    return this.resumable((after) => this.stripe.subscriptions.list({ status: "all", limit: 100, ...page(after) }));
  }

  invoices(since: number): AsyncIterable<InvoiceShape> {
    return this.resumable((after) => this.stripe.invoices.list({ created: { gte: since }, limit: 100, expand: ["data.payments"], ...page(after) })) as unknown as AsyncIterable<InvoiceShape>;
  }

  charges(since: number): AsyncIterable<ChargeShape> {
    return this.resumable((after) => this.stripe.charges.list({ created: { gte: since }, limit: 100, ...page(after) }));
  }

  refunds(since: number): AsyncIterable<RefundShape> {
    return this.resumable((after) => this.stripe.refunds.list({ created: { gte: since }, limit: 100, ...page(after) }));
  }

  disputes(since: number): AsyncIterable<DisputeShape> {
    return this.resumable((after) => this.stripe.disputes.list({ created: { gte: since }, limit: 100, ...page(after) }));
  }
}
