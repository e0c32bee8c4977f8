/**
 * Helpers for tests that drive the whole system as real processes (test/e2e, test/faults):
 * seeded randomness, the CLI as a child process, metrics, the state stream and a sidecar's
 * replica file read back, random billing traffic, and the convergence check every fault test
 * ends with.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import type { JetStreamClient, JetStreamManager, NatsConnection } from "nats";
import { expect } from "vitest";
import { AuditKind } from "../../src/gen/proofgate/v1/admin.js";
import { PaymentResult, RecoveryResult, SubscriptionStatus, type BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { AccessDocument } from "../../src/gen/proofgate/v1/document.js";
import { IngestResult } from "../../src/gen/proofgate/v1/ingest.js";
import { foldDocument } from "../../src/policy/index.js";
import { CATALOG_SUBJECT, STATE_STREAM, customerSubject } from "../../src/replication/subjects.js";
import { encodeDocumentRecord } from "../../src/replication/state-record.js";
import { CheckClient, spawnSidecar, type SidecarProcess } from "./sidecar.js";
import { EventFactory, WriterClient, connectNats, streamLastSeq } from "./writer.js";
import { NatsServer } from "./nats.js";
import { tempDir } from "./tmp.js";
import { DAY, waitFor } from "./wait.js";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const BIN = join(ROOT, "bin/proofgate.js");

// Seeded randomness lives in ./random.ts; re-exported for the tests that import it from here.
export { testRng, type Rng } from "./random.js";
import type { Rng } from "./random.js";

// ---------------------------------------------------------------------------------------------
// Child processes

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** `node bin/proofgate.js <args>` as an operator runs it; resolves when it exits. */
export function runCli(args: readonly string[], opts: { input?: string; env?: Readonly<Record<string, string>> } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, ...opts.env }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.once("error", reject);
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin.end(opts.input ?? "");
  });
}

/** A `proofgate sidecar` child process with a CheckService client. */
export interface SidecarUnderTest {
  readonly name: string;
  readonly replicaPath: string;
  readonly proc: SidecarProcess;
  readonly client: CheckClient;
  readonly httpAddress: string;
  /** Stops the process with `signal` and closes the client. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function startSidecarProcess(name: string, natsUrl: string, replicaPath: string, args: readonly string[] = []): Promise<SidecarUnderTest> {
  const proc = await spawnSidecar(["--nats-url", natsUrl, "--replica", replicaPath, "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", ...args]);
  const address = proc.grpcAddresses[0];
  if (!address || !proc.httpAddress) throw new Error(`sidecar ${name} did not say where it listens:\n${proc.output()}`);
  const client = new CheckClient(address);
  return {
    name,
    replicaPath,
    proc,
    client,
    httpAddress: proc.httpAddress,
    stop: async (signal = "SIGTERM") => {
      client.close();
      return proc.stop(signal);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Metrics

/** GET /metrics on a service's HTTP address. */
export async function scrape(httpAddress: string): Promise<string> {
  const res = await fetch(`http://${httpAddress}/metrics`);
  if (res.status !== 200) throw new Error(`GET /metrics on ${httpAddress}: ${res.status}`);
  return res.text();
}

/** The value of `name` in Prometheus text, on the first series whose labels include `labels`. */
export function metricValue(text: string, name: string, labels: Readonly<Record<string, string>> = {}): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const set = m[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => set.includes(`${k}="${v}"`))) return Number(m[3]);
  }
  return undefined;
}

/**
 * `promtool check metrics` on an exposition: the linter Prometheus users run. Resolves to its
 * complaints (empty when clean); fails when promtool is missing (the test prerequisites install it).
 */
export function promtoolProblems(text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("promtool", ["check", "metrics"], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.stderr.on("data", (b: Buffer) => (out += b.toString()));
    child.on("error", reject);
    child.on("close", () => resolve(out.trim()));
    child.stdin.end(text);
  });
}

/** One metric, scraped now (undefined when the series is absent). */
export async function metric(httpAddress: string, name: string, labels: Readonly<Record<string, string>> = {}): Promise<number | undefined> {
  return metricValue(await scrape(httpAddress), name, labels);
}

