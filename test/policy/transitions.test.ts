import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { PaymentResult as P, RecoveryResult as R } from "../../src/gen/proofgate/v1/billing.js";
import { OverrideEffect } from "../../src/gen/proofgate/v1/document.js";
import { TRANSITIONS, renderAccessStates, type Trigger } from "../../src/policy/index.js";
import { DAY, Story } from "./story.js";

const FEATURE = "api-access";

/** What each trigger means as events and time, for a premium subscription with 30-day periods. */
const steps: Record<Trigger, (s: Story) => void> = {
  subscribe: (s) => s.subscribe("premium"),
  "subscribe with trial": (s) => s.subscribe("premium", { trialEnd: new Date(s.now + 14 * DAY) }),
  "trial ends": (s) => s.advance(14),
  "payment requires action": (s) => s.pay(P.PAYMENT_RESULT_REQUIRES_ACTION),
  "payment processing": (s) => s.pay(P.PAYMENT_RESULT_PROCESSING),
  "payment succeeded": (s) => s.advance(0.001).pay(P.PAYMENT_RESULT_SUCCEEDED),
  "payment failed": (s) => s.advance(0.001).pay(P.PAYMENT_RESULT_FAILED),
  "period ends": (s) => s.advance(30),
  "renewal fails": (s) => s.advance(0.1).pay(P.PAYMENT_RESULT_FAILED, { invoiceId: s.newInvoice() }),
  "renewal requires action": (s) => s.advance(0.1).pay(P.PAYMENT_RESULT_REQUIRES_ACTION, { invoiceId: s.newInvoice() }),
  "renewal succeeds": (s) => s.advance(0.1).pay(P.PAYMENT_RESULT_SUCCEEDED),
  "recovery exhausted": (s) => s.advance(0.1).recovery(`in_2`, R.RECOVERY_RESULT_EXHAUSTED),
  "grace ends": (s) => s.advance(7),
  refund: (s) => s.advance(1).pay(P.PAYMENT_RESULT_REFUNDED),
  "dispute opened": (s) => s.advance(1).pay(P.PAYMENT_RESULT_DISPUTE_OPENED),
  "dispute won": (s) => s.advance(1).pay(P.PAYMENT_RESULT_DISPUTE_WON),
  "dispute lost": (s) => s.advance(1).pay(P.PAYMENT_RESULT_DISPUTE_LOST),
  "cancel now": (s) => s.advance(1).cancel(),
  "cancel_at reached": (s) => s.advance(1).cancel({ at: s.now + DAY }).advance(1),
  downgrade: (s) => s.advance(1).subscribe("basic"),
  "deny override": (s) => s.override(FEATURE, OverrideEffect.OVERRIDE_EFFECT_DENY, { validUntilMs: s.now + 2 * DAY }),
  "grant override": (s) => s.override(FEATURE, OverrideEffect.OVERRIDE_EFFECT_GRANT, { validUntilMs: s.now + 2 * DAY }),
  "override ends": (s) => s.advance(2),
};

describe("access state transitions", () => {
  it.each(TRANSITIONS.map((t) => [`${t.from} --${t.on}--> ${t.to}`, t] as const))("%s", (_name, t) => {
    const story = new Story();
    for (const trigger of t.via) steps[trigger](story);
    expect(story.status(FEATURE), `before "${t.on}": ${story.check(FEATURE).reason}`).toBe(t.from);
    steps[t.on](story);
    expect(story.status(FEATURE), `after "${t.on}": ${story.check(FEATURE).reason}`).toBe(t.to);
  });

  it("docs/access-states.md is rendered from the table (run `npm run docs`)", () => {
    expect(readFileSync(new URL("../../docs/access-states.md", import.meta.url), "utf8")).toBe(renderAccessStates());
  });
});
