import { mkdirSync, renameSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect } from "nats";
import pino from "pino";
import { stringify } from "yaml";
import type { NatsServer } from "../harness/nats.js";
import { startTestStack, type TestStack } from "../harness/stack.js";
import { tempDir } from "../harness/tmp.js";
import { DAY, waitFor, type TestSidecar } from "../harness/sidecar.js";
import { EventFactory, type TestWriter } from "../harness/writer.js";
import { metric } from "../harness/system.js";
import { EnvoyAuthzClient, answerHeaders, httpStatusOf, type EnvoyCheckResponse, type HttpAttributes } from "../harness/envoy.js";
import { PaymentResult, RecoveryResult, SubscriptionStatus, type BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { OverrideEffect } from "../../src/gen/proofgate/v1/document.js";
import { DECISIONS_SUBJECT, startSidecar } from "../../src/sidecar/index.js";
import { customerToken } from "../../src/replication/subjects.js";
import type { Logger } from "../../src/observability/logger.js";

/** A logger whose JSON lines the test can read. */
function capturingLogger(): { logger: Logger; lines: () => Record<string, unknown>[] } {
  const out: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.push(...chunk.toString().split("\n").filter((l) => l !== ""));
      cb();
    },
  });
  return { logger: pino({ level: "info" }, stream), lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

/**
 * A rules directory laid out like a mounted ConfigMap: `rules.yaml` → `..data/rules.yaml`,
 * `..data` → a timestamped directory; an update writes a new directory and swaps `..data`
 * atomically, as the kubelet does.
 */
class ConfigMapDir {
  private n = 0;
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  get rulesPath(): string {
    return join(this.dir, "rules.yaml");
  }

  write(files: Record<string, string>): void {
    const version = `..v${++this.n}`;
    mkdirSync(join(this.dir, version));
    for (const [name, text] of Object.entries(files)) writeFileSync(join(this.dir, version, name), text);
    symlinkSync(version, join(this.dir, "..data_tmp"));
    renameSync(join(this.dir, "..data_tmp"), join(this.dir, "..data"));
    if (this.n === 1) for (const name of Object.keys(files)) symlinkSync(join("..data", name), join(this.dir, name));
  }
}

const RULES = {
  default: "deny",
  identity: { header: "x-customer-id" },
  rules: [
    { name: "seats", methods: ["POST"], path: { pattern: "/v1/teams/{team}/seats/{count}" }, feature: "seats", quantity: { param: "count" } },
    { name: "invite", path: { exact: "/v1/invite" }, feature: "seats", quantity: { header: "x-seats" } },
    { name: "assistant", host: "*.example.com", path: { prefix: "/v1/assistant" }, feature: "ai-assistant" },
    { name: "api", host: "api.example.com", path: { prefix: "/v1/" }, feature: "api-access" },
  ],
};

function body(res: EnvoyCheckResponse): Record<string, unknown> {
  return JSON.parse(res.denied_response?.body ?? "null") as Record<string, unknown>;
}

describe("ext_authz: Envoy's Authorization/Check on the sidecar, fed by a real writer", () => {
  let stack: TestStack;
  let nats: NatsServer;
  let writer: TestWriter;
  let sc: TestSidecar;
  let cm: ConfigMapDir;
  let envoy: EnvoyAuthzClient;
  const logs = capturingLogger();
  const now = Date.now();

  beforeAll(async () => {
    stack = await startTestStack({
      sidecar: (dir) => {
        cm = new ConfigMapDir(join(dir, "config"));
        cm.write({ "rules.yaml": stringify(RULES) });
        return { extAuthzRules: cm.rulesPath, extAuthzListen: "127.0.0.1:0", decisionLogSample: 1, logger: logs.logger };
      },
    });
    ({ nats, writer, sc } = stack);
    envoy = new EnvoyAuthzClient(sc.sidecar.extAuthzAddresses[0] ?? "");
  });

  afterAll(async () => {
    envoy.close();
    await stack.close();
  });

  const ask = (customerId: string | undefined, http: Partial<HttpAttributes> & { path: string }): Promise<EnvoyCheckResponse> =>
    envoy.check({ ...http, headers: { ...(customerId === undefined ? {} : { "x-customer-id": customerId }), ...http.headers } });

  it("listens on its own address, next to CheckService", () => {
    expect(sc.sidecar.extAuthzAddresses).toHaveLength(1);
    expect(sc.sidecar.extAuthzAddresses[0]).not.toBe(sc.sidecar.grpcAddress);
  });

  it("maps every access status to its HTTP answer and headers", async () => {
    const paid = (f: EventFactory): BillingEvent[] => [f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, "in_1")];
    const ago = (id: string, days: number) => new EventFactory(id, `evt_${id}`, now - days * DAY);
    const stories: Record<string, BillingEvent[]> = {
      cus_granted: paid(new EventFactory("cus_granted")),
      // Paid period ended a day ago: within the 7-day grace window.
      cus_grace: paid(ago("cus_grace", 30)),
      cus_required: [new EventFactory("cus_required").subscribe("premium")],
      cus_pending: ((f) => [f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION, "in_1")])(new EventFactory("cus_pending")),
      cus_suspended: ((f) => [
        ...paid(f),
        f.pay(PaymentResult.PAYMENT_RESULT_FAILED, "in_2", { periodStart: new Date(now - DAY), periodEnd: new Date(now + 29 * DAY) }),
        f.recover(RecoveryResult.RECOVERY_RESULT_EXHAUSTED, "in_2"),
      ])(ago("cus_suspended", 30)),
      cus_canceled: ((f) => [...paid(f), f.subscribe("premium", { status: SubscriptionStatus.SUBSCRIPTION_STATUS_CANCELED })])(new EventFactory("cus_canceled")),
      cus_revoked: ((f) => [...paid(f), f.pay(PaymentResult.PAYMENT_RESULT_REFUNDED, "in_1")])(new EventFactory("cus_revoked")),
      cus_blocked: paid(new EventFactory("cus_blocked")),
    };
    for (const events of Object.values(stories)) await writer.client.publish(events);
    const override = { overrideId: "", feature: "api-access", value: undefined, validFromMs: 0, validUntilMs: 0, reason: "", actor: "", createdAtMs: 0 };
    // A granted pilot that ended yesterday.
    await writer.client.putOverride({
      customerId: "cus_expired",
      override: { ...override, effect: OverrideEffect.OVERRIDE_EFFECT_GRANT, validFromMs: now - 10 * DAY, validUntilMs: now - DAY },
      actor: "ops@example.com",
      reason: "pilot",
    });
    const blocked = await writer.client.putOverride({
      customerId: "cus_blocked",
      override: { ...override, effect: OverrideEffect.OVERRIDE_EFFECT_DENY },
      actor: "ops@example.com",
      reason: "abuse",
    });
    await waitFor(() => sc.sidecar.revision >= blocked.revision, { what: "every story applied" });

    const cases: { who: string | undefined; http: Partial<HttpAttributes> & { path: string }; status: string; code: number }[] = [
      { who: "cus_granted", http: { path: "/v1/logs?since=1h" }, status: "GRANTED", code: 200 },
      { who: "cus_grace", http: { path: "/v1/logs" }, status: "GRACE_PERIOD", code: 200 },
      { who: "cus_granted", http: { method: "POST", path: "/v1/teams/t1/seats/1" }, status: "GRANTED", code: 200 },
      { who: "cus_required", http: { path: "/v1/logs" }, status: "PAYMENT_REQUIRED", code: 402 },
      { who: "cus_pending", http: { path: "/v1/logs" }, status: "PAYMENT_PENDING", code: 402 },
      { who: "cus_granted", http: { method: "POST", path: "/v1/teams/t1/seats/2" }, status: "LIMIT_EXCEEDED", code: 429 },
      { who: "cus_granted", http: { path: "/v1/invite", headers: { "x-seats": "3" } }, status: "LIMIT_EXCEEDED", code: 429 },
      { who: "cus_granted", http: { host: "eu.example.com:8443", path: "/v1/assistant/ask" }, status: "NOT_ENTITLED", code: 403 },
      { who: "cus_suspended", http: { path: "/v1/logs" }, status: "SUSPENDED", code: 403 },
      { who: "cus_canceled", http: { path: "/v1/logs" }, status: "CANCELED", code: 403 },
      { who: "cus_expired", http: { path: "/v1/logs" }, status: "EXPIRED", code: 403 },
      { who: "cus_revoked", http: { path: "/v1/logs" }, status: "REVOKED", code: 403 },
      { who: "cus_blocked", http: { path: "/v1/logs" }, status: "BLOCKED", code: 403 },
      { who: "cus_nobody", http: { path: "/v1/logs" }, status: "UNKNOWN_CUSTOMER", code: 403 },
    ];
    const seen: string[] = [];
    for (const c of cases) {
      const res = await ask(c.who, c.http);
      const h = answerHeaders(res);
      seen.push(`${c.who} ${c.http.path} → ${httpStatusOf(res)} ${h["x-proofgate-status"]}`);
      expect(`${httpStatusOf(res)} ${h["x-proofgate-status"]}`, `${c.who} ${c.http.path}`).toBe(`${c.code} ${c.status}`);
      expect(h["x-proofgate-stale"]).toBe("false");
      if (c.code === 200) {
        expect(res.status.code).toBe(0);
        expect(h["x-proofgate-customer-id"]).toBe(c.who);
        expect(Date.parse(h["x-proofgate-valid-until"] ?? "")).toBeGreaterThan(now);
        // Whatever the caller sent as x-proofgate-* never reaches the upstream: set, or removed.
        expect(new Set([...Object.keys(h), ...(res.ok_response?.headers_to_remove ?? [])])).toEqual(
          new Set(["x-proofgate-status", "x-proofgate-valid-until", "x-proofgate-value", "x-proofgate-limit", "x-proofgate-stale", "x-proofgate-customer-id"]),
        );
      } else {
        expect(res.status.code).toBe(7); // PERMISSION_DENIED
        expect(h["content-type"]).toBe("application/json");
        const b = body(res);
        expect(b["allowed"]).toBe(false);
        expect(b["status"]).toBe(c.status);
        expect(typeof b["reason"]).toBe("string");
        expect((b["reason"] as string).length).toBeGreaterThan(10);
        expect(b["reason"]).toBe(res.status.message);
        expect(h["x-proofgate-customer-id"]).toBeUndefined();
      }
    }
    expect(seen).toHaveLength(cases.length);

    // The numeric feature's value and limit go to the upstream; a boolean's value is "true".
    const seat = answerHeaders(await ask("cus_granted", { method: "POST", path: "/v1/teams/t1/seats/1" }));
    expect(seat["x-proofgate-limit"]).toBe("1");
    expect(seat["x-proofgate-value"]).toBe("1");
    const api = await ask("cus_granted", { path: "/v1/logs" });
    expect(answerHeaders(api)["x-proofgate-value"]).toBe("true");
    expect(api.ok_response?.headers_to_remove).toEqual(["x-proofgate-limit"]);
    const over = await ask("cus_granted", { method: "POST", path: "/v1/teams/t1/seats/2" });
    expect(answerHeaders(over)["x-proofgate-limit"]).toBe("1");
    expect(body(over)["limit"]).toBe(1);
    // The 3-D Secure case says so, for a front end to show.
    expect(body(await ask("cus_pending", { path: "/v1/logs" }))["reason"]).toBe("Awaiting customer authentication (3-D Secure) for invoice in_1.");
    // Grace: allowed, with the end of the grace window as valid_until.
    expect(Date.parse(answerHeaders(await ask("cus_grace", { path: "/v1/logs" }))["x-proofgate-valid-until"] ?? "")).toBeLessThan(now + 7 * DAY);
  });

  it("answers 401 without an identity, 400 for a bad quantity, and 403 for an unmatched route (default deny)", async () => {
    const none = await ask(undefined, { path: "/v1/logs" });
    expect(httpStatusOf(none)).toBe(401);
    expect(none.status.code).toBe(16); // UNAUTHENTICATED
    expect(body(none)).toMatchObject({ status: "UNAUTHENTICATED", reason: "no x-customer-id header", feature: "api-access" });
    expect(answerHeaders(none)["x-proofgate-status"]).toBe("UNAUTHENTICATED");

    const noQuantity = await ask("cus_granted", { path: "/v1/invite" });
    expect(httpStatusOf(noQuantity)).toBe(400);
    expect(body(noQuantity)["reason"]).toBe("the x-seats header is missing (rule invite takes the quantity from it)");
    const badQuantity = await ask("cus_granted", { path: "/v1/invite", headers: { "x-seats": "two" } });
    expect(httpStatusOf(badQuantity)).toBe(400);
    expect(body(badQuantity)["reason"]).toMatch(/whole number/);

    // Rules match the method and host too: GET on the seats pattern and another host fall through.
    const wrongHost = await ask("cus_granted", { host: "admin.internal", path: "/v1/logs" });
    expect(httpStatusOf(wrongHost)).toBe(403);
    expect(body(wrongHost)).toMatchObject({ status: "NO_MATCHING_RULE" });
    expect(body(wrongHost)["reason"]).toContain("admin.internal/v1/logs");
    const seatsByGet = await ask("cus_granted", { host: "other.test", path: "/v1/teams/t1/seats/1" });
    expect(body(seatsByGet)["status"]).toBe("NO_MATCHING_RULE");
  });

  it("reads raw headers (header_map, Envoy's encode_raw_headers) like the headers map", async () => {
    const res = await envoy.check({ path: "/v1/logs", headers: {}, header_map: { headers: [{ key: "x-customer-id", raw_value: Buffer.from("cus_granted") }] } });
    expect(httpStatusOf(res)).toBe(200);
    expect(answerHeaders(res)["x-proofgate-customer-id"]).toBe("cus_granted");
  });

  it("records its decisions in the decision log and the metrics like any check", async () => {
    const nc = await connect({ servers: nats.url });
    try {
      const sub = nc.subscribe(DECISIONS_SUBJECT);
      await nc.flush();
      await ask("cus_required", { path: "/v1/status" });
      const entry = await waitFor(async () => {
        for await (const m of sub) {
          const d = JSON.parse(new TextDecoder().decode(m.data)) as Record<string, unknown>;
          if (d["customer_token"] === customerToken("cus_required")) return d;
        }
        return undefined;
      }, { what: "the decision on proofgate.decisions" });
      expect(entry).toMatchObject({ feature: "api-access", status: "PAYMENT_REQUIRED", allowed: false });
    } finally {
      await nc.close();
    }
    const http = sc.sidecar.httpAddress ?? "";
    // Once in the status matrix, once here.
    expect(await metric(http, "proofgate_sidecar_decisions_total", { status: "PAYMENT_REQUIRED" })).toBe(2);
    expect(await metric(http, "proofgate_sidecar_ext_authz_answers_total", { code: "402" })).toBeGreaterThanOrEqual(3);
    expect(await metric(http, "proofgate_sidecar_ext_authz_answers_total", { code: "401" })).toBeGreaterThanOrEqual(1);
    expect(await metric(http, "proofgate_sidecar_ext_authz_rules")).toBe(4);
  });

  it("applies a changed rules file without a restart, and refuses a malformed one keeping the rules in force", async () => {
    const http = sc.sidecar.httpAddress ?? "";
    const statusOf = async (path: string): Promise<string> => `${httpStatusOf(await ask("cus_granted", { host: "api.example.com", path }))}`;
    expect(await statusOf("/v2/logs")).toBe("403");

    // A new rule, and unmatched routes now allowed: applied through the ConfigMap-style symlink swap.
    const next = { ...RULES, default: "allow", rules: [{ name: "v2", path: { prefix: "/v2/" }, feature: "ai-assistant" }, ...RULES.rules] };
    cm.write({ "rules.yaml": stringify(next) });
    await waitFor(async () => (await statusOf("/v2/logs")) === "403" && body(await ask("cus_granted", { path: "/v2/logs" }))["status"] === "NOT_ENTITLED", { what: "rule v2 in force" });
    const unmatched = await ask("cus_granted", { host: "admin.internal", path: "/healthz" });
    expect(httpStatusOf(unmatched)).toBe(200);
    // Default allow still strips x-proofgate-* sent by the caller.
    expect(unmatched.ok_response?.headers).toEqual([]);
    expect(unmatched.ok_response?.headers_to_remove).toContain("x-proofgate-status");
    expect(await metric(http, "proofgate_sidecar_ext_authz_rules_reloads_total", { outcome: "applied" })).toBe(1);
    expect(await metric(http, "proofgate_sidecar_ext_authz_rules")).toBe(5);

    // Malformed: the error names the rule and the field; the rules above stay in force.
    const broken = { ...next, rules: [...next.rules, { name: "broken", path: { pattern: "/v1/{id}/x{y}" }, feature: "api-access" }] };
    cm.write({ "rules.yaml": stringify(broken) });
    await waitFor(async () => (await metric(http, "proofgate_sidecar_ext_authz_rules_file_valid")) === 0, { what: "the malformed file refused" });
    const refused = logs.lines().find((l) => l["msg"] === "ext_authz rules refused; the previous rules stay in force");
    expect(refused?.["error"]).toBe('rules[5] (broken).path.pattern: segment 3 "x{y}": a parameter is a whole segment, like {id}');
    expect(await metric(http, "proofgate_sidecar_ext_authz_rules_reloads_total", { outcome: "refused" })).toBe(1);
    expect(body(await ask("cus_granted", { path: "/v2/logs" }))["status"]).toBe("NOT_ENTITLED");
    expect(httpStatusOf(await ask("cus_granted", { host: "admin.internal", path: "/healthz" }))).toBe(200);
    // Not YAML at all: refused too, rules unchanged.
    cm.write({ "rules.yaml": "default: allow\nrules: [\n" });
    await waitFor(() => logs.lines().filter((l) => l["msg"] === "ext_authz rules refused; the previous rules stay in force").length === 2, { what: "second refusal" });
    expect(String(logs.lines().filter((l) => l["error"]).at(-1)?.["error"])).toMatch(/^rules file: not valid YAML/);
    expect(await metric(http, "proofgate_sidecar_ext_authz_rules")).toBe(5);

    // Fixed: applied again.
    cm.write({ "rules.yaml": stringify(RULES) });
    await waitFor(async () => (await metric(http, "proofgate_sidecar_ext_authz_rules_file_valid")) === 1, { what: "valid file applied" });
    expect(await statusOf("/v2/logs")).toBe("403");
    expect(body(await ask("cus_granted", { path: "/v2/logs" }))["status"]).toBe("NO_MATCHING_RULE");
  });
});

