import { describe, expect, it } from "vitest";
import { PaymentResult as P, PaymentSession, RecoveryResult as R } from "../../src/gen/proofgate/v1/billing.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { DisputePolicy, StalePolicy } from "../../src/gen/proofgate/v1/catalog.js";
import { OverrideEffect } from "../../src/gen/proofgate/v1/document.js";
import { CatalogIndex } from "../../src/catalog/index.js";
import { evaluate, statusName } from "../../src/policy/index.js";
import { DAY, T0, Story, demoCatalog } from "./story.js";

type Step = (s: Story) => void;
interface Expect {
  quantity?: number;
  reason?: RegExp;
  value?: string;
  limit?: number;
  validUntil?: number;
}

/** Every status an expectation has asserted, so the last test can prove all of them are covered. */
const covered = new Set<string>();

const is =
  (feature: string, status: string, e: Expect = {}): Step =>
  (s) => {
    const d = s.check(feature, e.quantity);
    const where = `${feature} at ${new Date(s.now).toISOString()}: ${d.reason}`;
    expect(statusName(d.status), where).toBe(status);
    expect(d.allowed, where).toBe(status === "GRANTED" || status === "GRACE_PERIOD");
    expect(d.reason.length, "a reason is always given").toBeGreaterThan(0);
    if (e.reason) expect(d.reason).toMatch(e.reason);
    if (e.value !== undefined) expect(d.value).toBe(e.value);
    if (e.limit !== undefined) expect(d.limit).toBe(e.limit);
    if (e.validUntil !== undefined) expect(d.validUntilMs).toBe(e.validUntil);
    covered.add(status);
  };
const step =
  (fn: (s: Story) => unknown): Step =>
  (s) => {
    fn(s);
  };

