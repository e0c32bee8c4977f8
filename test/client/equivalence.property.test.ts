import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { msDuration } from "../../src/catalog/catalog-index.js";
import { validateCatalog } from "../../src/catalog/index.js";
import { ProofgateClient, type CheckResult, type Entitlement } from "../../src/client/index.js";
import { billingEvent } from "../../src/billing/index.js";
import { PaymentResult, PaymentSession } from "../../src/gen/proofgate/v1/billing.js";
import { DisputePolicy, FeatureType, StalePolicy, type Catalog, type Feature, type FeatureGrant, type FeatureValue } from "../../src/gen/proofgate/v1/catalog.js";
import { OverrideEffect, type Override } from "../../src/gen/proofgate/v1/document.js";
import { foldDocument } from "../../src/policy/index.js";
import { NatsServer } from "../harness/nats.js";
import { DAY, StatePublisher, startTestSidecar, waitFor, type TestSidecar } from "../harness/sidecar.js";
import { tempDir } from "../harness/tmp.js";
import { EventFactory } from "../harness/writer.js";
import { enumValue, kindOf } from "../policy/arbitraries.js";

/**
 * Local mode is the sidecar's answer without the hop: over random catalogs, documents (folded by
 * the real policy core from random billing histories and overrides) and instants, the client
 * reading the replica file in process answers exactly what the sidecar answers over gRPC, field
 * by field, for Check, CheckBatch and ListEntitlements.
 */

const T0 = Date.UTC(2026, 10, 1);
const RUNS = 60;
const time = fc.integer({ min: T0 - 40 * DAY, max: T0 + 80 * DAY });
const PLANS = ["basic", "premium", "enterprise"] as const;
const plan = fc.constantFrom(...PLANS, "no-such-plan");
const addons = fc.subarray(["extra", "ghost"]);
const invoice = fc.constantFrom("in_1", "in_2", "in_3");

/** Feature keys documents and checks use; a catalog has some of them, with random types. */
const KEYS = ["api-access", "seats", "support-tier", "exports", "retention-days"] as const;
const TIERS = ["community", "business", "dedicated"];

const featureArb: fc.Arbitrary<Feature> = fc
  .record({
    key: fc.constantFrom(...KEYS),
    type: fc.constantFrom(FeatureType.FEATURE_TYPE_BOOLEAN, FeatureType.FEATURE_TYPE_NUMERIC, FeatureType.FEATURE_TYPE_STRING),
    perUnit: fc.boolean(),
    ordered: fc.boolean(),
  })
  .map(({ key, type, perUnit, ordered }) => ({
    key,
    type,
    perUnit: type === FeatureType.FEATURE_TYPE_NUMERIC && perUnit,
    values: type === FeatureType.FEATURE_TYPE_STRING && ordered ? TIERS : [],
    description: "",
  }));

const valueFor = (f: Feature): fc.Arbitrary<FeatureValue> =>
  f.type === FeatureType.FEATURE_TYPE_BOOLEAN
    ? fc.boolean().map((value) => ({ kind: { $case: "enabled" as const, value } }))
    : f.type === FeatureType.FEATURE_TYPE_NUMERIC
      ? fc.integer({ min: 0, max: 50 }).map((value) => ({ kind: { $case: "limit" as const, value } }))
      : fc.constantFrom(...TIERS).map((value) => ({ kind: { $case: "text" as const, value } }));

const grantsFor = (features: readonly Feature[]): fc.Arbitrary<FeatureGrant[]> =>
  fc.subarray([...features]).chain((fs) => (fs.length === 0 ? fc.constant([]) : fc.tuple(...fs.map((f) => valueFor(f).map((value): FeatureGrant => ({ feature: f.key, value }))))));

