import { createWriteStream } from "node:fs";
import Database from "better-sqlite3";
import { connect } from "nats";
import { AuditKind } from "../gen/proofgate/v1/admin.js";
import { enumLabel } from "../billing/index.js";
import { AUDIT_HEAD_SUBJECT, AUDIT_STREAM, customerTokens } from "../replication/subjects.js";
import { verifyAuditChain, type AuditChainRow } from "../writer/ledger/audit-chain.js";
import { MIGRATIONS } from "../writer/ledger/schema.js";
import type { AuditHead } from "../writer/audit-head.js";
import { errorMessage } from "../errors/index.js";
import { parseCommand, required } from "./args.js";

export const summary = "verify the ledger's audit hash chain, or export the audit log as JSON lines";

const USAGE = `usage: proofgate audit verify --ledger FILE [--nats-url URL]
       proofgate audit export --ledger FILE [--since TIME] [--until TIME] [--customer ID] [--out FILE]

verify walks the audit hash chain of a ledger file (a stopped writer's, or a copy: a running
writer holds its ledger locked) and names the first entry that does not verify. With --nats-url
it also checks the ledger still holds the latest head the writer published to ${AUDIT_STREAM}.
Exit code 0 when it verifies, 1 when it does not, 2 on error.

export writes the entries as JSON lines (to --out or standard output), oldest first; --since
and --until take ISO 8601 times (--until exclusive), --customer a customer id.`;

function openReadOnly(path: string): Database.Database {
  let db: Database.Database;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
    const version = db.pragma("user_version", { simple: true }) as number;
    if (version < 2) throw new Error(`schema version ${version} has no audit chain: start this version's writer on it once to migrate`);
    if (version > MIGRATIONS.length) throw new Error(`schema version ${version} is newer than this proofgate`);
    return db;
  } catch (err) {
    const busy = err instanceof Database.SqliteError && err.code.startsWith("SQLITE_BUSY");
    throw new Error(`ledger ${path}: ${busy ? "locked by a running writer; verify a copy or a stopped writer's file" : errorMessage(err)}`, { cause: err });
  }
}

function parseTime(raw: string | undefined, flag: string): number | undefined {
  if (raw === undefined) return undefined;
  const t = Date.parse(raw);
  if (Number.isNaN(t)) throw new Error(`${flag}: not an ISO 8601 time: "${raw}"`);
  return t;
}

export async function run(argv: string[]): Promise<number> {
  const { values: v, positionals, help } = parseCommand(
    argv,
    { ledger: { type: "string" }, "nats-url": { type: "string" }, since: { type: "string" }, until: { type: "string" }, customer: { type: "string" }, out: { type: "string" } },
    USAGE,
  );
  if (help) return 0;
  const action = positionals[0];
  if (action !== "verify" && action !== "export") {
    console.error(USAGE);
    return 2;
  }
  let db: Database.Database;
  try {
    db = openReadOnly(required(v.ledger, "--ledger"));
  } catch (err) {
    console.error(`proofgate audit: ${errorMessage(err)}`);
    return 2;
  }
  try {
    if (action === "verify") return await verify(db, v["nats-url"]);
    const since = parseTime(v.since, "--since") ?? 0;
    const until = parseTime(v.until, "--until") ?? Number.MAX_SAFE_INTEGER;
    // Entries keep the token they were written with: the customer's under every key (PROOFGATE_CUSTOMER_TOKEN_KEY, newest first).
    const tokens = v.customer ? customerTokens(v.customer) : [];
    const rows = db
      .prepare<[{ since: number; until: number; tokens: string }], AuditChainRow>(
        "SELECT * FROM audit WHERE at_ms >= @since AND at_ms < @until AND (json_array_length(@tokens) = 0 OR customer_token IN (SELECT value FROM json_each(@tokens))) ORDER BY seq",
      )
      .iterate({ since, until, tokens: JSON.stringify(tokens) });
    const out: NodeJS.WritableStream = v.out ? createWriteStream(v.out) : process.stdout;
    let n = 0;
    for (const r of rows) {
      const line = JSON.stringify({ ...r, at: new Date(r.at_ms).toISOString(), kind: enumLabel(AuditKind, r.kind, "AUDIT_KIND_") });
      if (!out.write(`${line}\n`)) await new Promise<void>((resolve) => out.once("drain", () => resolve()));
      n++;
    }
    if (v.out) await new Promise<void>((resolve) => out.end(() => resolve()));
    console.error(`${n} audit entries exported`);
    return 0;
  } finally {
    db.close();
  }
}

async function verify(db: Database.Database, natsUrl: string | undefined): Promise<number> {
  const r = verifyAuditChain(db);
  if (!r.ok) {
    console.log(`FAILED at audit entry ${r.firstBadId}: ${r.reason}`);
    return 1;
  }
  console.log(`ok: ${r.entries} audit entries, chain intact${r.head ? ` (head ${r.head.seq} ${r.head.hash})` : ""}`);
  if (!natsUrl) return 0;
  const nc = await connect({ servers: natsUrl, name: "proofgate-audit-verify" });
  try {
    const jsm = await nc.jetstreamManager();
    const msg = await jsm.streams.getMessage(AUDIT_STREAM, { last_by_subj: AUDIT_HEAD_SUBJECT });
    const head = JSON.parse(Buffer.from(msg.data).toString("utf8")) as AuditHead;
    const ledgerId = db.prepare<[], { value: string }>("SELECT value FROM meta WHERE key = 'ledger_id'").get()?.value;
    if (head.ledgerId !== ledgerId) {
      console.log(`published head is from ledger ${head.ledgerId}, this is ${ledgerId ?? "?"}: not compared`);
      return 1;
    }
    const row = db.prepare<[number], { hash: string }>("SELECT hash FROM audit WHERE seq = ?").get(head.seq);
    if (!row || row.hash !== head.hash) {
      console.log(`FAILED at audit entry ${head.seq}: the head published at ${new Date(head.atMs).toISOString()} (${head.hash}) is ${row ? "a different entry" : "missing"} in this ledger (rewritten or truncated)`);
      return 1;
    }
    console.log(`ok: matches the head published at ${new Date(head.atMs).toISOString()} (entry ${head.seq})`);
    return 0;
  } finally {
    await nc.close();
  }
}