// ---------------------------------------------------------------------------------------------
// NATS

export interface StreamState {
  readonly lastSeq: number;
  /** subject → the current message on it (sequence and raw payload). */
  readonly subjects: ReadonlyMap<string, { readonly seq: number; readonly data: Uint8Array }>;
}

/** The whole current PROOFGATE_STATE (last message per subject), read with an ordered consumer. */
export async function readStateStream(nc: NatsConnection): Promise<StreamState> {
  const jsm = await nc.jetstreamManager();
  const info = await jsm.streams.info(STATE_STREAM);
  const lastSeq = info.state.last_seq;
  const subjects = new Map<string, { seq: number; data: Uint8Array }>();
  if (info.state.messages === 0) return { lastSeq, subjects };
  const consumer = await nc.jetstream().consumers.get(STATE_STREAM);
  const messages = await consumer.consume({ max_messages: 1_000 });
  try {
    for await (const m of messages) {
      subjects.set(m.subject, { seq: m.seq, data: m.data });
      if (m.seq >= lastSeq) break;
    }
  } finally {
    await messages.close();
  }
  return { lastSeq, subjects };
}

// ---------------------------------------------------------------------------------------------
// A sidecar's replica file

export interface ReplicaContents {
  readonly revision: number;
  /** customer id → (row revision, AccessDocument bytes). */
  readonly documents: ReadonlyMap<string, { readonly revision: number; readonly document: Buffer }>;
}

/** Reads a sidecar's SQLite replica (read-only; safe while the sidecar runs, the file is in WAL mode). */
export function readReplica(path: string): ReplicaContents {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return db.transaction(() => {
      const meta = db.prepare("SELECT applied_revision FROM meta WHERE id = 1").get() as { applied_revision: number } | undefined;
      // Rows are keyed by a hash; the customer id is the document's own (spilled rows carry it too).
      const rows = db.prepare("SELECT revision, document FROM documents UNION ALL SELECT revision, document FROM spill").all() as { revision: number; document: Buffer }[];
      return {
        revision: meta?.applied_revision ?? 0,
        documents: new Map(rows.map((r) => [AccessDocument.decode(r.document).customerId, { revision: r.revision, document: r.document }])),
      };
    })();
  } finally {
    db.close();
  }
}

