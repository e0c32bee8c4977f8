import { execFileSync } from "node:child_process";
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { stringify } from "yaml";
import { tokenDigest } from "../../src/auth/index.js";
import { call, writerClients } from "../../src/cli/client.js";
import { AdminServiceClient, AuditKind } from "../../src/gen/proofgate/v1/admin.js";
import { PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { OverrideEffect, type Override } from "../../src/gen/proofgate/v1/document.js";
import type { PublishResponse } from "../../src/gen/proofgate/v1/ingest.js";
import { silentLogger } from "../../src/observability/logger.js";
import { startWriter, verifyAuditChain, writerOptions, type Writer } from "../../src/writer/index.js";
import { NatsServer } from "../harness/nats.js";
import { tempDir } from "../harness/tmp.js";
import { EventFactory, demoCatalog, waitFor } from "../harness/writer.js";

const TOKENS = { ingest: "tok-ingest-1", admin: "tok-admin-1", read: "tok-read-1", rotated: "tok-ingest-2" } as const;

let nats: NatsServer;
const dir = tempDir("proofgate-auth-");
const authPath = join(dir.path, "auth.yaml");
let writer: Writer;

function writeAuth(ingestToken: string): void {
  const principals = [
    { name: "billing-bridge", roles: ["ingest"], token_sha256: tokenDigest(ingestToken) },
    { name: "ops@example.com", roles: ["admin", "read"], token_sha256: tokenDigest(TOKENS.admin) },
    { name: "support-console", roles: ["read"], token_sha256: tokenDigest(TOKENS.read), certificate: "console.test" },
  ];
  // Atomic replace, as a Secret volume or a config tool does.
  writeFileSync(`${authPath}.new`, stringify({ principals }));
  renameSync(`${authPath}.new`, authPath);
}

beforeAll(async () => {
  nats = await NatsServer.start();
  writeAuth(TOKENS.ingest);
  writer = await startWriter(
    writerOptions({ natsUrl: nats.url, ledger: join(dir.path, "ledger.db"), grpcListen: "127.0.0.1:0", httpListen: "127.0.0.1:0", authFile: authPath, auditHeadInterval: 200 }),
    silentLogger(),
    { routes: { "GET /whoami": (_req, res) => void res.writeHead(200).end("ok\n") } },
  );
  await waitFor(() => writer.ready());
});

afterAll(async () => {
  await writer.close();
  await nats.dispose();
  dir.dispose();
});

type Clients = ReturnType<typeof writerClients>;
const as = (token: string | undefined): Clients => writerClients(writer.grpcAddress, token, {});
const codeOf = async (p: Promise<unknown>): Promise<string> => p.then(() => "OK", (err: unknown) => (err as Error).message.split(":")[0] ?? "");

const customer = "cus_auth_1";
const f = new EventFactory(customer, "auth", Date.now());
const override = (): Override => ({ overrideId: "ovr-auth", feature: "api-access", effect: OverrideEffect.OVERRIDE_EFFECT_DENY, value: undefined, validFromMs: 0, validUntilMs: 0, reason: "", actor: "", createdAtMs: 0 });

/** Every writer method, with the role it needs and a valid request. */
const methods: [string, "ingest" | "admin" | "read", (c: Clients) => Promise<unknown>][] = [
  ["ApplyCatalog", "admin", (c) => call((md, o, cb) => c.admin.applyCatalog({ catalog: demoCatalog(), actor: "cfo@example.com", reason: "initial", allowRemovals: false }, md, o, cb))],
  ["Publish", "ingest", (c) => call<PublishResponse>((md, o, cb) => c.ingest.publish({ events: [f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)] }, md, o, cb))],
  ["GetCatalog", "read", (c) => call((md, o, cb) => c.admin.getCatalog({}, md, o, cb))],
  ["PutOverride", "admin", (c) => call((md, o, cb) => c.admin.putOverride({ customerId: customer, override: override(), actor: "cfo@example.com", reason: "fraud check" }, md, o, cb))],
  ["GetCustomer", "read", (c) => call((md, o, cb) => c.admin.getCustomer({ customerId: customer }, md, o, cb))],
  ["DeleteOverride", "admin", (c) => call((md, o, cb) => c.admin.deleteOverride({ customerId: customer, overrideId: "ovr-auth", actor: "", reason: "cleared" }, md, o, cb))],
  ["EraseCustomer", "admin", (c) => call((md, o, cb) => c.admin.eraseCustomer({ customerId: customer, actor: "dpo@example.com", reason: "GDPR 1" }, md, o, cb))],
];