const cases: [string, Step[]][] = [
  [
    "subscribe unpaid → pay to activate → paid",
    [
      step((s) => s.subscribe("premium")),
      is("api-access", "PAYMENT_REQUIRED", { reason: /pay to activate/ }),
      is("ai-assistant", "NOT_ENTITLED"),
      step((s) => s.pay(P.PAYMENT_RESULT_SUCCEEDED)),
      is("api-access", "GRANTED", { value: "true", validUntil: T0 + 30 * DAY }),
      is("premium-support", "GRANTED"),
    ],
  ],
  [
    "3-D Secure held, then succeeded",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_REQUIRES_ACTION)),
      is("api-access", "PAYMENT_PENDING", { reason: /authentication/ }),
      step((s) => s.advance(0.01).pay(P.PAYMENT_RESULT_SUCCEEDED)),
      is("api-access", "GRANTED"),
    ],
  ],
  [
    "asynchronous payment processing, then settled; a late PROCESSING changes nothing",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_PROCESSING)),
      is("api-access", "PAYMENT_PENDING", { reason: /processing/ }),
      step((s) => s.advance(2).pay(P.PAYMENT_RESULT_SUCCEEDED, { periodStart: new Date(T0) })),
      is("api-access", "GRANTED"),
      step((s) => s.advance(0.1).pay(P.PAYMENT_RESULT_PROCESSING, { periodStart: new Date(T0) })),
      is("api-access", "GRANTED"),
    ],
  ],
  [
    "payment processing then failed, or canceled → pay to activate",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_PROCESSING).advance(1).pay(P.PAYMENT_RESULT_FAILED)),
      is("api-access", "PAYMENT_REQUIRED"),
      step((s) => s.pay(P.PAYMENT_RESULT_CANCELED, { invoiceId: s.newInvoice() })),
      is("api-access", "PAYMENT_REQUIRED"),
    ],
  ],
  [
    "renewal failed → grace → recovered",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).advance(30)),
      step((s) => s.pay(P.PAYMENT_RESULT_FAILED, { invoiceId: s.newInvoice(), session: PaymentSession.PAYMENT_SESSION_OFF_SESSION }).recovery("in_2", R.RECOVERY_RESULT_RETRY_SCHEDULED, new Date(s.now + 3 * DAY))),
      is("api-access", "GRACE_PERIOD", { reason: /Renewal failed \(card_declined\).*next attempt 2026-12-04/, validUntil: T0 + 37 * DAY }),
      step((s) => s.advance(3).pay(P.PAYMENT_RESULT_SUCCEEDED, { invoiceId: "in_2", periodStart: new Date(T0 + 30 * DAY), periodEnd: new Date(T0 + 60 * DAY) }).recovery("in_2", R.RECOVERY_RESULT_RECOVERED)),
      is("api-access", "GRANTED", { validUntil: T0 + 60 * DAY }),
      step((s) => s.advance(10)),
      is("api-access", "GRANTED"),
    ],
  ],
  [
    "a voided renewal (paused collection) gets no grace; a voided invoice of the paid period changes nothing",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).pay(P.PAYMENT_RESULT_CANCELED, { invoiceId: "in_dup" })),
      is("api-access", "GRANTED"),
      step((s) => s.advance(30).pay(P.PAYMENT_RESULT_CANCELED, { invoiceId: s.newInvoice() })),
      is("api-access", "PAYMENT_REQUIRED", { reason: /not being collected/ }),
    ],
  ],
  [
    "an invoice with payment terms: paid access until the due date plus grace, then pay to continue",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).advance(30)),
      step((s) => s.recovery(s.newInvoice(), R.RECOVERY_RESULT_RETRY_SCHEDULED, new Date(s.now + 30 * DAY)).advance(20)),
      is("api-access", "GRACE_PERIOD", { reason: /due on 2026-12-31/, validUntil: T0 + 67 * DAY }),
      step((s) => s.advance(18)),
      is("api-access", "PAYMENT_REQUIRED", { reason: /pay to continue/ }),
    ],
  ],
  [
    "a failed refund (a later success of the same invoice) restores access",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).advance(3).pay(P.PAYMENT_RESULT_REFUNDED, { invoiceId: "in_1", periodStart: undefined, periodEnd: undefined })),
      is("api-access", "REVOKED"),
      step((s) => s.advance(1).pay(P.PAYMENT_RESULT_SUCCEEDED, { invoiceId: "in_1", periodStart: new Date(T0), periodEnd: new Date(T0 + 30 * DAY) })),
      is("api-access", "GRANTED", { validUntil: T0 + 30 * DAY }),
    ],
  ],
  [
    "grace → recovery exhausted → suspended",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).advance(30).pay(P.PAYMENT_RESULT_FAILED, { invoiceId: s.newInvoice() })),
      is("api-access", "GRACE_PERIOD"),
      step((s) => s.advance(2).recovery("in_2", R.RECOVERY_RESULT_EXHAUSTED)),
      is("api-access", "SUSPENDED", { reason: /recovery gave up/ }),
    ],
  ],
  [
    "grace ends after a failed renewal → suspended, exactly at the end",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).advance(30).pay(P.PAYMENT_RESULT_FAILED, { invoiceId: s.newInvoice() })),
      step((s) => s.at(T0 + 37 * DAY - 1)),
      is("api-access", "GRACE_PERIOD"),
      step((s) => s.at(T0 + 37 * DAY)),
      is("api-access", "SUSPENDED", { reason: /grace period ended/ }),
    ],
  ],
  [
    "renewal not yet confirmed, then grace over with no payment → payment required",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).advance(31)),
      is("api-access", "GRACE_PERIOD", { reason: /not yet confirmed/ }),
      step((s) => s.advance(7)),
      is("api-access", "PAYMENT_REQUIRED", { reason: /no renewal payment/ }),
    ],
  ],
  [
    "renewal requires authentication keeps paid access in grace",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).advance(30).pay(P.PAYMENT_RESULT_REQUIRES_ACTION, { invoiceId: s.newInvoice(), session: PaymentSession.PAYMENT_SESSION_OFF_SESSION })),
      is("api-access", "GRACE_PERIOD", { reason: /requires customer authentication/ }),
      step((s) => s.advance(8)),
      is("api-access", "PAYMENT_PENDING"),
    ],
  ],
  [
    "full refund revokes at once",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).advance(3).pay(P.PAYMENT_RESULT_REFUNDED, { periodStart: undefined, periodEnd: undefined })),
      is("api-access", "REVOKED", { reason: /refunded/ }),
    ],
  ],
  [
    "dispute opened (revoke policy) → won → restored; a later loss revokes",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).advance(5).pay(P.PAYMENT_RESULT_DISPUTE_OPENED)),
      is("api-access", "REVOKED", { reason: /disputed/ }),
      step((s) => s.advance(5).pay(P.PAYMENT_RESULT_DISPUTE_WON)),
      is("api-access", "GRANTED"),
      step((s) => s.advance(1).pay(P.PAYMENT_RESULT_DISPUTE_LOST)),
      is("api-access", "REVOKED", { reason: /lost a dispute/ }),
    ],
  ],
  [
    "dispute under keep_until_lost: access kept while open, revoked when lost",
    [
      step((s) => {
        const c = demoCatalog();
        c.policy = { ...c.policy, gracePeriod: undefined, coherencyWindow: undefined, stalePolicy: StalePolicy.STALE_POLICY_UNSPECIFIED, disputePolicy: DisputePolicy.DISPUTE_POLICY_KEEP_UNTIL_LOST };
        s.catalog = CatalogIndex.from(c);
        s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).advance(5).pay(P.PAYMENT_RESULT_DISPUTE_OPENED);
      }),
      is("api-access", "GRANTED"),
      step((s) => s.advance(5).pay(P.PAYMENT_RESULT_DISPUTE_LOST)),
      is("api-access", "REVOKED"),
    ],
  ],
  [
    "upgrade held on 3-D Secure: paid features stay granted, new ones held",
    [
      step((s) => s.subscribe("premium", { quantity: 3 }).pay(P.PAYMENT_RESULT_SUCCEEDED, { quantity: 3 }).advance(10)),
      step((s) => s.subscribe("enterprise", { quantity: 5 }).pay(P.PAYMENT_RESULT_REQUIRES_ACTION, { invoiceId: s.newInvoice(), planId: "enterprise", quantity: 5, days: 20 })),
      is("api-access", "GRANTED"),
      is("seats", "GRANTED", { limit: 3, value: "3" }),
      is("support-tier", "GRANTED", { value: "business" }),
      is("ai-assistant", "PAYMENT_PENDING", { reason: /authentication/ }),
      step((s) => s.advance(0.01).pay(P.PAYMENT_RESULT_SUCCEEDED, { invoiceId: "in_2", planId: "enterprise", quantity: 5, periodStart: new Date(T0 + 10 * DAY), days: 20 })),
      is("ai-assistant", "GRANTED"),
      is("seats", "GRANTED", { limit: 5 }),
      is("support-tier", "GRANTED", { value: "dedicated" }),
    ],
  ],
  [
    "downgrade removes what is no longer wanted at once, paid or not",
    [
      step((s) => s.subscribe("enterprise").pay(P.PAYMENT_RESULT_SUCCEEDED, { planId: "enterprise" }).advance(3).subscribe("basic")),
      is("ai-assistant", "NOT_ENTITLED"),
      is("api-access", "NOT_ENTITLED"),
      is("advanced-filtering", "GRANTED"),
      is("support-tier", "GRANTED", { value: "community" }),
      is("retention-days", "GRANTED", { limit: 30 }),
    ],
  ],
  [
    "cancel now removes access at once even though paid",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).advance(3).cancel()),
      is("api-access", "CANCELED"),
    ],
  ],
  [
    "cancel at period end: granted until then, canceled at that instant with no event",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).advance(3).cancel({ at: T0 + 20 * DAY })),
      is("api-access", "GRANTED", { validUntil: T0 + 20 * DAY }),
      step((s) => s.at(T0 + 20 * DAY - 1)),
      is("api-access", "GRANTED"),
      step((s) => s.at(T0 + 20 * DAY)),
      is("api-access", "CANCELED"),
    ],
  ],
  [
    "trial grants until it ends, then pay to activate",
    [
      step((s) => s.subscribe("enterprise", { trialEnd: new Date(T0 + 14 * DAY) })),
      is("ai-assistant", "GRANTED", { reason: /trial/, validUntil: T0 + 14 * DAY }),
      step((s) => s.at(T0 + 14 * DAY)),
      is("ai-assistant", "PAYMENT_REQUIRED", { reason: /trial ended/ }),
    ],
  ],
  [
    "a trial that ended with the subscription and no payment → expired",
    [
      step((s) => s.subscribe("enterprise", { trialEnd: new Date(T0 + 14 * DAY), cancelAt: new Date(T0 + 14 * DAY) })),
      is("ai-assistant", "GRANTED"),
      step((s) => s.advance(15)),
      is("ai-assistant", "EXPIRED", { reason: /trial ended/ }),
    ],
  ],
  [
    "deny override blocks a paid feature; a deny for every feature blocks all",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).override("api-access", OverrideEffect.OVERRIDE_EFFECT_DENY, { reason: "abuse" })),
      is("api-access", "BLOCKED", { reason: /abuse/ }),
      is("premium-support", "GRANTED"),
      step((s) => s.override("*", OverrideEffect.OVERRIDE_EFFECT_DENY, { validUntilMs: T0 + 2 * DAY })),
      is("premium-support", "BLOCKED", { validUntil: T0 + 2 * DAY }),
      step((s) => s.at(T0 + 2 * DAY)),
      is("premium-support", "GRANTED"),
    ],
  ],
  [
    "grant override with a window, then expired",
    [
      step((s) => s.subscribe("basic").pay(P.PAYMENT_RESULT_SUCCEEDED, { planId: "basic" })),
      step((s) => s.override("ai-assistant", OverrideEffect.OVERRIDE_EFFECT_GRANT, { validFromMs: T0 + DAY, validUntilMs: T0 + 8 * DAY })),
      is("ai-assistant", "NOT_ENTITLED"),
      step((s) => s.at(T0 + DAY)),
      is("ai-assistant", "GRANTED", { reason: /support ticket 42/, validUntil: T0 + 8 * DAY }),
      step((s) => s.at(T0 + 8 * DAY)),
      is("ai-assistant", "EXPIRED"),
    ],
  ],
  [
    "numeric limits: per_unit seats, the most generous source wins, quantity checks",
    [
      step((s) => s.subscribe("premium", { quantity: 5 }).pay(P.PAYMENT_RESULT_SUCCEEDED, { quantity: 5 })),
      is("seats", "GRANTED", { limit: 5, value: "5", quantity: 5 }),
      is("seats", "LIMIT_EXCEEDED", { quantity: 6, limit: 5 }),
      is("retention-days", "GRANTED", { limit: 30 }),
      is("api-access", "GRANTED", { quantity: 1_000 }),
      step((s) => s.override("seats", OverrideEffect.OVERRIDE_EFFECT_GRANT, { value: { kind: { $case: "limit", value: 50 } } })),
      is("seats", "GRANTED", { limit: 50, quantity: 40 }),
    ],
  ],
  [
    "two subscriptions: any allowing source allows; otherwise the most informative denial",
    [
      step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED).subscribe("enterprise", { subscriptionId: "sub_2" })),
      is("api-access", "GRANTED"),
      is("ai-assistant", "PAYMENT_REQUIRED"),
      step((s) => s.advance(1).pay(P.PAYMENT_RESULT_REFUNDED)),
      is("api-access", "REVOKED"),
    ],
  ],
  ["no document → unknown customer", [(s) => expect(statusName(evaluate(undefined, s.catalog, "api-access", undefined, s.now).status)).toBe("UNKNOWN_CUSTOMER"), () => covered.add("UNKNOWN_CUSTOMER")]],
  [
    "a feature that is not in the catalog is not entitled",
    [step((s) => s.subscribe("premium").pay(P.PAYMENT_RESULT_SUCCEEDED)), is("teleportation", "NOT_ENTITLED", { reason: /not a feature/ })],
  ],
];

describe("check rules", () => {
  it.each(cases)("%s", (_name, steps) => {
    const story = new Story();
    for (const s of steps) s(story);
  });

  it("the cases above cover every status", () => {
    const all = Object.values(AccessStatus)
      .filter((v): v is AccessStatus => typeof v === "number" && v > AccessStatus.ACCESS_STATUS_UNSPECIFIED)
      .map(statusName);
    expect(all.filter((s) => !covered.has(s))).toEqual([]);
  });
});