/** The replica's applied revision as stored in its file (0 when the file has no meta yet). */
export function replicaRevision(path: string): number {
  try {
    const db = new Database(path, { readonly: true, fileMustExist: true });
    try {
      const meta = db.prepare("SELECT applied_revision FROM meta WHERE id = 1").get() as { applied_revision: number } | undefined;
      return meta?.applied_revision ?? 0;
    } finally {
      db.close();
    }
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Billing traffic

/**
 * Publishes `events` through IngestService in chunks of 1,000, every one accepted, and records
 * each in `sent` (customer → events: what `expectConverged` compares with). Returns the last revision.
 */
export async function publishAccepted(client: WriterClient, events: readonly BillingEvent[], sent: Map<string, BillingEvent[]>): Promise<number> {
  let revision = 0;
  for (let i = 0; i < events.length; i += 1_000) {
    const chunk = events.slice(i, i + 1_000);
    const res = await client.publish([...chunk]);
    expect(res.results.filter((r) => r.result !== IngestResult.INGEST_RESULT_ACCEPTED)).toEqual([]);
    for (const e of chunk) sent.set(e.customerId, [...(sent.get(e.customerId) ?? []), e]);
    revision = res.revision;
  }
  return revision;
}

/** `n` customers `cus_00000`…, subscribed to basic, premium and enterprise in turn; two in three paid. */
export function seedEvents(n: number): BillingEvent[] {
  const seed: BillingEvent[] = [];
  for (let i = 0; i < n; i++) {
    const f = new EventFactory(`cus_${i.toString().padStart(5, "0")}`, `seed${i}`);
    const plan = ["basic", "premium", "enterprise"][i % 3] ?? "basic";
    seed.push(f.subscribe(plan));
    if (i % 3 !== 2) seed.push(f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, "in_1", { planId: plan }));
  }
  return seed;
}

const PLANS = ["basic", "premium", "enterprise"] as const;
const PAYMENTS = [
  PaymentResult.PAYMENT_RESULT_SUCCEEDED,
  PaymentResult.PAYMENT_RESULT_SUCCEEDED,
  PaymentResult.PAYMENT_RESULT_FAILED,
  PaymentResult.PAYMENT_RESULT_REQUIRES_ACTION,
  PaymentResult.PAYMENT_RESULT_PROCESSING,
  PaymentResult.PAYMENT_RESULT_CANCELED,
  PaymentResult.PAYMENT_RESULT_REFUNDED,
  PaymentResult.PAYMENT_RESULT_DISPUTE_OPENED,
  PaymentResult.PAYMENT_RESULT_DISPUTE_WON,
  PaymentResult.PAYMENT_RESULT_DISPUTE_LOST,
] as const;
const RECOVERIES = [RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED, RecoveryResult.RECOVERY_RESULT_EXHAUSTED, RecoveryResult.RECOVERY_RESULT_RECOVERED] as const;

/**
 * Random but valid billing events for a set of customers, from a seeded generator, and the
 * record of every distinct event sent per customer: what `foldDocument` must be given to
 * compute the document the whole system has to end up with.
 */
export class BillingTraffic {
  private readonly factories = new Map<string, EventFactory>();
  private readonly sent = new Map<string, BillingEvent[]>();
  private readonly ids = new Set<string>();
  private readonly history: BillingEvent[] = [];

  constructor(
    private readonly rng: Rng,
    readonly customers: readonly string[],
    private readonly prefix = "evt",
  ) {}

  /** A new random event for a random customer (recorded as sent). */
  next(): BillingEvent {
    const customer = this.rng.pick(this.customers);
    return this.record(this.randomEvent(customer));
  }

  /** An event sent before, again (a redelivery from the billing system); undefined if none yet. */
  again(): BillingEvent | undefined {
    return this.history.length > 0 ? this.rng.pick(this.history) : undefined;
  }

  /** `n` new events. */
  burst(n: number): BillingEvent[] {
    return Array.from({ length: n }, () => this.next());
  }

  /** Records an event built elsewhere as sent. */
  record(e: BillingEvent): BillingEvent {
    if (!this.ids.has(e.eventId)) {
      this.ids.add(e.eventId);
      this.history.push(e);
      const list = this.sent.get(e.customerId) ?? [];
      list.push(e);
      this.sent.set(e.customerId, list);
    }
    return e;
  }

  /** customer → every distinct event sent for them. */
  get expected(): ReadonlyMap<string, readonly BillingEvent[]> {
    return this.sent;
  }

  get distinctEvents(): number {
    return this.ids.size;
  }

  private factory(customer: string): EventFactory {
    let f = this.factories.get(customer);
    if (!f) {
      f = new EventFactory(customer, `${this.prefix}_${customer}`, Date.now(), "sub_1");
      this.factories.set(customer, f);
    }
    return f;
  }

  private randomEvent(customer: string): BillingEvent {
    const f = this.factory(customer);
    const r = this.rng;
    // Never ahead of the writer's clock (it rejects events dated beyond --max-event-skew).
    const at = r.int(-6, -1) * 3_600_000 + r.int(0, 59_999);
    const plan = r.pick(PLANS);
    const roll = r.next();
    if (roll < 0.3 || !this.sent.has(customer)) {
      const canceled = r.next() < 0.1;
      return f.subscribe(plan, canceled ? { status: SubscriptionStatus.SUBSCRIPTION_STATUS_CANCELED } : { addonIds: r.next() < 0.2 ? ["ai-assistant"] : [] }, at);
    }
    const invoice = `in_${r.int(1, 3)}`;
    if (roll < 0.85) {
      const result = r.pick(PAYMENTS);
      const start = f.start - DAY + (Number(invoice.slice(3)) - 1) * 30 * DAY;
      return f.pay(result, invoice, { planId: plan, periodStart: new Date(start), periodEnd: new Date(start + 30 * DAY) }, at);
    }
    const result = r.pick(RECOVERIES);
    return f.recover(result, invoice, result === RecoveryResult.RECOVERY_RESULT_RETRY_SCHEDULED ? new Date(f.start + 2 * DAY) : undefined, at);
  }
}

// ---------------------------------------------------------------------------------------------
// Convergence

/** `fn` over `items`, at most `limit` at a time. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (i < items.length) {
        const k = i++;
        out[k] = await fn(items[k] as T);
      }
    }),
  );
  return out;
}

/** The encoded document the system must hold for a customer given every event sent for them. */
export function expectedDocument(customerId: string, events: readonly BillingEvent[]): Uint8Array {
  return AccessDocument.encode(foldDocument(customerId, events, [])).finish();
}

export interface ConvergeTarget {
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  readonly writer: { readonly client: WriterClient; readonly httpAddress: string };
  readonly sidecars: readonly SidecarUnderTest[];
  /** customer → every event sent for them (duplicates allowed; they must count once). */
  readonly expected: ReadonlyMap<string, readonly BillingEvent[]>;
  readonly timeoutMs?: number;
}

export interface Converged {
  /** The common revision: writer head = PROOFGATE_STATE last sequence = every sidecar's revision. */
  readonly revision: number;
  readonly stream: StreamState;
}

const bytesEqual = (a: Uint8Array | undefined, b: Uint8Array): boolean => a !== undefined && Buffer.compare(a, b) === 0;

/** Readable difference of two encoded documents, for failure messages. */
function docDiff(label: string, actual: Uint8Array | undefined, expected: Uint8Array): string {
  const show = (b: Uint8Array | undefined): string => (b ? JSON.stringify(AccessDocument.toJSON(AccessDocument.decode(b))) : "(none)");
  return `${label}\n    actual:   ${show(actual)}\n    expected: ${show(expected)}`;
}

/**
 * Waits until the system has settled, then asserts that it converged exactly:
 * - the writer's head revision = PROOFGATE_STATE's last sequence = each sidecar's revision (as
 *   CheckService reports it and as its replica file stores it), with the outbox empty;
 * - every customer's document, in the stream, in the writer's ledger and in every replica, is
 *   byte for byte `foldDocument` of exactly the events sent for that customer, and nobody else
 *   has one (no accepted event lost, none applied twice, no phantom customer);
 * - the writer holds each sent event once as a fact and applied it once (audit log);
 * - each replica row carries the stream sequence of its subject's current message.
 */
export async function expectConverged(t: ConvergeTarget): Promise<Converged> {
  const expected = new Map([...t.expected].map(([id, events]) => [id, expectedDocument(id, events)]));
  const customers = [...expected.keys()].sort();
  const probeCustomer = customers[0] ?? "nobody";

  const settled = await waitFor(
    async () => {
      const last = await streamLastSeq(t.jsm);
      const text = await scrape(t.writer.httpAddress);
      const head = metricValue(text, "proofgate_writer_head_revision");
      const depth = metricValue(text, "proofgate_writer_outbox_depth");
      const revisions = await Promise.all(t.sidecars.map(async (s) => (await s.client.check({ customerId: probeCustomer, feature: "api-access" })).revision));
      const state = { last, head, depth, sidecars: Object.fromEntries(t.sidecars.map((s, i) => [s.name, revisions[i]])) };
      if (head !== last || depth !== 0 || revisions.some((r) => r !== last)) throw new Error(`revisions differ: ${JSON.stringify(state)}`);
      const stream = await readStateStream(t.nc);
      if (stream.lastSeq !== last) throw new Error(`the stream moved on: ${JSON.stringify(state)}`);
      const behind = customers.filter((id) => !bytesEqual(stream.subjects.get(customerSubject(id))?.data, encodeDocumentRecord(expected.get(id) ?? new Uint8Array())));
      if (behind.length > 0) throw new Error(`${behind.length} of ${customers.length} documents on the stream differ from the expected ones (first: ${behind[0]}); ${JSON.stringify(state)}`);
      return { revision: last, stream };
    },
    "writer, stream and sidecars to converge on the expected documents",
    t.timeoutMs ?? 45_000,
  );
  const { revision, stream } = settled;

  // The stream: the catalog plus exactly one document per expected customer.
  const subjects = new Map(customers.map((id) => [customerSubject(id), id]));
  const strangers = [...stream.subjects.keys()].filter((s) => s !== CATALOG_SUBJECT && !subjects.has(s));
  if (strangers.length > 0) throw new Error(`PROOFGATE_STATE holds ${strangers.length} subjects for customers no event was sent for`);
  if (!stream.subjects.has(CATALOG_SUBJECT)) throw new Error("PROOFGATE_STATE holds no catalog");

  // Every replica, read from its file.
  for (const s of t.sidecars) {
    const replica = readReplica(s.replicaPath);
    const problems: string[] = [];
    if (replica.revision !== revision) problems.push(`replica file revision ${replica.revision}, stream ${revision}`);
    for (const id of customers) {
      const row = replica.documents.get(id);
      const want = expected.get(id) ?? new Uint8Array();
      if (!row || !bytesEqual(row.document, want)) problems.push(docDiff(`customer ${id}`, row?.document, want));
      else if (row.revision !== stream.subjects.get(customerSubject(id))?.seq) problems.push(`customer ${id}: row revision ${row.revision}, stream ${stream.subjects.get(customerSubject(id))?.seq}`);
    }
    for (const id of replica.documents.keys()) if (!expected.has(id)) problems.push(`customer ${id}: in the replica, but no event was sent for it`);
    if (problems.length > 0) throw new Error(`sidecar ${s.name} (${s.replicaPath}) differs from the writer in ${problems.length} ways:\n  ${problems.slice(0, 5).join("\n  ")}`);
  }

  // The writer's ledger: each sent event is one fact, applied once, and the document is the fold.
  const problems = (
    await mapLimit(customers, 16, async (id) => {
      const res = await t.writer.client.getCustomer(id);
      const out: string[] = [];
      const want = expected.get(id) ?? new Uint8Array();
      const doc = res.document ? AccessDocument.encode(res.document).finish() : undefined;
      if (!doc || !bytesEqual(doc, want)) out.push(docDiff(`customer ${id} in the ledger`, doc, want));
      const sent = [...new Set((t.expected.get(id) ?? []).map((e) => e.eventId))].sort();
      const facts = res.facts.map((e) => e.eventId).sort();
      if (JSON.stringify(facts) !== JSON.stringify(sent)) out.push(`customer ${id}: ledger facts ${JSON.stringify(facts)}, sent ${JSON.stringify(sent)}`);
      const applied = res.timeline.filter((e) => e.kind === AuditKind.AUDIT_KIND_EVENT_APPLIED).map((e) => e.eventId).sort();
      if (JSON.stringify(applied) !== JSON.stringify(sent)) out.push(`customer ${id}: applied ${JSON.stringify(applied)}, sent ${JSON.stringify(sent)}`);
      return out;
    })
  ).flat();
  if (problems.length > 0) throw new Error(`the writer's ledger differs from the events sent in ${problems.length} ways:\n  ${problems.slice(0, 5).join("\n  ")}`);
  return settled;
}

/** What a fault test with its own writer processes starts from: nats-server, a temp directory, a client connection. */
export interface NatsBed {
  readonly nats: NatsServer;
  readonly dir: ReturnType<typeof tempDir>;
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  readonly js: JetStreamClient;
}

/** Starts a NatsBed; each part is undone by `cleanup` (run in reverse order). */
export async function startNatsBed(cleanup: (() => unknown)[], prefix: string): Promise<NatsBed> {
  const nats = await NatsServer.start();
  cleanup.push(() => nats.dispose());
  const dir = tempDir(prefix);
  cleanup.push(() => dir.dispose());
  const nc = await connectNats(nats.url);
  cleanup.push(() => nc.close());
  return { nats, dir, nc, jsm: await nc.jetstreamManager(), js: nc.jetstream() };
}
