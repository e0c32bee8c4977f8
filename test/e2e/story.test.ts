import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { JetStreamManager } from "nats";
import { BillingEvent, PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { AccessStatus, type CheckResponse } from "../../src/gen/proofgate/v1/check.js";
import { IngestResult } from "../../src/gen/proofgate/v1/ingest.js";
import { DEMO_CUSTOMER, demoStory } from "../../src/dev/story.js";
import { EventFactory, streamLastSeq, type WriterClient, type WriterProcess } from "../harness/writer.js";
import { STORY_ANSWERS, STORY_PERIOD_MS, startDemoSystem, type DemoSystem } from "../harness/demo.js";
import { waitFor } from "../harness/wait.js";
import { runCli, type SidecarUnderTest } from "../harness/system.js";

/**
 * The real binaries end to end: a spawned nats-server, `proofgate writer` and `proofgate sidecar`
 * as child processes, driven through the same story as `proofgate dev` with every decision
 * checked at the sidecar (read-your-writes through min_revision), then the operator's commands
 * (`catalog apply`, `publish`, `check`, `explain`) run as an operator types them.
 */
const PERIOD_MS = STORY_PERIOD_MS;

interface Expect {
  readonly status: AccessStatus;
  readonly allowed: boolean;
  readonly reason: RegExp;
}

/** What the sidecar must answer for api-access and seats after each beat of the demo story. */
const STORY: readonly Expect[] = STORY_ANSWERS.map((w) => ({ ...w, status: AccessStatus[`ACCESS_STATUS_${w.status}` as keyof typeof AccessStatus] }));

const statusName = (s: AccessStatus): string => AccessStatus[s];
/** How many events the story sends. */
const beatsEventCount = (): number => demoStory(PERIOD_MS).reduce((n, b) => n + b.events(Date.now()).length, 0);

describe("the real binaries through the demo story", () => {
  let system: DemoSystem;
  let dir: string;
  let writer: WriterProcess;
  let client: WriterClient;
  let sidecar: SidecarUnderTest;
  let jsm: JetStreamManager;
  let catalogRevision = 0;

  beforeAll(async () => {
    system = await startDemoSystem("e2e");
    ({ dir, writer, client, sidecar, jsm, catalogRevision } = system);
    expect(system.catalogApplied).toMatch(/^catalog applied: 8 features, 3 plans, 1 add-ons; revision \d+$/m);
    expect(catalogRevision).toBe(await streamLastSeq(jsm));
  });

  afterAll(async () => {
    await system.close();
  });

  test("every decision of the story, at the revision IngestService.Publish returned", async () => {
    const beats = demoStory(PERIOD_MS);
    expect(beats).toHaveLength(STORY.length);
    const check = (feature: string, minRevision: number, quantity?: number): Promise<CheckResponse> =>
      sidecar.client.check({ customerId: DEMO_CUSTOMER, feature, minRevision, quantity });
    const expectDecision = (r: CheckResponse, want: Expect, what: string): void => {
      expect({ status: statusName(r.status), allowed: r.allowed }, `${what}: ${r.reason}`).toEqual({ status: statusName(want.status), allowed: want.allowed });
      expect(r.reason, what).toMatch(want.reason);
      expect(r.stale, what).toBe(false);
    };

    // Before the story the customer does not exist.
    expect((await check("api-access", catalogRevision)).status).toBe(AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER);

    let revision = catalogRevision;
    let paidUntil: Date | undefined;
    for (const [i, beat] of beats.entries()) {
      const want = STORY[i] as Expect;
      const what = `beat ${i + 1} (${beat.title})`;
      if (beat.waitMs) {
        // Time passes and no event comes: the answer changes on time, by itself, at the same revision.
        const r = await waitFor(async () => {
          const r = await check("api-access", revision);
          return r.status === want.status ? r : undefined;
        }, `${what}: ${statusName(want.status)}`, PERIOD_MS + 15_000);
        expect(r.revision).toBe(revision);
        expect(paidUntil).toBeDefined();
        expect(Date.now()).toBeGreaterThanOrEqual(paidUntil?.getTime() ?? Infinity);
      }
      const events = beat.events(Date.now());
      if (events.length > 0) {
        const res = await client.publish(events);
        expect(res.results.map((r) => r.result), what).toEqual(events.map(() => IngestResult.INGEST_RESULT_ACCEPTED));
        expect(res.revision, what).toBeGreaterThan(revision);
        revision = res.revision;
      }
      const api = await check("api-access", revision);
      expectDecision(api, want, `${what}, api-access`);
      expect(api.revision, what).toBeGreaterThanOrEqual(revision);
      const seats = await check("seats", revision);
      expectDecision(seats, want, `${what}, seats`);
      // Three seats bought: the limit is 3 whenever access is allowed.
      if (want.allowed) expect(seats.limit, what).toBe(3);
      // Not in the premium plan, whatever the payments did.
      expect((await check("ai-assistant", revision)).status, what).toBe(AccessStatus.ACCESS_STATUS_NOT_ENTITLED);
      if (want.status === AccessStatus.ACCESS_STATUS_GRANTED && i === 2) {
        paidUntil = api.validUntil;
        expect(paidUntil?.getTime()).toBeGreaterThan(Date.now());
        expect((await check("seats", revision, 3)).allowed).toBe(true);
        const over = await check("seats", revision, 4);
        expect(statusName(over.status), over.reason).toBe("ACCESS_STATUS_LIMIT_EXCEEDED");
        expect(over.allowed).toBe(false);
      }
    }

    // The operator asks the same question from the command line: denied, exit code 1.
    const human = await runCli(["check", "--customer", DEMO_CUSTOMER, "--feature", "api-access", "--address", sidecar.client.address, "--min-revision", String(revision)]);
    expect(human.code, human.stderr).toBe(1);
    expect(human.stdout).toMatch(/^DENIED {2}REVOKED {2}api-access for cus_demo$/m);
    expect(human.stdout).toMatch(/refunded/);
    expect(human.stdout).toContain(`revision: ${revision}`);
  });

  test("proofgate explain tells the customer's story: intent, proof, every access change and why", async () => {
    const res = await runCli(["explain", "--customer", DEMO_CUSTOMER, "--writer", writer.grpcAddress]);
    expect(res.code, res.stderr).toBe(0);
    const out = res.stdout;
    expect(out).toMatch(/^Customer cus_demo {2}\(subject token [A-Za-z0-9_-]{43}, revision \d+\)$/m);
    expect(out).toMatch(/denied\s+REVOKED\s+api-access\s+The payment for invoice in_demo_2 was refunded/);
    expect(out).toMatch(/intent\s+subscription sub_demo ACTIVE/);
    expect(out).toMatch(/proof\s+payment REQUIRES_ACTION .*in_demo_1/);
    expect(out).toMatch(/proof\s+payment REFUNDED .*in_demo_2/);
    expect(out).toMatch(/dunning\s+recovery RECOVERED .*in_demo_2/);
    const changes = [...out.matchAll(/access {3}api-access: (\w+) -> (\w+)/g)].map((m) => `${m[1] ?? ""} -> ${m[2] ?? ""}`);
    expect(changes).toEqual(expect.arrayContaining(["PAYMENT_REQUIRED -> PAYMENT_PENDING", "PAYMENT_PENDING -> GRANTED", "GRANTED -> REVOKED"]));
    // In the order they happened.
    expect(changes.indexOf("PAYMENT_PENDING -> GRANTED")).toBeLessThan(changes.indexOf("GRANTED -> REVOKED"));
    const json = await runCli(["explain", "--customer", DEMO_CUSTOMER, "--writer", writer.grpcAddress, "--json"]);
    expect(json.code).toBe(0);
    const parsed = JSON.parse(json.stdout) as { facts: unknown[]; document: { customerId: string } };
    expect(parsed.document.customerId).toBe(DEMO_CUSTOMER);
    expect(parsed.facts).toHaveLength(beatsEventCount());

    const unknown = await runCli(["explain", "--customer", "cus_nobody", "--writer", writer.grpcAddress]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/NOT_FOUND/);
  });

  test("proofgate publish (JSON lines, to the writer or to NATS) and proofgate check --json, with their exit codes", async () => {
    const f = new EventFactory("cus_cli@example.com", "cli");
    const file = join(dir, "events.jsonl");
    const events = [f.subscribe("premium", { quantity: 2 }), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, "in_1", { quantity: 2 })];
    writeFileSync(file, events.map((e) => JSON.stringify(BillingEvent.toJSON(e))).join("\n") + "\n");

    const published = await runCli(["publish", file, "--writer", writer.grpcAddress]);
    expect(published.code, published.stderr).toBe(0);
    expect(published.stdout).toContain(`${events[0]?.eventId ?? ""}  ACCEPTED`);
    expect(published.stdout).toContain(`${events[1]?.eventId ?? ""}  ACCEPTED`);
    const revision = Number(/^revision (\d+)$/m.exec(published.stdout)?.[1]);
    expect(revision).toBeGreaterThan(catalogRevision);

    const granted = await runCli(["check", "--json", "--customer", f.customerId, "--feature", "seats", "--quantity", "2", "--address", sidecar.client.address, "--min-revision", String(revision)]);
    expect(granted.code, granted.stderr).toBe(0);
    const answer = JSON.parse(granted.stdout) as { allowed: boolean; status: string; limit: number; revision: number; reason: string; stale?: boolean };
    expect(answer).toMatchObject({ allowed: true, status: "GRANTED", limit: 2, stale: false });
    expect(answer.revision).toBeGreaterThanOrEqual(revision);
    expect(answer.reason).toMatch(/Paid through/);

    const over = await runCli(["check", "--json", "--customer", f.customerId, "--feature", "seats", "--quantity", "3", "--address", sidecar.client.address]);
    expect(over.code).toBe(1);
    // Every field, also those at their default (proto3 JSON would leave out allowed: false).
    expect(JSON.parse(over.stdout)).toMatchObject({ allowed: false, status: "LIMIT_EXCEEDED", limit: 2 });

    // The same file again: duplicates, nothing changes.
    const again = await runCli(["publish", file, "--writer", writer.grpcAddress]);
    expect(again.code).toBe(0);
    expect(again.stdout.match(/ {2}DUPLICATE$/gm)).toHaveLength(2);
    expect(Number(/^revision (\d+)$/m.exec(again.stdout)?.[1])).toBe(revision);

    // One bad line: nothing is sent, the line is named, the exit code says so.
    const before = await streamLastSeq(jsm);
    const refund = f.pay(PaymentResult.PAYMENT_RESULT_REFUNDED, "in_1");
    const bad = join(dir, "bad.jsonl");
    writeFileSync(bad, `${JSON.stringify(BillingEvent.toJSON(refund))}\n{"eventId": "x"\n`);
    const refused = await runCli(["publish", bad, "--writer", writer.grpcAddress]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/nothing was sent[\s\S]*line 2/);
    expect(await streamLastSeq(jsm)).toBe(before);
    expect((await sidecar.client.check({ customerId: f.customerId, feature: "api-access" })).allowed).toBe(true);

    // Standard input, straight to NATS, as a billing system would publish.
    const viaNats = await runCli(["publish", "-", "--nats-url", system.nats.url], { input: JSON.stringify(BillingEvent.toJSON(refund)) + "\n" });
    expect(viaNats.code, viaNats.stderr).toBe(0);
    expect(viaNats.stdout).toMatch(new RegExp(`^${refund.eventId}  queued as billing seq \\d+$`, "m"));
    const revoked = await waitFor(async () => {
      const r = await sidecar.client.check({ customerId: f.customerId, feature: "api-access" });
      return r.status === AccessStatus.ACCESS_STATUS_REVOKED ? r : undefined;
    }, "the refund published to NATS to revoke access");
    expect(revoked.allowed).toBe(false);
    const denied = await runCli(["check", "--json", "--customer", f.customerId, "--feature", "api-access", "--address", sidecar.client.address]);
    expect(denied.code).toBe(1);
    expect(JSON.parse(denied.stdout)).toMatchObject({ allowed: false, status: "REVOKED" });

    // The catalog as the writer holds it.
    const got = await runCli(["catalog", "get", "--writer", writer.grpcAddress]);
    expect(got.code).toBe(0);
    expect(got.stdout).toMatch(/premium/);
    expect(got.stdout).toMatch(/grace_period/);
  });
});
