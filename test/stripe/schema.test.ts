import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { decodeEvent, encodeEventJson, validateEvent } from "../../src/billing/index.js";
import { CatalogIndex, parseCatalogText } from "../../src/catalog/index.js";
import { learnFromEvent, mapStripeEvent, MemoryLinkStore, PriceMap } from "../../src/stripe/index.js";
import { lifecycle } from "./fixtures/lifecycle.js";
import { PRICE_MAP_PATH } from "./fixtures/stripe.js";
import { validate, type Schema } from "./json-schema.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SCHEMA_PATH = `${ROOT}schema/billing-event.schema.json`;
const schema = JSON.parse(readFileSync(SCHEMA_PATH, "utf8")) as Schema;
const catalog = CatalogIndex.from(parseCatalogText(readFileSync(`${ROOT}examples/catalog.yaml`, "utf8")));

/** The ```json blocks of the publishing guide. */
function guideExamples(): unknown[] {
  const text = readFileSync(`${ROOT}docs/billing-events.md`, "utf8");
  return [...text.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => JSON.parse(m[1] ?? "") as unknown);
}

/** What the writer does with a JSON message from NATS. */
function writerAccepts(json: unknown): void {
  const event = decodeEvent(Buffer.from(JSON.stringify(json)), "application/json");
  validateEvent(event, catalog);
}

/**
 * Where the schema is stricter than the writer's JSON decoding today: ts-proto's fromJSON ignores
 * unknown properties, keeps the first member of a oneof, and takes a negative number for a uint32
 * (validateEvent does not check `quantity`). Publishers catch these with the schema.
 */
const LENIENT_DECODER = new Set(["a typo", "two kinds", "a negative quantity"]);

describe("BillingEvent JSON Schema", () => {
  it("is exactly what scripts/gen-schema.mjs generates from the proto", () => {
    const generated = execFileSync(process.execPath, [`${ROOT}scripts/gen-schema.mjs`, "--stdout"], { cwd: ROOT, encoding: "utf8" });
    expect(readFileSync(SCHEMA_PATH, "utf8")).toBe(generated);
  });

  it("describes the proto's fields, requiredness and enums", () => {
    const props = schema["properties"] as Record<string, unknown>;
    expect(Object.keys(props)).toEqual(["eventId", "occurredAt", "customerId", "subscriptionId", "source", "correlationId", "subscription", "payment", "recovery"]);
    expect(schema["required"]).toEqual(["eventId", "occurredAt", "customerId", "subscriptionId"]);
    const defs = schema["$defs"] as Record<string, Schema>;
    expect(defs["SubscriptionStatus.Set"]?.["enum"]).toEqual(["SUBSCRIPTION_STATUS_ACTIVE", "SUBSCRIPTION_STATUS_CANCELED"]);
    expect(defs["PaymentResult.Set"]?.["enum"]).toHaveLength(9);
    expect(defs["PaymentSession"]?.["enum"]).toContain("PAYMENT_SESSION_UNSPECIFIED");
    expect(defs["PaymentOutcome"]?.["required"]).toEqual(["invoiceId", "result"]);
    // "required when ACTIVE" is a condition, not a required property.
    expect(defs["SubscriptionChanged"]?.["required"]).toEqual(["status"]);
  });

  it("accepts every example of the publishing guide, and so does the writer", () => {
    const examples = guideExamples();
    expect(examples.length).toBeGreaterThanOrEqual(4);
    for (const e of examples) {
      expect(validate(schema, e), JSON.stringify(e)).toEqual([]);
      expect(() => writerAccepts(e), JSON.stringify(e)).not.toThrow();
    }
  });

  it("accepts the canonical JSON of every event the Stripe adapter produces", () => {
    const ctx = { prices: PriceMap.load(PRICE_MAP_PATH), links: new MemoryLinkStore() };
    let n = 0;
    for (const stripeEvent of lifecycle().flatMap((s) => s.events)) {
      ctx.links.learn(learnFromEvent(stripeEvent, ctx));
      const r = mapStripeEvent(stripeEvent, ctx);
      if (r.outcome !== "mapped") continue;
      for (const e of r.events) {
        const json = JSON.parse(encodeEventJson(e)) as unknown;
        expect(validate(schema, json), encodeEventJson(e)).toEqual([]);
        n++;
      }
    }
    expect(n).toBeGreaterThan(15);
  });

  it("rejects what the writer would reject, naming where", () => {
    const [paid] = guideExamples().slice(1) as Record<string, unknown>[];
    if (!paid) throw new Error("no example");
    const payment = paid["payment"] as Record<string, unknown>;
    const cases: [string, Record<string, unknown>, RegExp][] = [
      ["no event id", { ...paid, eventId: undefined }, /missing required property "eventId"/],
      ["a bad instant", { ...paid, occurredAt: "yesterday" }, /\$\.occurredAt: "yesterday" is not an RFC 3339/],
      ["an unknown result", { ...paid, payment: { ...payment, result: "PAYMENT_RESULT_MAYBE" } }, /\$\.payment\.result: "PAYMENT_RESULT_MAYBE" is not one of/],
      ["an unset result", { ...paid, payment: { ...payment, result: "PAYMENT_RESULT_UNSPECIFIED" } }, /is not one of/],
      ["no kind", { ...paid, payment: undefined }, /matches 0 of oneOf/],
      ["two kinds", { ...paid, recovery: { invoiceId: "in_1", result: "RECOVERY_RESULT_RECOVERED" } }, /matches 2 of oneOf/],
      ["a typo", { ...paid, customerID: "acct_1" }, /unknown property "customerID"/],
      ["a negative quantity", { ...paid, payment: { ...payment, quantity: -1 } }, /\$\.payment\.quantity: -1 < 0/],
    ];
    for (const [what, value, error] of cases) {
      const json = JSON.parse(JSON.stringify(value)) as unknown; // drops the undefined fields
      expect(validate(schema, json).join("\n"), what).toMatch(error);
      if (!LENIENT_DECODER.has(what)) expect(() => writerAccepts(json), what).toThrow();
    }
  });
});
