import { execFileSync, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { ServiceError } from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import Database from "better-sqlite3";
import { afterAll, beforeAll, expect, test } from "vitest";
import { PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { OverrideEffect } from "../../src/gen/proofgate/v1/document.js";
import { AUDIT_HEAD_SUBJECT, AUDIT_STREAM, customerToken } from "../../src/replication/subjects.js";
import { GENESIS_HASH, entryHash, type AuditChainRow } from "../../src/writer/ledger/audit-chain.js";
import { NatsServer } from "../harness/nats.js";
import { EventFactory, connectNats, demoCatalog, startTestWriter, waitFor, type TestWriter } from "../harness/writer.js";

const BIN = fileURLToPath(new URL("../../bin/proofgate.js", import.meta.url));
const audit = (...args: string[]) => spawnSync(process.execPath, [BIN, "audit", ...args], { encoding: "utf8" });

let nats: NatsServer;
let w: TestWriter;

beforeAll(async () => {
  nats = await NatsServer.start();
  w = await startTestWriter({ natsUrl: nats.url, options: { auditHeadInterval: 100 } });
  await w.client.applyCatalog(demoCatalog(), "alice", "initial catalog");
  for (const id of ["cus_keep", "cus_gone"]) {
    const f = new EventFactory(id, id, Date.now());
    await w.client.publish([f.subscribe("premium"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED)]);
  }
  await w.client.putOverride({
    customerId: "cus_gone",
    override: { overrideId: "o1", feature: "api-access", effect: OverrideEffect.OVERRIDE_EFFECT_DENY, value: undefined, validFromMs: 0, validUntilMs: 0, reason: "", actor: "", createdAtMs: 0 },
    actor: "erin",
    reason: "abuse",
  });
});

afterAll(async () => {
  await w.dispose();
  await nats.dispose();
});

test("a catalog that drops what customers use is refused, listing it, unless removals are allowed", async () => {
  const withoutPremium = { ...demoCatalog(), plans: demoCatalog().plans.filter((p) => p.id !== "premium") };
  const err = await w.client.applyCatalogRequest({ catalog: withoutPremium, actor: "alice", reason: "cleanup", allowRemovals: false }).then(
    () => undefined,
    (e: unknown) => e as ServiceError,
  );
  expect(err?.code).toBe(status.FAILED_PRECONDITION);
  expect(err?.details).toContain("plan premium (2 customers)");
  expect(err?.details).toContain("allow_removals");
  expect((await w.client.getCatalog()).catalog?.plans.map((p) => p.id)).toContain("premium");
  // Explicitly allowed, then put back.
  await w.client.applyCatalogRequest({ catalog: withoutPremium, actor: "alice", reason: "retire premium", allowRemovals: true });
  expect((await w.client.getCatalog()).catalog?.plans.map((p) => p.id)).not.toContain("premium");
  await w.client.applyCatalog(demoCatalog(), "alice", "restore premium");
});

test("the chain verifies after an erasure, matches the head published to NATS, and an edited row is named", async () => {
  await w.client.eraseCustomer({ customerId: "cus_gone", actor: "dpo", reason: "GDPR 7" });
  const nc = await connectNats(nats.url);
  const jsm = await nc.jetstreamManager();
  // Closing publishes the final head; the ledger is then free for the CLI.
  await w.close();
  const db = new Database(w.ledgerPath, { readonly: true });
  const last = db.prepare<[], { seq: number; hash: string }>("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").get();
  const gone = db.prepare<[string], { customer_id: string; subscription_id: string }>("SELECT customer_id, subscription_id FROM audit WHERE customer_token = ?").all(customerToken("cus_gone"));
  const keys = db.prepare<[string], { n: number }>("SELECT count(*) AS n FROM audit_keys WHERE customer_token = ?").get(customerToken("cus_gone"));
  db.close();
  expect(gone.length).toBeGreaterThan(3);
  expect(gone.every((r) => r.customer_id === "" && r.subscription_id === "")).toBe(true);
  expect(keys?.n).toBe(0);
  await waitFor(async () => {
    const m = await jsm.streams.getMessage(AUDIT_STREAM, { last_by_subj: AUDIT_HEAD_SUBJECT }).catch(() => undefined);
    return m !== undefined && (JSON.parse(Buffer.from(m.data).toString()) as { seq: number }).seq === last?.seq;
  });
  await nc.close();

  const ok = audit("verify", "--ledger", w.ledgerPath, "--nats-url", nats.url);
  expect(ok.stderr).toBe("");
  expect(ok.status).toBe(0);
  expect(ok.stdout).toContain(`ok: ${last?.seq} audit entries, chain intact`);
  expect(ok.stdout).toContain(`matches the head published`);

  // export: JSON lines, filtered by customer and time.
  const kept = audit("export", "--ledger", w.ledgerPath, "--customer", "cus_keep");
  expect(kept.status).toBe(0);
  const lines = kept.stdout.trim().split("\n").map((l) => JSON.parse(l) as { customer_token: string; customer_id: string; kind: string; hash: string });
  expect(lines.length).toBeGreaterThan(2);
  expect(lines.every((l) => l.customer_token === customerToken("cus_keep") && l.customer_id === "cus_keep" && l.hash.length === 64)).toBe(true);
  expect(lines.map((l) => l.kind)).toContain("EVENT_APPLIED");
  const future = audit("export", "--ledger", w.ledgerPath, "--since", new Date(Date.now() + 3_600_000).toISOString());
  expect(future.status).toBe(0);
  expect(future.stdout).toBe("");
  expect(audit("export", "--ledger", w.ledgerPath, "--until", "yesterday").stderr).toContain('--until: not an ISO 8601 time: "yesterday"');

  // Someone edits one audit row with sqlite3: verify names it.
  execFileSync("sqlite3", [w.ledgerPath, "UPDATE audit SET actor = 'cfo@example.com' WHERE seq = 4"]);
  const bad = audit("verify", "--ledger", w.ledgerPath);
  expect(bad.status).toBe(1);
  expect(bad.stdout).toContain("FAILED at audit entry 4");

  // A careful forger re-hashes the whole chain: it verifies on its own, but not against NATS.
  const rw = new Database(w.ledgerPath);
  let prev = GENESIS_HASH;
  for (const r of rw.prepare<[], AuditChainRow>("SELECT * FROM audit ORDER BY seq").all()) {
    prev = entryHash(prev, r);
    rw.prepare("UPDATE audit SET hash = ? WHERE seq = ?").run(prev, r.seq);
  }
  rw.close();
  expect(audit("verify", "--ledger", w.ledgerPath).status).toBe(0);
  const forged = audit("verify", "--ledger", w.ledgerPath, "--nats-url", nats.url);
  expect(forged.status).toBe(1);
  expect(forged.stdout).toContain(`FAILED at audit entry ${last?.seq}: the head published at`);
});