const tokenFor = { ingest: TOKENS.ingest, admin: TOKENS.admin, read: TOKENS.read } as const;
const wrongFor = { ingest: TOKENS.read, admin: TOKENS.read, read: TOKENS.ingest } as const;

describe("every writer method", () => {
  // In order: each method's successful call sets up the next one (catalog, events, override...).
  test.each(methods)("%s: no credentials → UNAUTHENTICATED, wrong role → PERMISSION_DENIED, right role → works", async (_name, role, invoke) => {
    expect(await codeOf(invoke(as(undefined)))).toBe("UNAUTHENTICATED");
    expect(await codeOf(invoke(as("not-a-known-token")))).toBe("UNAUTHENTICATED");
    expect(await codeOf(invoke(as(wrongFor[role])))).toBe("PERMISSION_DENIED");
    expect(await codeOf(invoke(as(tokenFor[role])))).toBe("OK");
  });

  test("denials are counted by method and reason", async () => {
    const metrics = await writer.registry.metrics();
    expect(metrics).toMatch(/proofgate_writer_auth_denied_total\{method="AdminService.PutOverride",reason="unauthenticated"[^}]*\} 2/);
    expect(metrics).toMatch(/proofgate_writer_auth_denied_total\{method="IngestService.Publish",reason="permission_denied"[^}]*\} 1/);
  });
});

describe("token rotation", () => {
  test("a new token works without a restart and the old one stops", async () => {
    const publish = (token: string) => codeOf(call((md, o, cb) => as(token).ingest.publish({ events: [new EventFactory("cus_rot", `rot${token}`, Date.now()).subscribe("basic")] }, md, o, cb)));
    expect(await publish(TOKENS.ingest)).toBe("OK");
    writeAuth(TOKENS.rotated);
    await waitFor(async () => (await publish(TOKENS.rotated)) === "OK", { timeoutMs: 10_000 });
    expect(await publish(TOKENS.ingest)).toBe("UNAUTHENTICATED");
  });

  test("a broken auth file is not loaded: the last good principals stay in force", async () => {
    const before = await writer.registry.getSingleMetricAsString("proofgate_writer_auth_reloads_total");
    writeFileSync(authPath, "principals: [ { name: x, roles: [root], token_sha256: abc } ]\n");
    await waitFor(async () => (await writer.registry.getSingleMetricAsString("proofgate_writer_auth_reloads_total")).includes('result="error"'), { timeoutMs: 10_000 });
    expect(before).not.toContain('result="error"');
    expect(await codeOf(call((md, o, cb) => as(TOKENS.read).admin.getCatalog({}, md, o, cb)))).toBe("OK");
    writeAuth(TOKENS.rotated);
  });
});

