import type { StripeReader } from "./api.js";
import type { LinkReader } from "./links.js";
import { secondKey } from "./map.js";
import { refId, refObject, type InvoiceLineShape, type InvoiceShape, type PaymentIntentShape, type StripeEventShape } from "./objects.js";
import type { PriceMap } from "./price-map.js";

/**
 * Fills in from Stripe's API what a webhook payload cannot carry, so that the pure mapping
 * (map.ts) sees the truth:
 * - an invoice whose `lines` were truncated (`has_more`): every line;
 * - `invoice.payment_failed`: the payment intent, to tell a 3-D Secure challenge from a decline;
 * - `payment_intent.processing` that names no invoice (since basil): its invoice, with its lines;
 * - a line whose price is only an id the map and the links do not know: the price and product,
 *   so lookup keys and metadata resolve;
 * - a subscription event of a second in which another event already changed the subscription:
 *   the subscription as it is now (`observed`), since Stripe's order within a second is unknown.
 * Without a reader the event is returned unchanged (mapping then says what is missing). Errors
 * from Stripe propagate: the webhook answers 500 and Stripe delivers again.
 */
export async function completeEvent(event: StripeEventShape, reader: StripeReader | undefined, links: LinkReader, prices: PriceMap): Promise<StripeEventShape> {
  if (!reader) return event;
  const object = event.data.object as { id?: unknown; object?: unknown } | null;
  if (!object || typeof object.id !== "string") return event;
  const id = object.id;
  const replace = (o: unknown, observed = false): StripeEventShape => ({ ...event, data: { ...event.data, object: o }, ...(observed ? { observed } : {}) });

  if (event.type.startsWith("customer.subscription.")) {
    const seen = links.note(secondKey(id, event.created));
    if (seen !== undefined && seen !== event.id) return replace(await reader.subscription(id), true);
    return event;
  }
  if (event.type.startsWith("invoice.") && object.object !== "invoice_payment") {
    let inv = await completeInvoice(object as InvoiceShape, reader, links, prices);
    if (event.type === "invoice.payment_failed" && !refObject(inv.payment_intent)) {
      const pi = await invoicePaymentIntent(inv, reader);
      if (pi) inv = { ...inv, payment_intent: pi };
    }
    return inv === object ? event : replace(inv);
  }
  if (event.type === "payment_intent.processing") {
    const pi = object as PaymentIntentShape;
    if (refObject(pi.invoice)) return event;
    const known = refId(pi.invoice) ?? links.invoiceOfPayment(pi.id) ?? pi.metadata?.["proofgate_invoice_id"];
    if (known && links.invoice(known)?.periodEnd !== undefined) return event;
    const invoiceId = known ?? (await reader.invoiceOfPaymentIntent(pi.id));
    if (!invoiceId) return event;
    const inv = await completeInvoice(await reader.invoice(invoiceId), reader, links, prices);
    return replace({ ...pi, invoice: inv });
  }
  return event;
}

/** The invoice with every line, and the prices its lines name only by an unknown id. */
async function completeInvoice(inv: InvoiceShape, reader: StripeReader, links: LinkReader, prices: PriceMap): Promise<InvoiceShape> {
  let lines: readonly InvoiceLineShape[] = inv.lines?.data ?? [];
  let changed = false;
  if (inv.lines?.has_more) {
    lines = await reader.invoiceLines(inv.id);
    changed = true;
  }
  const resolved = await Promise.all(
    lines.map(async (line) => {
      const details = line.pricing?.price_details;
      const priceId = details && typeof details.price === "string" ? details.price : undefined;
      if (!priceId || prices.resolve({ priceId, productId: details?.product ?? undefined }) || links.priceRole(priceId)) return line;
      changed = true;
      return { ...line, pricing: { ...line.pricing, price_details: { ...details, price: await reader.price(priceId) } } };
    }),
  );
  return changed ? { ...inv, lines: { ...inv.lines, data: resolved, has_more: false } } : inv;
}

async function invoicePaymentIntent(inv: InvoiceShape, reader: StripeReader): Promise<PaymentIntentShape | undefined> {
  let piId = refId(inv.payment_intent) ?? (inv.payments?.data ?? []).map((p) => refId(p.payment?.payment_intent)).find(Boolean);
  if (!piId) {
    // Since basil an invoice event names no payment: its payments do.
    const full = await reader.invoice(inv.id);
    const expanded = (full.payments?.data ?? []).map((p) => refObject(p.payment?.payment_intent)).find((p) => p !== undefined);
    if (expanded) return expanded;
    piId = refId(full.payment_intent) ?? (full.payments?.data ?? []).map((p) => refId(p.payment?.payment_intent)).find(Boolean);
  }
  return piId ? reader.paymentIntent(piId) : undefined;
}

