import { errorMessage } from "../errors/index.js";
import type { GetCustomerResponse } from "../gen/proofgate/v1/admin.js";
import { PublishResponse } from "../gen/proofgate/v1/ingest.js";
import { createLogger } from "../observability/logger.js";
import { StripeApiReader } from "../stripe/api.js";
import { MemoryLinkStore, SqliteLinkStore, type LinkStore } from "../stripe/links.js";
import { PriceMap } from "../stripe/price-map.js";
import { reconcileStripe, type LedgerView } from "../stripe/reconcile.js";
import { parseCommand } from "./args.js";
import { DEFAULT_WRITER, call, writerClients } from "./client.js";

export const summary = "reconcile the ledger with a billing system (stripe): publish what webhooks missed";

const USAGE = `usage: proofgate reconcile stripe [--writer HOST:PORT] [--price-map FILE] [--links FILE] [--api-base URL] [--dry-run] [--json]

Pages through Stripe's subscriptions, invoices (every line), charges, refunds and disputes
created since the last checkpoint (all of them the first time), derives the billing events they
imply, and publishes to the writer (${DEFAULT_WRITER}) those its ledger lacks: the same ids the
webhook gives them, so nothing is applied twice. Prints each customer whose ledger changed and
why. --dry-run prints the same and publishes nothing.

The Stripe API key comes from PROOFGATE_STRIPE_API_KEY (never a flag: flags show in process
listings). --price-map defaults to PROOFGATE_STRIPE_PRICE_MAP. --links is the adapter's links
file (<ledger>.stripe-links next to the writer's ledger) holding the checkpoint; without it the
run reads everything and keeps no checkpoint. See docs/stripe.md.`;

export async function run(argv: string[]): Promise<number> {
  const { values: v, positionals, help } = parseCommand(
    argv,
    { writer: { type: "string" }, "price-map": { type: "string" }, links: { type: "string" }, "api-base": { type: "string" }, "dry-run": { type: "boolean" }, json: { type: "boolean" } },
    USAGE,
  );
  if (help) return 0;
  if (positionals[0] !== "stripe" || positionals.length !== 1) {
    console.error(`proofgate reconcile: name the billing system ("stripe")\n\n${USAGE}`);
    return 2;
  }
  const apiKey = process.env["PROOFGATE_STRIPE_API_KEY"]?.trim();
  if (!apiKey) {
    console.error("proofgate reconcile stripe: set PROOFGATE_STRIPE_API_KEY (a restricted key with read access to billing objects)");
    return 2;
  }
  let prices: PriceMap;
  try {
    prices = PriceMap.load(v["price-map"] ?? process.env["PROOFGATE_STRIPE_PRICE_MAP"] ?? "");
  } catch (err) {
    console.error(`proofgate reconcile stripe: ${errorMessage(err)}`);
    return 2;
  }
  const links: LinkStore = v.links ? new SqliteLinkStore(v.links) : new MemoryLinkStore();
  const { ingest, admin } = writerClients(v.writer ?? process.env["PROOFGATE_WRITER_ADDRESS"] ?? DEFAULT_WRITER);
  const ledger: LedgerView = {
    customer: async (customerId) => {
      let res: GetCustomerResponse;
      try {
        res = await call<GetCustomerResponse>((md, o, cb) => admin.getCustomer({ customerId }, md, o, cb));
      } catch (err) {
        if (/^NOT_FOUND/.test(errorMessage(err))) return undefined;
        throw err;
      }
      return {
        eventIds: new Set(res.facts.map((f) => f.eventId)),
        intents: new Map((res.document?.subscriptions ?? []).map((s) => [s.subscriptionId, s.intent])),
      };
    },
  };
  try {
    const report = await reconcileStripe({
      reader: new StripeApiReader({ apiKey, ...(v["api-base"] ? { baseUrl: v["api-base"] } : {}) }),
      prices,
      links,
      ledger,
      apply: (events) => call<PublishResponse>((md, o, cb) => ingest.publish({ events }, md, o, cb), 60_000),
      logger: createLogger({ level: "warn", name: "proofgate-reconcile" }),
      dryRun: v["dry-run"] === true,
    });
    if (v.json) console.log(JSON.stringify(report));
    else {
      for (const customer of report.customers) {
        console.log(customer);
        for (const d of report.drift.filter((x) => x.customerId === customer)) console.log(`  ${d.result.padEnd(9)} ${d.eventId}: ${d.why}`);
      }
      for (const p of report.problems) console.log(`problem: ${p}`);
      console.log(
        `read ${Object.entries(report.read).map(([k, n]) => `${n} ${k}`).join(", ")} since ${new Date(report.since * 1000).toISOString()}; ` +
          `${report.drift.length} missing event(s), ${report.customers.length} customer(s)${v["dry-run"] ? " (dry run: nothing published)" : ""}`,
      );
    }
    return report.problems.length > 0 || report.drift.some((d) => d.result === "rejected") ? 1 : 0;
  } catch (err) {
    console.error(`proofgate reconcile stripe: ${errorMessage(err)}`);
    return 1;
  } finally {
    ingest.close();
    admin.close();
    links.close();
  }
}