const catalogArb: fc.Arbitrary<Catalog> = fc.uniqueArray(featureArb, { selector: (f) => f.key, minLength: 1, maxLength: KEYS.length }).chain((features) =>
  fc
    .record({
      plans: fc.tuple(...PLANS.map((id) => grantsFor(features).map((g) => ({ id, name: "", features: g })))),
      extra: grantsFor(features),
      grace: fc.integer({ min: 0, max: 10 }),
      dispute: enumValue(DisputePolicy),
      stale: enumValue(StalePolicy),
    })
    .map(({ plans, extra, grace, dispute, stale }): Catalog => {
      const c: Catalog = {
        features,
        plans,
        addons: [{ id: "extra", name: "", features: extra }],
        // A long coherency window: these answers are fresh; the stale path has its own test below.
        policy: { gracePeriod: grace === 0 ? undefined : msDuration(grace * DAY), coherencyWindow: msDuration(3_600_000), disputePolicy: dispute, stalePolicy: stale },
      };
      validateCatalog(c);
      return c;
    }),
);

const kind = kindOf({ invoice, plan, addons, time });

const eventsArb = fc.array(fc.record({ at: time, sub: fc.constantFrom("sub_1", "sub_2"), kind }), { maxLength: 12 });

const overridesArb: fc.Arbitrary<Override[]> = fc
  .array(
    fc.record({
      overrideId: fc.constantFrom("o1", "o2"),
      feature: fc.constantFrom("*", ...KEYS),
      effect: fc.constantFrom(OverrideEffect.OVERRIDE_EFFECT_GRANT, OverrideEffect.OVERRIDE_EFFECT_DENY),
      value: fc.option(fc.oneof(valueFor({ key: "", type: FeatureType.FEATURE_TYPE_NUMERIC, perUnit: false, values: [], description: "" }), fc.constant({ kind: { $case: "enabled" as const, value: true } })), { nil: undefined }),
      validFromMs: fc.oneof(fc.constant(0), time),
      validUntilMs: fc.oneof(fc.constant(0), time),
      reason: fc.constant("support"),
      actor: fc.constant("ops"),
      createdAtMs: time,
    }),
    { maxLength: 2 },
  )
  .map((os) => [...new Map(os.map((o) => [o.overrideId, o])).values()]);

const query = fc.record({ feature: fc.constantFrom(...KEYS, "not-a-feature"), quantity: fc.option(fc.integer({ min: 0, max: 60 }), { nil: undefined }) });

/** Everything but where the answer came from. */
const fields = ({ source: _source, ...rest }: CheckResult): Omit<CheckResult, "source"> => rest;

