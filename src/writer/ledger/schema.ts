import { randomBytes } from "node:crypto";
import type Database from "better-sqlite3";
import { GENESIS_HASH, entryHash, personalDigest, type AuditChainRow } from "./audit-chain.js";

/**
 * Versioned schema migrations, applied in order at open; `PRAGMA user_version` records the last
 * one applied. Never edit a released migration: add the next one.
 */
export const MIGRATIONS: readonly ((db: Database.Database) => void)[] = [
  // 1: the initial ledger.
  (db) => {
    db.exec(`
      -- ledger_id (random, names this ledger file on the state stream), published_high (the
      -- highest stream sequence ever recorded for a published outbox row).
      CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
      ) STRICT;

      -- Every event_id ever accepted, kept after erasure so a redelivered event cannot
      -- resurrect an erased customer.
      CREATE TABLE processed_events (
        event_id       TEXT PRIMARY KEY,
        received_at_ms INTEGER NOT NULL
      ) STRICT, WITHOUT ROWID;

      -- Accepted billing events (protobuf BillingEvent), in receive order.
      CREATE TABLE facts (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id       TEXT NOT NULL UNIQUE,
        customer_id    TEXT NOT NULL,
        origin         TEXT NOT NULL,
        received_at_ms INTEGER NOT NULL,
        event          BLOB NOT NULL
      ) STRICT;
      CREATE INDEX facts_by_customer ON facts (customer_id, seq);

      -- The current access document per customer (protobuf AccessDocument).
      CREATE TABLE documents (
        customer_id   TEXT PRIMARY KEY,
        token         TEXT NOT NULL UNIQUE,
        document      BLOB NOT NULL,
        updated_at_ms INTEGER NOT NULL
      ) STRICT;

      -- Operators' overrides (protobuf Override).
      CREATE TABLE overrides (
        customer_id TEXT NOT NULL,
        override_id TEXT NOT NULL,
        override    BLOB NOT NULL,
        PRIMARY KEY (customer_id, override_id)
      ) STRICT;

      -- The one current catalog (protobuf Catalog).
      CREATE TABLE catalog (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        catalog       BLOB NOT NULL,
        applied_at_ms INTEGER NOT NULL
      ) STRICT;

      -- Append-only audit log. customer_token is always set for customer entries; customer_id is
      -- blanked when the customer is erased.
      CREATE TABLE audit (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms           INTEGER NOT NULL,
        kind            INTEGER NOT NULL,
        customer_token  TEXT NOT NULL DEFAULT '',
        customer_id     TEXT NOT NULL DEFAULT '',
        subscription_id TEXT NOT NULL DEFAULT '',
        feature         TEXT NOT NULL DEFAULT '',
        from_status     INTEGER NOT NULL DEFAULT 0,
        to_status       INTEGER NOT NULL DEFAULT 0,
        event_id        TEXT NOT NULL DEFAULT '',
        correlation_id  TEXT NOT NULL DEFAULT '',
        actor           TEXT NOT NULL DEFAULT '',
        reason          TEXT NOT NULL DEFAULT '',
        detail          TEXT NOT NULL DEFAULT ''
      ) STRICT;
      CREATE INDEX audit_by_customer ON audit (customer_token, seq);

      -- Transactional outbox to PROOFGATE_STATE (payload: protobuf StateRecord). Ids are never
      -- reused (AUTOINCREMENT): they travel in Nats-Msg-Id and Proofgate-Outbox-Id.
      CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        subject         TEXT NOT NULL,
        payload         BLOB NOT NULL,
        created_at_ms   INTEGER NOT NULL,
        published_seq   INTEGER,
        published_at_ms INTEGER
      ) STRICT;
      CREATE INDEX outbox_pending ON outbox (id) WHERE published_seq IS NULL;
      CREATE INDEX outbox_by_subject ON outbox (subject, id);
      CREATE INDEX outbox_published_at ON outbox (published_at_ms) WHERE published_seq IS NOT NULL;

      -- Dead letters waiting to reach PROOFGATE_DEADLETTER (payload: protobuf DeadLetter).
      CREATE TABLE deadletters (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        payload       BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL
      ) STRICT;
    `);
  },
  // 2: the folded parts of each customer's document, so an event costs the same at any history
  // length (policy/fold.ts, "Incremental folding"). Derived from facts: a customer without a
  // fold_customers row is folded from its facts on its next change.
  (db) => {
    db.exec(`
      CREATE TABLE fold_customers (
        customer_id       TEXT PRIMARY KEY,
        fact_count        INTEGER NOT NULL,
        last_event_at_ms  INTEGER NOT NULL
      ) STRICT, WITHOUT ROWID;

      -- intent: the deciding facts of the subscription's intent (protobuf FoldedFacts).
      CREATE TABLE fold_subscriptions (
        customer_id     TEXT NOT NULL,
        subscription_id TEXT NOT NULL,
        intent          BLOB NOT NULL,
        PRIMARY KEY (customer_id, subscription_id)
      ) STRICT, WITHOUT ROWID;

      -- facts: the invoice's deciding facts; state: the InvoiceState they give (protobuf).
      CREATE TABLE fold_invoices (
        customer_id     TEXT NOT NULL,
        subscription_id TEXT NOT NULL,
        invoice_id      TEXT NOT NULL,
        period_end_ms   INTEGER NOT NULL,
        facts           BLOB NOT NULL,
        state           BLOB NOT NULL,
        PRIMARY KEY (customer_id, subscription_id, invoice_id)
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX fold_invoices_latest ON fold_invoices (customer_id, subscription_id, period_end_ms);
    `);
  },
  // 3: the audit log becomes a hash chain (audit-chain.ts); entries record the authenticated
  // principal as actor and the caller's claim as on_behalf_of. Existing entries are chained in order.
  (db) => {
    db.exec(`
      ALTER TABLE audit ADD COLUMN on_behalf_of    TEXT NOT NULL DEFAULT '';
      ALTER TABLE audit ADD COLUMN personal_digest TEXT NOT NULL DEFAULT '';
      ALTER TABLE audit ADD COLUMN hash            TEXT NOT NULL DEFAULT '';
      -- Per-customer HMAC keys of the audit's personal fields; erasure deletes the key.
      CREATE TABLE audit_keys (
        customer_token TEXT PRIMARY KEY,
        key            BLOB NOT NULL
      ) STRICT, WITHOUT ROWID;
      -- Entries of customers erased before this version kept their subscription id: erase it too.
      UPDATE audit SET subscription_id = '' WHERE customer_id = '' AND customer_token != '';
    `);
    const keyOf = db.prepare<[string], { key: Buffer }>("SELECT key FROM audit_keys WHERE customer_token = ?");
    const putKey = db.prepare<[string, Buffer]>("INSERT INTO audit_keys (customer_token, key) VALUES (?, ?)");
    const update = db.prepare<[number, string, string, number]>("UPDATE audit SET seq = ?, personal_digest = ?, hash = ? WHERE seq = ?");
    let prev = GENESIS_HASH;
    let seq = 0;
    for (const r of db.prepare<[], AuditChainRow>("SELECT * FROM audit ORDER BY seq").all()) {
      let key: Buffer | undefined;
      if (r.customer_id || r.subscription_id) {
        key = keyOf.get(r.customer_token)?.key;
        if (!key) putKey.run(r.customer_token, (key = randomBytes(32)));
      }
      const row = { ...r, seq: ++seq, personal_digest: personalDigest(key, r.customer_id, r.subscription_id) };
      prev = entryHash(prev, row);
      update.run(row.seq, row.personal_digest, prev, r.seq);
    }
  },
  // 4: hot-standby writers (docs/writer.md, "High availability"). Every writer folds the input
  // stream in order; the outbox row remembers which input message made it (input_seq) and its
  // place among that message's rows (input_ord), the coordinate shared by all writers' ledgers.
  // Billing events that arrive before any catalog wait in parked_inputs, in input order.
  (db) => {
    db.exec(`
      ALTER TABLE outbox ADD COLUMN input_seq INTEGER;
      ALTER TABLE outbox ADD COLUMN input_ord INTEGER;
      CREATE INDEX outbox_by_position ON outbox (input_seq, input_ord) WHERE input_seq IS NOT NULL;
      CREATE TABLE parked_inputs (
        seq          INTEGER PRIMARY KEY,
        subject      TEXT NOT NULL,
        payload      BLOB NOT NULL,
        content_type TEXT NOT NULL,
        at_ms        INTEGER NOT NULL
      ) STRICT;
    `);
  },
];

/** Applies the migrations the file has not seen yet, each in its own transaction. */
export function migrate(db: Database.Database): { from: number; to: number } {
  const from = db.pragma("user_version", { simple: true }) as number;
  if (from > MIGRATIONS.length)
    throw new Error(`ledger schema version ${from} is newer than this proofgate (knows ${MIGRATIONS.length}); upgrade proofgate`);
  for (let v = from; v < MIGRATIONS.length; v++) {
    const step = MIGRATIONS[v];
    if (!step) break;
    db.transaction(() => {
      step(db);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return { from, to: MIGRATIONS.length };
}
