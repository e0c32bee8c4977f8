import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/errors/index.js";
import { MemoryLinkStore, PriceMap, SqliteLinkStore, type LinkStore } from "../../src/stripe/index.js";
import { tempDir } from "../harness/tmp.js";
import { PRICE_MAP_PATH } from "./fixtures/stripe.js";

describe("price map", () => {
  it("resolves by price id, lookup key, price metadata, product, product metadata: first match wins", () => {
    const map = PriceMap.load(PRICE_MAP_PATH);
    expect(map.resolve({ priceId: "price_1QGwzBasicMonthlyEUR" })).toEqual({ kind: "plan", id: "basic" });
    expect(map.resolve({ priceId: "price_x", lookupKey: "premium_yearly" })).toEqual({ kind: "plan", id: "premium" });
    expect(map.resolve({ priceId: "price_x", productId: "prod_R2kEnterpriseLg01" })).toEqual({ kind: "plan", id: "enterprise" });
    expect(map.resolve({ priceId: "price_x", metadata: { proofgate_addon: "ai-assistant" } })).toEqual({ kind: "addon", id: "ai-assistant" });
    expect(map.resolve({ priceId: "price_x", productMetadata: { proofgate_plan: "basic" } })).toEqual({ kind: "plan", id: "basic" });
    expect(map.resolve({ priceId: "price_x", metadata: { proofgate_ignore: "true" } })).toEqual({ kind: "ignore" });
    expect(map.resolve({ priceId: "price_1QGwzOnboardingFee" })).toEqual({ kind: "ignore" });
    // The price id beats its metadata; metadata beats the product.
    expect(map.resolve({ priceId: "price_1QGwzBasicMonthlyEUR", metadata: { proofgate_plan: "enterprise" } })).toEqual({ kind: "plan", id: "basic" });
    expect(map.resolve({ priceId: "price_x", metadata: { proofgate_plan: "basic" }, productId: "prod_R2kEnterpriseLg01" })).toEqual({ kind: "plan", id: "basic" });
    expect(map.resolve({ priceId: "price_x", lookupKey: "nothing" })).toBeUndefined();
  });

  it("loads inline JSON (the --stripe-price-map value) and nothing for an empty value", () => {
    const map = PriceMap.load('{"plans": {"premium": ["price_A"]}, "addons": {"ai-assistant": "price_B"}}');
    expect(map.resolve({ priceId: "price_A" })).toEqual({ kind: "plan", id: "premium" });
    expect(map.resolve({ priceId: "price_B" })).toEqual({ kind: "addon", id: "ai-assistant" });
    expect(PriceMap.load("  ").size).toBe(0);
  });

  it("refuses a bad map, naming the entry", () => {
    const bad = (text: string): string => {
      try {
        PriceMap.parse(text, "prices.yaml");
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidArgumentError);
        return (err as Error).message;
      }
      throw new Error(`accepted: ${text}`);
    };
    expect(bad("plans: {premium: [price_A]}\naddons: {ai-assistant: [price_A]}")).toBe('prices.yaml: addons.ai-assistant[0]: "price_A" is already mapped to plan "premium"');
    expect(bad("plan: {premium: [price_A]}")).toMatch(/prices.yaml: plan: unknown key/);
    expect(bad("plans: {premium: [42]}")).toMatch(/plans.premium\[0\]: must be a non-empty string/);
    expect(bad("ignore: price_A")).toMatch(/ignore: must be a list/);
    expect(bad("- just\n- a list")).toMatch(/must be an object/);
    expect(bad("plans: {premium: [")).toMatch(/not valid YAML or JSON/);
    expect(() => PriceMap.load("/nonexistent/prices.yaml")).toThrow(/stripe-price-map: cannot read \/nonexistent\/prices.yaml/);
  });
});

describe("link stores", () => {
  const dir = tempDir("proofgate-links-");
  const stores: LinkStore[] = [];
  afterEach(() => {
    for (const s of stores.splice(0)) s.close();
  });
  afterAll(() => {
    dir.dispose();
  });

  const exercise = (store: LinkStore): void => {
    store.learn([
      { kind: "payment", paymentId: "pi_1", invoiceId: "in_1" },
      { kind: "invoice", invoiceId: "in_1", link: { subscriptionId: "sub_1", customerId: "cus_1", planId: "premium", addonIds: [], quantity: 2, periodStart: 1, periodEnd: 2 } },
      { kind: "price", priceId: "price_1", role: { kind: "addon", id: "ai-assistant" } },
    ]);
    // A later sighting without items keeps what the earlier one resolved.
    store.learn([{ kind: "invoice", invoiceId: "in_1", link: { subscriptionId: "sub_1", customerId: "cus_1" } }]);
    store.park(["pi_9", "ch_9"], { eventId: "evt_9", event: '{"id":"evt_9"}' });
    store.park(["pi_9"], { eventId: "evt_8", event: '{"id":"evt_8"}' });
  };

  const verify = (store: LinkStore): void => {
    expect(store.invoiceOfPayment("pi_1")).toBe("in_1");
    expect(store.invoiceOfPayment("pi_2")).toBeUndefined();
    expect(store.invoice("in_1")).toMatchObject({ subscriptionId: "sub_1", customerId: "cus_1", planId: "premium", quantity: 2, periodEnd: 2 });
    expect(store.priceRole("price_1")).toEqual({ kind: "addon", id: "ai-assistant" });
    expect(store.parked(["ch_9", "pi_9"]).map((p) => p.eventId).sort()).toEqual(["evt_8", "evt_9"]);
    store.unpark(["evt_9"]);
    expect(store.parked(["ch_9", "pi_9"])).toEqual([{ eventId: "evt_8", event: '{"id":"evt_8"}' }]);
  };

  it("in memory", () => {
    const store = new MemoryLinkStore();
    stores.push(store);
    exercise(store);
    verify(store);
  });

  it("in memory, bounded: the oldest links are forgotten first", () => {
    const store = new MemoryLinkStore(2);
    stores.push(store);
    store.learn([1, 2, 3].map((i) => ({ kind: "payment" as const, paymentId: `pi_${i}`, invoiceId: `in_${i}` })));
    expect([1, 2, 3].map((i) => store.invoiceOfPayment(`pi_${i}`))).toEqual([undefined, "in_2", "in_3"]);
  });

  it("in SQLite, surviving a restart", () => {
    const path = join(dir.path, "ledger.db.stripe-links");
    const first = new SqliteLinkStore(path);
    exercise(first);
    first.close();
    const second = new SqliteLinkStore(path);
    stores.push(second);
    verify(second);
  });

  it("SQLite prunes links older than the retention", () => {
    let now = 1_000_000;
    const store = new SqliteLinkStore(join(dir.path, "prune.stripe-links"), () => now, 1_000);
    stores.push(store);
    store.learn([{ kind: "payment", paymentId: "pi_old", invoiceId: "in_old" }]);
    now += 5_000;
    // Pruning runs every 10,000 writes.
    store.learn(Array.from({ length: 10_000 }, (_, i) => ({ kind: "payment" as const, paymentId: `pi_${i}`, invoiceId: "in_new" })));
    expect(store.invoiceOfPayment("pi_old")).toBeUndefined();
    expect(store.invoiceOfPayment("pi_9999")).toBe("in_new");
  });
});