describe("local mode answers what the sidecar answers", () => {
  let nats: NatsServer;
  let dir: ReturnType<typeof tempDir>;
  let sc: TestSidecar;
  let pub: StatePublisher;
  let local: ProofgateClient;
  let remote: ProofgateClient;
  /** The evaluation clock both sides read. */
  let clock = T0;

  beforeAll(async () => {
    nats = await NatsServer.start();
    dir = tempDir("proofgate-client-eq-");
    pub = await StatePublisher.connect(nats.url);
    sc = await startTestSidecar({ natsUrl: nats.url, dir: dir.path, now: () => clock });
    const address = sc.sidecar.grpcAddress ?? "";
    local = new ProofgateClient({ address, replica: join(dir.path, "replica.db"), now: () => clock, failPolicy: { default: "throw" } });
    remote = new ProofgateClient({ address, replica: false, failPolicy: { default: "throw" } });
    const first = await pub.catalog(fc.sample(catalogArb, { numRuns: 1, seed: 1 })[0] as Catalog);
    await waitFor(() => sc.sidecar.revision >= first && !sc.sidecar.stale, "sidecar current");
    await waitFor(async () => {
      const r = await local.check({ customerId: "nobody", feature: "api-access" });
      return r.source === "local" && !r.stale;
    }, "local mode fresh");
  });

  afterAll(async () => {
    local.close();
    remote.close();
    await sc.close();
    await pub.close();
    await nats.dispose();
    dir.dispose();
  });

  it("for random catalogs, documents and instants, field by field", async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.option(catalogArb, { nil: undefined, freq: 3 }),
        eventsArb,
        overridesArb,
        fc.array(time, { minLength: 1, maxLength: 3 }),
        fc.array(query, { minLength: 1, maxLength: 6 }),
        async (catalog, events, overrides, instants, queries) => {
          const customerId = `cus_eq_${++n}`;
          if (catalog) await pub.catalog(catalog);
          const evs = events.map((e, i) => billingEvent({ eventId: `e${i}`, customerId, subscriptionId: e.sub, source: "prop" }, e.at, e.kind));
          const revision = await pub.document(foldDocument(customerId, evs, overrides));
          expect(await sc.sidecar.waitForRevision(revision, 10_000)).toBe(true);
          for (const at of instants) {
            clock = at;
            for (const q of queries) {
              const ask = { customerId, feature: q.feature, quantity: q.quantity, minRevision: revision };
              const [l, r] = [await local.check(ask), await remote.check(ask)];
              expect(l.source).toBe("local");
              expect(r.source).toBe("sidecar");
              expect(fields(l)).toEqual(fields(r));
            }
            const batch = [...queries.map((q) => ({ customerId, ...q })), { customerId: "cus_nobody", feature: "api-access" }];
            const [lb, rb] = [await local.checkBatch(batch, { minRevision: revision }), await remote.checkBatch(batch, { minRevision: revision })];
            expect(lb.source).toBe("local");
            expect({ ...lb, source: "", results: lb.results.map(fields) }).toEqual({ ...rb, source: "", results: rb.results.map(fields) });
            const [ll, rl] = [await local.listEntitlements(customerId, { minRevision: revision }), await remote.listEntitlements(customerId, { minRevision: revision })];
            expect(ll.source).toBe("local");
            expect(ll.entitlements).toEqual<Entitlement[]>(rl.entitlements);
            expect([ll.revision, ll.stale]).toEqual([rl.revision, rl.stale]);
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("and the same stale answers, under stale_policy deny, once the coherency window has passed", async () => {
    const customerId = "cus_eq_stale";
    clock = T0;
    const catalog = fc.sample(catalogArb, { numRuns: 1, seed: 7 })[0] as Catalog;
    const key = catalog.features[0]?.key ?? "api-access";
    const grants = catalog.plans.map((p) => ({ ...p, features: catalog.features.map((f): FeatureGrant => ({ feature: f.key, value: f.type === FeatureType.FEATURE_TYPE_BOOLEAN ? { kind: { $case: "enabled", value: true } } : f.type === FeatureType.FEATURE_TYPE_NUMERIC ? { kind: { $case: "limit", value: 5 } } : { kind: { $case: "text", value: "business" } } })) }));
    // A 1 ms window: the replica is stale between confirmations, and denies.
    await pub.catalog({ ...catalog, plans: grants, policy: { gracePeriod: undefined, coherencyWindow: msDuration(1), disputePolicy: DisputePolicy.DISPUTE_POLICY_REVOKE, stalePolicy: StalePolicy.STALE_POLICY_DENY } });
    const f = new EventFactory(customerId, "eq", T0);
    const paid = [f.subscribe("premium", {}, -DAY), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, "in_1", { session: PaymentSession.PAYMENT_SESSION_OFF_SESSION }, -DAY)];
    const revision = await pub.document(foldDocument(customerId, paid, []));
    expect(await sc.sidecar.waitForRevision(revision, 10_000)).toBe(true);
    // Only the measured age differs between two answers given at different moments.
    const age = (r: CheckResult): Omit<CheckResult, "source"> => ({ ...fields(r), reason: r.reason.replace(/current [\d.]+ m?s ago/, "current … ago") });
    const [l, r] = await waitFor(async () => {
      const pair = [await local.check({ customerId, feature: key }), await remote.check({ customerId, feature: key })] as const;
      return pair[0].stale && pair[1].stale ? pair : undefined;
    }, "both stale");
    expect(l.source).toBe("local");
    expect(l.allowed).toBe(false);
    expect(l.reason).toMatch(/^Denied because the replica is stale \(the replica was last confirmed current .* ago \(coherency window 1 ms\)\); it would have answered GRANTED: /);
    expect(age(l)).toEqual(age(r));
  });
});
