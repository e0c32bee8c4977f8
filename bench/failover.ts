/**
 * `npm run bench:failover [-- --quick]`: writer takeover figures (BENCHMARKS.md,
 * "Writer failover"). Two writer processes with their own ledgers and the default lease, one
 * sidecar, one nats-server, all on loopback. Billing events are published to NATS at a steady
 * rate, one new customer each, and the leader is SIGKILLed several times (restarted as a standby
 * after each). Measured:
 * - kill → fence and kill → first document: from the SIGKILL to the new leader's first message on
 *   the state stream (its fence) and its first customer document;
 * - event → enforcement: from publishing the event to the sidecar answering a Check at the
 *   revision of the event's document (`min_revision`), p50/p99/max over the whole run and over
 *   the events sent from 1 s before a kill to 10 s after it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { credentials } from "@grpc/grpc-js";
import { connect, DeliverPolicy, type NatsConnection } from "nats";
import { demoCatalog } from "#proofgate/catalog/index.js";
import { NatsServer } from "#proofgate/dev/nats-server.js";
import { AdminServiceClient } from "#proofgate/gen/proofgate/v1/admin.js";
import { BillingEvent, SubscriptionStatus } from "#proofgate/gen/proofgate/v1/billing.js";
import { CheckServiceClient, type CheckResponse } from "#proofgate/gen/proofgate/v1/check.js";
import { CUSTOMER_SUBJECT_PREFIX, HEADER_LEDGER_ID, STATE_STREAM, customerToken } from "#proofgate/replication/subjects.js";
import type { ReadyFile } from "#proofgate/transport/ready-file.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const BIN = join(ROOT, "bin/proofgate.js");

interface Service {
  readonly child: ChildProcess;
  readonly ready: ReadyFile;
  readonly exited: Promise<void>;
}

async function waitUntil<T>(probe: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function startService(args: readonly string[], readyFile: string): Promise<Service> {
  rmSync(readyFile, { force: true });
  const child = spawn(process.execPath, [BIN, ...args, "--ready-file", readyFile], { stdio: "ignore" });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const ready = await waitUntil(() => (existsSync(readyFile) ? (JSON.parse(readFileSync(readyFile, "utf8")) as ReadyFile) : undefined), `${args[0] ?? "service"} to listen`);
  return { child, ready, exited };
}

const quantile = (xs: readonly number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : (s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN);
};
const summary = (xs: readonly number[]): { n: number; p50: number; p99: number; max: number } => ({
  n: xs.length,
  p50: Math.round(quantile(xs, 0.5)),
  p99: Math.round(quantile(xs, 0.99)),
  max: Math.round(Math.max(...xs)),
});

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { quick: { type: "boolean", default: false }, rate: { type: "string", default: "200" }, kills: { type: "string" } }, strict: true });
  const rate = Number(values.rate);
  const kills = Number(values.kills ?? (values.quick ? 3 : 10));
  const dir = mkdtempSync(join(tmpdir(), "proofgate-bench-failover-"));
  const nats = await NatsServer.start();
  const services: Service[] = [];
  let nc: NatsConnection | undefined;
  try {
    const writerArgs = (name: string): string[] => ["writer", "--nats-url", nats.url, "--ledger", join(dir, `${name}.db`), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--writer-id", name, "--log-level", "warn"];
    const writers = new Map<string, Service>();
    const launch = async (name: string): Promise<Service> => {
      const s = await startService(writerArgs(name), join(dir, `${name}.ready.json`));
      services.push(s);
      writers.set(name, s);
      return s;
    };
    const readyz = async (s: Service): Promise<string> => {
      try {
        return (await (await fetch(`http://${s.ready.http ?? ""}/readyz`)).text()).trim();
      } catch {
        return "";
      }
    };
    const leader = (): Promise<[string, Service]> =>
      waitUntil(async () => {
        for (const [name, s] of writers) if ((await readyz(s)) === "ready: leader") return [name, s] as [string, Service];
        return undefined;
      }, "a leader");
    await launch("a");
    await launch("b");
    const [, first] = await leader();
    const admin = new AdminServiceClient(first.ready.grpc[0] ?? "", credentials.createInsecure());
    await new Promise<void>((resolve, reject) =>
      admin.applyCatalog({ catalog: demoCatalog(), actor: "bench", reason: "bench", allowRemovals: false }, (err) => (err ? reject(err) : resolve())),
    );
    admin.close();
    await waitUntil(async () => ((await Promise.all([...writers.values()].map(readyz))).sort().join() === "ready: leader,ready: standby" ? true : undefined), "a current standby");
    const sidecar = await startService(["sidecar", "--nats-url", nats.url, "--replica", join(dir, "replica.db"), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-level", "warn"], join(dir, "sidecar.ready.json"));
    services.push(sidecar);
    const check = new CheckServiceClient(sidecar.ready.grpc[0] ?? "", credentials.createInsecure());

    nc = await connect({ servers: nats.url });
    const js = nc.jetstream();
    // Every state message, as published: when a customer's document and each ledger's first message appear.
    const sentAt = new Map<string, { customerId: string; at: number }>();
    const delays: { sentAt: number; ms: number }[] = [];
    // The ledger of the latest message (the leader's), and every message after a kill.
    let lastLedger = "";
    let afterKill: { ledger: string; at: number; document: boolean }[] | undefined;
    const consumer = await js.consumers.get(STATE_STREAM, { deliver_policy: DeliverPolicy.New });
    const messages = await consumer.consume({
      callback: (m) => {
        const now = performance.now();
        const ledger = m.headers?.get(HEADER_LEDGER_ID) ?? "";
        lastLedger = ledger;
        afterKill?.push({ ledger, at: now, document: m.subject.startsWith(CUSTOMER_SUBJECT_PREFIX) });
        const sent = sentAt.get(m.subject);
        if (!sent) return;
        sentAt.delete(m.subject);
        check.check({ customerId: sent.customerId, feature: "advanced-filtering", minRevision: m.seq }, (err, res: CheckResponse) => {
          if (!err && !res.stale) delays.push({ sentAt: sent.at, ms: performance.now() - sent.at });
        });
      },
    });

    let n = 0;
    const drive = { running: true };
    const started = Date.now();
    const driving = (async () => {
      const t0 = performance.now();
      while (drive.running) {
        const due = t0 + (n * 1000) / rate;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const customerId = `cus_fo_${n}`;
        const event = BillingEvent.fromPartial({
          eventId: `evt_fo_${n}`,
          occurredAt: new Date(started - 60_000),
          customerId,
          subscriptionId: "sub_1",
          source: "bench",
          kind: { $case: "subscription", value: { status: SubscriptionStatus.SUBSCRIPTION_STATUS_ACTIVE, planId: "basic", quantity: 1, version: 1, trialEnd: new Date(started + 86_400_000) } },
        });
        sentAt.set(CUSTOMER_SUBJECT_PREFIX + customerToken(customerId), { customerId, at: performance.now() });
        n++;
        await js.publish(`proofgate.billing.bench.${n % 8}`, BillingEvent.encode(event).finish()).catch(() => undefined);
      }
    })();

    const takeovers: { fenceMs: number; firstDocumentMs: number }[] = [];
    const windows: [number, number][] = [];
    await new Promise((r) => setTimeout(r, 5_000));
    for (let k = 0; k < kills; k++) {
      const [name, victim] = await leader();
      const victimLedger = lastLedger;
      afterKill = [];
      const killedAt = performance.now();
      victim.child.kill("SIGKILL");
      await victim.exited;
      // The new leader's first message (its fence, the catalog) and its first document.
      const mine = await waitUntil(() => {
        const theirs = (afterKill ?? []).filter((x) => x.ledger !== victimLedger);
        return theirs.some((x) => x.document) ? theirs : undefined;
      }, "the new leader's first document", 30_000);
      afterKill = undefined;
      takeovers.push({ fenceMs: Math.round((mine[0]?.at ?? NaN) - killedAt), firstDocumentMs: Math.round((mine.find((x) => x.document)?.at ?? NaN) - killedAt) });
      windows.push([killedAt - 1_000, killedAt + 10_000]);
      await launch(name);
      await waitUntil(async () => ((await readyz(writers.get(name) as Service)) === "ready: standby" ? true : undefined), "the restarted writer to stand by");
      await new Promise((r) => setTimeout(r, 10_000));
    }
    drive.running = false;
    await driving;
    await waitUntil(() => (sentAt.size === 0 ? true : undefined), "every event enforced", 30_000).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 500));
    await messages.close();
    check.close();
    const all = delays.map((d) => d.ms);
    const through = delays.filter((d) => windows.some(([a, b]) => d.sentAt >= a && d.sentAt <= b)).map((d) => d.ms);
    const result = {
      rate,
      events: n,
      enforced: delays.length,
      kills,
      leaseTtlMs: 2_000,
      takeovers,
      killToFenceMs: summary(takeovers.map((t) => t.fenceMs)),
      killToFirstDocumentMs: summary(takeovers.map((t) => t.firstDocumentMs)),
      eventToEnforcementMs: { all: summary(all), throughTakeovers: summary(through) },
    };
    console.log(JSON.stringify(result, null, 2));
  } finally {
    await nc?.close();
    for (const s of services) s.child.kill("SIGKILL");
    await Promise.all(services.map((s) => s.exited));
    await nats.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
