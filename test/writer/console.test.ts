import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { NatsConnection } from "nats";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { DEMO_CUSTOMER, demoStory } from "../../src/dev/story.js";
import { PaymentResult, RecoveryResult, type BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { AuditEntry } from "../../src/gen/proofgate/v1/admin.js";
import type { ConsoleAuth } from "../../src/writer/index.js";
import { NatsServer } from "../harness/nats.js";
import { startTestSidecar, type TestSidecar } from "../harness/sidecar.js";
import { tempDir } from "../harness/tmp.js";
import { connectNats, DAY, EventFactory, startTestWriter, waitFor, type TestWriter } from "../harness/writer.js";

/**
 * The console in a real headless Chromium against a real writer (and a sidecar, and NATS):
 * what a person sees on each page for the demo story's customer and for a customer with 200
 * events, and that nobody sees anything without signing in.
 */

/** An element as the page functions below use it (this project's TypeScript has no DOM types). */
interface Attributed {
  getAttribute(name: string): string | null;
}

const CHROMIUM = process.env["PROOFGATE_CHROMIUM"] ?? "/usr/bin/chromium";
/** Set to a directory (docs/console) to refresh the README's screenshots. */
const SHOTS = process.env["PROOFGATE_CONSOLE_SCREENSHOTS"];
const HOUR = 3_600_000;
const READ_TOKEN = "console-read-token";
const INGEST_TOKEN = "console-ingest-token";

const auth: ConsoleAuth = {
  authenticateToken: (t) =>
    t === READ_TOKEN ? { name: "ops@example.com", roles: new Set(["read"]) } : t === INGEST_TOKEN ? { name: "billing-bot", roles: new Set(["ingest"]) } : undefined,
  verifyAudit: () => ({ ok: true, entries: 42 }),
  role: () => "primary",
};

/** 200 events: a trial that ends unpaid, 95 short paid periods, quantity changes, then a failed renewal whose grace runs out. */
function longCustomer(start: number): { events: BillingEvent[]; trialEnd: number; graceEnd: number } {
  const f = new EventFactory("cus_long", "long", start, "sub_long");
  const trialEnd = start + 5 * DAY;
  const events: BillingEvent[] = [f.subscribe("premium", { trialEnd: new Date(trialEnd), currentPeriodStart: new Date(start), currentPeriodEnd: new Date(trialEnd) })];
  const PERIOD = 3 * DAY;
  let p = start + 8 * DAY;
  for (let k = 1; k <= 95; k++) {
    const period = { periodStart: new Date(p), periodEnd: new Date(p + PERIOD), quantity: 1 + Math.floor(k / 13) };
    events.push(f.pay(PaymentResult.PAYMENT_RESULT_PROCESSING, `in_${k}`, period, p - start));
    events.push(f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, `in_${k}`, period, p - start + HOUR));
    if (k % 13 === 0) events.push(f.subscribe("premium", { quantity: 1 + k / 13 }, p - start + 2 * HOUR));
    p += PERIOD;
  }
  events.push(f.pay(PaymentResult.PAYMENT_RESULT_FAILED, "in_96", { periodStart: new Date(p), periodEnd: new Date(p + PERIOD) }, p - start + HOUR));
  events.push(f.recover(RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED, "in_96", new Date(p + 3 * DAY), p - start + HOUR));
  return { events, trialEnd, graceEnd: p + 7 * DAY };
}