describe("ext_authz rules refused at start", () => {
  it("does not start with a malformed rules file, and names the rule", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "rules.yaml");
      const cases: [string, RegExp][] = [
        [stringify({ ...RULES, default: undefined }), /^default: required: allow or deny/],
        [stringify({ ...RULES, rules: [{ name: "q", path: { exact: "/x" }, feature: "seats", quantity: { param: "n" } }] }), /^rules\[0\] \(q\)\.quantity\.param: "n" is not a parameter/],
        [stringify({ ...RULES, rules: [{ path: { prefix: "v1" }, feature: "api-access" }] }), /^rules\[0\]\.path\.prefix: must start with "\/"/],
        [stringify({ ...RULES, rules: [{ name: "m", methods: ["FETCH"], path: { exact: "/x" }, feature: "a" }] }), /^rules\[0\] \(m\)\.methods\[0\]: "FETCH" is not an HTTP method/],
        [stringify({ ...RULES, rules: [{ name: "a", path: { exact: "/x", prefix: "/y" }, feature: "a" }] }), /^rules\[0\] \(a\)\.path: set exactly one of/],
        [stringify({ ...RULES, rules: [{ name: "a", path: { exact: "/x" }, feature: "a" }, { name: "a", path: { exact: "/y" }, feature: "b" }] }), /^rules\[1\] \(a\)\.name: used by an earlier rule/],
        [stringify({ ...RULES, identity: { jwt: { jwks_file: "missing.json" } } }), /^identity\.jwt\.jwks_file: cannot read .*missing\.json/],
        [stringify({ ...RULES, rules: [{ name: "t", path: { exact: "/x" }, feature: "a", featur: "b" }] }), /^rules\[0\] \(t\)\.featur: unknown key/],
      ];
      await expect(startSidecar({ replica: join(dir.path, "r.db"), grpcListen: "127.0.0.1:0", httpListen: "", extAuthzListen: "127.0.0.1:0", natsUrl: "nats://127.0.0.1:1" }, pino({ level: "silent" }))).rejects.toThrow(
        /^ext-authz-listen: set --ext-authz-rules too/,
      );
      for (const [text, error] of cases) {
        writeFileSync(path, text);
        await expect(startSidecar({ replica: join(dir.path, "r.db"), grpcListen: "127.0.0.1:0", httpListen: "", extAuthzRules: path, natsUrl: "nats://127.0.0.1:1" }, pino({ level: "silent" }))).rejects.toThrow(error);
      }
    } finally {
      dir.dispose();
    }
  });
});