describe("HTTP routes", () => {
  const get = (path: string, token?: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = httpRequest(`http://${writer.httpAddress}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      req.end();
    });

  test("extra routes need credentials and the role; /healthz, /readyz and /metrics do not", async () => {
    expect(await get("/whoami")).toBe(401);
    expect(await get("/whoami", "nope")).toBe(401);
    expect(await get("/whoami", TOKENS.rotated)).toBe(403);
    expect(await get("/whoami", TOKENS.read)).toBe(200);
    for (const open of ["/healthz", "/readyz", "/metrics"]) expect(await get(open)).toBe(200);
  });
});

describe("safe by default", () => {
  test("the writer refuses a non-loopback listen address without an auth file, naming the option", async () => {
    for (const o of [{ grpcListen: "0.0.0.0:0" }, { httpListen: "0.0.0.0:0" }])
      await expect(startWriter(writerOptions({ natsUrl: nats.url, ledger: join(dir.path, "refused.db"), grpcListen: "127.0.0.1:0", httpListen: "127.0.0.1:0", ...o }), silentLogger())).rejects.toThrow(
        /refusing to listen on 0\.0\.0\.0:0 without authentication: set --auth-file \(PROOFGATE_AUTH_FILE\)/,
      );
  });
});

describe("mutual TLS", () => {
  test("a client certificate from the test CA names a principal; no certificate, no connection", async () => {
    const pki = tempDir("proofgate-pki-");
    const p = (n: string): string => join(pki.path, n);
    const ssl = (...args: string[]): void => void execFileSync("openssl", args, { stdio: "ignore" });
    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.crt"), "-days", "1", "-subj", "/CN=proofgate test CA");
    const leaf = (name: string, cn: string, ext: string): void => {
      ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p(`${name}.key`), "-out", p(`${name}.csr`), "-subj", `/CN=${cn}`);
      writeFileSync(p(`${name}.ext`), ext);
      ssl("x509", "-req", "-in", p(`${name}.csr`), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-CAcreateserial", "-out", p(`${name}.crt`), "-days", "1", "-extfile", p(`${name}.ext`));
    };
    leaf("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    leaf("console", "console.test", "extendedKeyUsage=clientAuth\n");
    leaf("stranger", "stranger.test", "extendedKeyUsage=clientAuth\n");
    const tlsWriter = await startWriter(
      writerOptions({
        natsUrl: nats.url,
        ledger: join(pki.path, "ledger.db"),
        grpcListen: "127.0.0.1:0",
        httpListen: "127.0.0.1:0",
        authFile: authPath,
        tlsCert: p("server.crt"),
        tlsKey: p("server.key"),
        tlsClientCa: p("ca.crt"),
        writerId: "tls",
      }),
      silentLogger(),
    );
    const client = (name?: string): AdminServiceClient =>
      new AdminServiceClient(
        tlsWriter.grpcAddress,
        grpc.credentials.createSsl(readFileSync(p("ca.crt")), name ? readFileSync(p(`${name}.key`)) : null, name ? readFileSync(p(`${name}.crt`)) : null),
        { "grpc.ssl_target_name_override": "localhost" },
      );
    const clients = [client("console"), client("stranger"), client()];
    const [consoleClient, stranger, anonymous] = clients as [AdminServiceClient, AdminServiceClient, AdminServiceClient];
    try {
      // The certificate's CN maps to support-console (read): it may read, not change.
      expect(await codeOf(call((md, o, cb) => consoleClient.getCatalog({}, md, o, cb)))).toBe("NOT_FOUND"); // authorized; this ledger has no catalog yet
      expect(await codeOf(call((md, o, cb) => consoleClient.applyCatalog({ catalog: demoCatalog(), actor: "", reason: "x", allowRemovals: false }, md, o, cb)))).toBe("PERMISSION_DENIED");
      // A certificate from the CA that names no principal authenticates nobody; a bearer token still can.
      expect(await codeOf(call((md, o, cb) => stranger.getCatalog({}, md, o, cb)))).toBe("UNAUTHENTICATED");
      const md = new grpc.Metadata();
      md.set("authorization", `Bearer ${TOKENS.admin}`);
      expect(await codeOf(call((_, o, cb) => stranger.applyCatalog({ catalog: demoCatalog(), actor: "", reason: "x", allowRemovals: false }, md, o, cb)))).toBe("OK");
      // Without a client certificate the TLS handshake fails.
      expect(await codeOf(call((m, o, cb) => anonymous.getCatalog({}, m, o, cb), 3_000))).toBe("UNAVAILABLE");
    } finally {
      for (const c of clients) c.close();
      await tlsWriter.close();
      pki.dispose();
    }
  });
});

describe("the audit chain of this writer", () => {
  test("verifies, records principals as actors and callers' claims as on-behalf-of, and audits denials", async () => {
    await writer.close();
    const db = new Database(join(dir.path, "ledger.db"), { readonly: true });
    try {
      const result = verifyAuditChain(db);
      expect(result.ok).toBe(true);
      const rows = db.prepare<[], { kind: AuditKind; actor: string; on_behalf_of: string; reason: string; detail: string }>("SELECT kind, actor, on_behalf_of, reason, detail FROM audit ORDER BY seq").all();
      const catalog = rows.find((r) => r.kind === AuditKind.AUDIT_KIND_CATALOG_APPLIED);
      expect(catalog).toMatchObject({ actor: "ops@example.com", on_behalf_of: "cfo@example.com" });
      expect(rows.find((r) => r.kind === AuditKind.AUDIT_KIND_OVERRIDE_PUT)).toMatchObject({ actor: "ops@example.com", on_behalf_of: "cfo@example.com" });
      expect(rows.find((r) => r.kind === AuditKind.AUDIT_KIND_CUSTOMER_ERASED)).toMatchObject({ actor: "ops@example.com", on_behalf_of: "dpo@example.com" });
      expect(rows.find((r) => r.kind === AuditKind.AUDIT_KIND_EVENT_APPLIED)?.actor).toBe("billing-bridge");
      expect(rows.some((r) => r.kind === AuditKind.AUDIT_KIND_AUTH_DENIED && r.reason === "permission_denied" && r.actor === "support-console" && r.detail.startsWith("AdminService.ApplyCatalog"))).toBe(true);
      expect(rows.some((r) => r.kind === AuditKind.AUDIT_KIND_AUTH_DENIED && r.reason === "unauthenticated" && r.detail.startsWith("IngestService.Publish"))).toBe(true);
      expect(rows.every((r) => r.actor !== "cfo@example.com")).toBe(true);
    } finally {
      db.close();
    }
  });
});