describe("the writer's console in a headless browser", () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  let w: TestWriter;
  let side: TestSidecar;
  let dir: ReturnType<typeof tempDir>;
  let browser: Browser;
  let base: string;
  let storyPeriodEnd = 0;
  let long: ReturnType<typeof longCustomer>;

  beforeAll(async () => {
    nats = await NatsServer.start();
    nc = await connectNats(nats.url);
    dir = tempDir("proofgate-console-");
    w = await startTestWriter({ natsUrl: nats.url, console: auth });
    await w.client.applyCatalog();
    base = `http://${w.writer.httpAddress}`;
    side = await startTestSidecar({ natsUrl: nats.url, dir: dir.path, statusIntervalMs: 200 });

    // The demo story, on a clock of its own: every beat's instant is explicit, so no test waits.
    const PERIOD = 10 * 60_000;
    let t = Date.now() - 25 * 60_000;
    let first = 0;
    for (const beat of demoStory(PERIOD)) {
      t += (beat.waitMs ?? 0) + 60_000;
      const events = beat.events(t);
      if (events.length === 0) continue;
      const res = await w.client.publish(events);
      expect(res.results.every((r) => r.reason === "")).toBe(true);
      if (events[0]?.kind?.$case === "payment" && !first) first = events[0].kind.value.periodEnd?.getTime() ?? 0;
    }
    storyPeriodEnd = first;

    long = longCustomer(Date.now() - 320 * DAY);
    expect(long.events).toHaveLength(200);
    const res = await w.client.publish(long.events);
    expect(res.results.filter((r) => r.reason !== "")).toEqual([]);

    // A poison message for the dead-letter list.
    await nc.jetstream().publish("proofgate.billing.console", new TextEncoder().encode("not a billing event at all"));

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
    });
    if (SHOTS) mkdirSync(SHOTS, { recursive: true });
  }, 120_000);

  afterAll(async () => {
    await browser.close();
    await side.close();
    await w.dispose();
    await nc.close();
    await nats.dispose();
    dir.dispose();
  });

  async function signedIn(): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 1760, height: 1000 } });
    await page.goto(`${base}/console/login`);
    await page.fill("input[name=token]", READ_TOKEN);
    await page.click("#login button[type=submit]");
    await page.waitForURL(/\/console\/customer/);
    return page;
  }

  /** The feature row's segments: status and where each starts and ends (ms), with the painted colour. */
  async function segments(page: Page, feature: string): Promise<{ status: string; from: number; to: number; fill: string }[]> {
    return page.$$eval(`g.feature[data-feature="${feature}"] rect.seg`, (elements) =>
      (elements as unknown as Attributed[]).map((r) => ({
        status: r.getAttribute("data-status") ?? "",
        from: Number(r.getAttribute("data-from")),
        to: Number(r.getAttribute("data-to")),
        // Runs in the page (no DOM types in this project's TypeScript setup).
        fill: (globalThis as unknown as { getComputedStyle(e: unknown): { fill: string } }).getComputedStyle(r).fill,
      })),
    );
  }

  /** The status right before and right after `at`, and whether the colour changes there. */
  function changeAt(segs: { status: string; from: number; to: number; fill: string }[], at: number): { before: string | undefined; after: string | undefined; colourChanged: boolean } {
    const after = segs.find((s) => s.from === at);
    const before = segs.find((s) => s.to === at);
    return { before: before?.status, after: after?.status, colourChanged: before !== undefined && after !== undefined && before.fill !== after.fill };
  }

  test("without signing in, every page and the export answer with the login page, never data", async () => {
    for (const path of [`/console/customer?id=${DEMO_CUSTOMER}`, "/console/audit", "/console/health", "/console/audit.jsonl"]) {
      const res = await fetch(`${base}${path}`);
      const body = await res.text();
      expect(res.status, path).toBe(401);
      expect(body, path).toContain('name="token"');
      for (const secret of ["in_demo_1", "api-access", "Revision", "proofgate.billing.console", "ops@example.com"]) expect(body, path).not.toContain(secret);
    }
    const page = await browser.newPage();
    await page.goto(`${base}/console/customer?id=${DEMO_CUSTOMER}`);
    expect(await page.locator("#login").isVisible()).toBe(true);
    expect(await page.locator("svg.timeline").count()).toBe(0);
    await page.fill("input[name=token]", "wrong");
    await page.click("#login button[type=submit]");
    expect(await page.locator("#login-error").textContent()).toContain("not accepted");
    // A principal without the read role is refused.
    await page.fill("input[name=token]", INGEST_TOKEN);
    await page.click("#login button[type=submit]");
    expect(await page.locator("#login-error").textContent()).toBe("billing-bot does not have the read role the console needs.");
    const ingest = await fetch(`${base}/console/audit`, { headers: { authorization: `Bearer ${INGEST_TOKEN}` } });
    expect(ingest.status).toBe(403);
    expect(await ingest.text()).toContain("does not have the <code>read</code> role");
    // The read token signs in and lands where it was going; the cookie is HttpOnly and SameSite=Strict.
    await page.fill("input[name=token]", READ_TOKEN);
    await page.click("#login button[type=submit]");
    await page.waitForURL(new RegExp(`/console/customer\\?id=${DEMO_CUSTOMER}$`));
    const cookie = (await page.context().cookies()).find((c) => c.name === "proofgate_console");
    expect(cookie?.httpOnly).toBe(true);
    expect(cookie?.sameSite).toBe("Strict");
    expect(cookie?.value).not.toContain(READ_TOKEN);
    expect(await page.locator("svg.timeline").count()).toBe(1);
    await page.click("header button[type=submit]");
    await page.waitForURL(/\/console\/login/);
    await page.goto(`${base}/console/health`);
    expect(await page.locator("#login").isVisible()).toBe(true);
    await page.close();
  });

  test("the demo story's customer: intent, in-flight 3-D Secure, paid windows, recovery, refund; access changes at the period end with no event", async () => {
    const page = await signedIn();
    await page.fill("#search input[name=id]", DEMO_CUSTOMER);
    await page.click("#search button");
    await page.waitForSelector("svg.timeline");
    const band = page.locator('g.band[data-subscription="sub_demo"]');
    expect(await band.count()).toBe(1);
    const marks = await band.locator("g.mark").evaluateAll((gs) => (gs as unknown as Attributed[]).map((g) => `${g.getAttribute("data-lane")}:${g.getAttribute("data-kind")}`));
    expect(marks.sort()).toEqual(
      ["intent:intent", "in-flight:requires_action", "paid:succeeded", "paid:failed", "paid:succeeded", "recovery:retry_scheduled", "recovery:recovered", "refund:refunded"].sort(),
    );
    const spans = await band.locator("rect.span").evaluateAll((rs) => (rs as unknown as Attributed[]).map((r) => `${r.getAttribute("data-lane")}:${r.getAttribute("data-kind")}`));
    expect(spans).toEqual(expect.arrayContaining(["intent:intent", "paid:paid", "paid:revoked", "in-flight:in-flight", "recovery:retry"]));

    // api-access: required → pending → granted → grace (at the period end, no event) → granted → revoked.
    const api = await segments(page, "api-access");
    expect(api.map((s) => s.status).filter((s, i, a) => s !== a[i - 1])).toEqual(["PAYMENT_REQUIRED", "PAYMENT_PENDING", "GRANTED", "GRACE_PERIOD", "GRANTED", "REVOKED"]);
    expect(changeAt(api, storyPeriodEnd)).toEqual({ before: "GRANTED", after: "GRACE_PERIOD", colourChanged: true });

    // Clicking a mark shows the event, its source, correlation id and the rule that decided.
    await band.locator('g.mark[data-kind="refunded"]').click();
    const details = await page.locator("#details").textContent();
    expect(details).toContain("source");
    expect(details).toContain("demo");
    expect(details).toContain("correlation");
    expect(details).toMatch(/api-access: GRANTED → REVOKED \(The payment for invoice in_demo_2 was refunded/);

    // Beside it: every feature's answer now, and the revision.
    expect(await page.locator('#answers tr[data-feature="api-access"]').textContent()).toMatch(/denied\s*REVOKED/);
    expect(await page.locator("#answers tbody tr").count()).toBe(8);
    expect(Number(await page.locator("#revision").textContent())).toBeGreaterThan(0);
    if (SHOTS) await page.screenshot({ path: join(SHOTS, "customer.png"), fullPage: true });
    await page.close();
  });

  test("a customer with 200 events: the access row changes colour at the trial end and at the grace end", async () => {
    const page = await signedIn();
    await page.goto(`${base}/console/customer?id=cus_long`);
    const band = page.locator('g.band[data-subscription="sub_long"]');
    expect(await band.locator("g.mark").count()).toBe(200);
    expect(await band.locator('rect.span[data-kind="trial"]').count()).toBe(1);
    expect(await band.locator('rect.span[data-kind="paid"]').count()).toBe(95);
    const api = await segments(page, "api-access");
    expect(changeAt(api, long.trialEnd)).toEqual({ before: "GRANTED", after: "PAYMENT_REQUIRED", colourChanged: true });
    expect(changeAt(api, long.graceEnd)).toEqual({ before: "GRACE_PERIOD", after: "SUSPENDED", colourChanged: true });
    await page.locator(`g.feature[data-feature="api-access"] rect.seg[data-from="${long.graceEnd}"]`).click();
    expect(await page.locator("#details").textContent()).toMatch(/The grace period ended on .* after a failed renewal \(card_declined\)/);
    await page.close();
  });

  test("the audit page filters, pages and exports the trail, with the chain's status", async () => {
    const page = await signedIn();
    await page.goto(`${base}/console/audit`);
    expect(await page.locator("#chain").textContent()).toBe("Not verified yet.");
    await page.click("text=Verify the chain now");
    expect(await page.locator("#chain").textContent()).toBe("Verified: 42 entries, chain intact");
    // Newest first, 50 a page, and "Older" goes on without repeating.
    const seqs = async (): Promise<number[]> => (await page.locator("#audit tbody tr td:first-child").allTextContents()).map(Number);
    const first = await seqs();
    expect(first).toHaveLength(50);
    expect([...first].sort((a, b) => b - a)).toEqual(first);
    await page.click("#older");
    const second = await seqs();
    expect(Math.max(...second)).toBeLessThan(Math.min(...first));

    await page.goto(`${base}/console/audit`);
    await page.fill("#audit-filters input[name=customer]", DEMO_CUSTOMER);
    await page.selectOption("#audit-filters select[name=kind]", "ACCESS_CHANGED");
    await page.click("#audit-filters button");
    const kinds = await page.locator("#audit tbody tr td:nth-child(3)").allTextContents();
    expect(kinds.length).toBeGreaterThan(0);
    expect(new Set(kinds)).toEqual(new Set(["ACCESS_CHANGED"]));
    expect(new Set(await page.locator("#audit tbody tr td:nth-child(4)").allTextContents())).toEqual(new Set([DEMO_CUSTOMER]));
    if (SHOTS) await page.screenshot({ path: join(SHOTS, "audit.png"), fullPage: true });

    // The export holds the same entries, as AuditEntry JSON lines.
    const href = await page.locator("#export").getAttribute("href");
    const res = await fetch(`${base}${href ?? ""}`, { headers: { authorization: `Bearer ${READ_TOKEN}` } });
    expect(res.status).toBe(200);
    const lines = (await res.text()).trim().split("\n").map((l) => AuditEntry.fromJSON(JSON.parse(l)));
    expect(lines.map((e) => e.seq)).toEqual((await page.locator("#audit tbody tr td:first-child").allTextContents()).map(Number));
    expect(lines.every((e) => e.customerId === DEMO_CUSTOMER && e.feature !== "")).toBe(true);

    const bad = await fetch(`${base}/console/audit.jsonl?kind=NOPE`, { headers: { authorization: `Bearer ${READ_TOKEN}` } });
    expect(bad.status).toBe(400);
    expect(await bad.text()).toMatch(/^kind: unknown kind "NOPE"/);
    await page.close();
  });

  test("the health page: outbox, head revision, role, dead letters with their reason and first bytes, sidecars heard from", async () => {
    const page = await signedIn();
    await waitFor(async () => {
      await page.goto(`${base}/console/health`);
      const sidecars = await page.locator("#sidecars tbody tr").first().textContent();
      const dl = await page.locator("#dl-stream").textContent();
      return sidecars?.includes(`${side.sidecar.revision}`) && dl?.includes("1 on the") ? true : undefined;
    }, "the sidecar's status and the dead letter on the health page");
    expect(await page.locator("#role .v").textContent()).toBe("primary");
    expect(await page.locator("#outbox .v").textContent()).toBe("0");
    expect(Number(await page.locator("#head .v").textContent())).toBe(w.writer.headRevision());
    const row = await page.locator("table.deadletters tbody tr").first().textContent();
    expect(row).toContain("proofgate.billing.console");
    expect(row).toMatch(/payload: /);
    expect(row).toContain("not a billing event at all");
    expect(await page.locator("#sidecars tbody tr").first().textContent()).toMatch(/ready\s*fresh/);
    if (SHOTS) await page.screenshot({ path: join(SHOTS, "health.png"), fullPage: true });
    await page.close();
  });
});

describe("a console without authentication", () => {
  test("is served on a loopback writer, and says so on every page", async () => {
    const nats = await NatsServer.start();
    const w = await startTestWriter({ natsUrl: nats.url });
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"] });
    try {
      await w.client.applyCatalog();
      const page = await browser.newPage();
      for (const path of ["customer", "audit", "health"]) {
        await page.goto(`http://${w.writer.httpAddress}/console/${path}`);
        expect(await page.locator("#auth-warning").textContent()).toContain("No authentication is configured");
        expect(await page.locator("#login").count()).toBe(0);
      }
      await page.goto(`http://${w.writer.httpAddress}/console/customer?id=nobody`);
      expect(await page.locator("#not-found").textContent()).toBe("unknown customer");
    } finally {
      await browser.close();
      await w.dispose();
      await nats.dispose();
    }
  });
});
