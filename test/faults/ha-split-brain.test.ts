import { join } from "node:path";
import { afterAll, expect, test } from "vitest";
import type { Subscription } from "nats";
import { BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { HEADER_LEADER_EPOCH, HEADER_LEDGER_ID, STATE_SUBJECTS } from "../../src/replication/subjects.js";
import { WriterClient, WriterProcess } from "../harness/writer.js";
import { waitFor } from "../harness/wait.js";
import { BillingTraffic, expectConverged, metricValue, scrape, testRng, startNatsBed } from "../harness/system.js";

/**
 * Split brain: the leading writer is paused (SIGSTOP) until a standby takes the lease over, events
 * keep coming, and then the old leader resumes (SIGCONT) with a ledger that folds the new events
 * too and an outbox full of rows. It must publish nothing and step down: every message on the
 * state stream from the takeover on is the new leader's. Both ledgers end equal to the fold of
 * exactly the events sent.
 */
const cleanup: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

interface Seen {
  readonly ledgerId: string;
  readonly epoch: number;
}

async function role(w: WriterProcess): Promise<string> {
  return (await w.http("/readyz")).body.trim();
}

test("a leader paused past its lease publishes nothing when it resumes and steps down", async () => {
  const rng = testRng();
  const { nats, dir, nc, jsm, js } = await startNatsBed(cleanup, "proofgate-ha-");

  // Every message published to the state stream, in order, as it is published (the stream itself
  // keeps only the last per subject).
  const seen: Seen[] = [];
  const sub: Subscription = nc.subscribe(STATE_SUBJECTS);
  void (async () => {
    for await (const m of sub) seen.push({ ledgerId: m.headers?.get(HEADER_LEDGER_ID) ?? "", epoch: Number(m.headers?.get(HEADER_LEADER_EPOCH) ?? 0) });
  })();
  cleanup.push(() => sub.unsubscribe());

  const start = (name: string): Promise<WriterProcess> =>
    WriterProcess.start({ natsUrl: nats.url, ledgerPath: join(dir.path, `${name}.db`), args: ["--lease-ttl", "1s", "--writer-id", name] });
  const a = await start("a");
  cleanup.push(() => a.stop("SIGKILL"));
  await waitFor(async () => (await role(a)) === "ready: leader", "writer a to lead");
  const clientA = new WriterClient(a.grpcAddress);
  cleanup.push(() => clientA.close());
  await clientA.applyCatalog();
  const b = await start("b");
  cleanup.push(() => b.stop("SIGKILL"));
  await waitFor(async () => (await role(b)) === "ready: standby", "writer b to stand by, current");
  const clientB = new WriterClient(b.grpcAddress);
  cleanup.push(() => clientB.close());

  const customers = Array.from({ length: 12 }, (_, i) => `cus_split_${i}`);
  const traffic = new BillingTraffic(rng, customers, `s${rng.seed}`);
  const send = async (e: BillingEvent): Promise<void> => {
    await js.publish(`proofgate.billing.split.${e.customerId}`, BillingEvent.encode(e).finish());
  };
  for (const e of traffic.burst(40)) await send(e);
  // Over gRPC, on the standby: it answers once its effect is visible.
  const viaStandby = await clientB.publish(traffic.burst(5));
  expect(viaStandby.revision).toBeGreaterThan(0);

  // Pause whichever writer leads now (under load the lease may have moved), named by the ledger
  // id on the state message of a fresh event; the other takes over when the lease expires.
  const [old, next] = (await role(a)) === "ready: leader" ? [a, b] : [b, a];
  const [clientOld, clientNext] = old === a ? [clientA, clientB] : [clientB, clientA];
  const mark = seen.length;
  await clientOld.publish(traffic.burst(1));
  const ledgerA = (await waitFor(() => seen.slice(mark).find((s) => s.ledgerId !== ""), "a fresh state message")).ledgerId;
  expect((await role(old)) === "ready: leader").toBe(true);
  process.kill(old.pid ?? 0, "SIGSTOP");
  cleanup.push(() => process.kill(old.pid ?? 0, "SIGCONT"));
  const paused = Date.now();
  await waitFor(async () => (await role(next)) === "ready: leader", "the standby to take over");
  const takeoverMs = Date.now() - paused;
  const takeoverIndex = await waitFor(() => {
    const i = seen.findIndex((s) => s.ledgerId !== ledgerA && s.ledgerId !== "");
    return i >= 0 ? { i } : undefined;
  }, "the new leader's first message (its fence)");
  const epochB = seen[takeoverIndex.i]?.epoch ?? 0;
  expect(epochB).toBeGreaterThan(Math.max(...seen.slice(0, takeoverIndex.i).map((s) => s.epoch)));

  // More events while the old leader is frozen, on NATS and over gRPC to the new leader.
  for (const e of traffic.burst(30)) await send(e);
  await clientNext.publish(traffic.burst(5));

  // Resume the old leader: its ledger catches up on the new inputs, its lease has lapsed.
  process.kill(old.pid ?? 0, "SIGCONT");
  await waitFor(async () => (await role(old)) === "ready: standby", "the old leader to step down");
  for (const e of traffic.burst(20)) await send(e);
  // The old leader is still folding what came in while it was frozen.
  await clientOld.publishRetrying(traffic.burst(3));

  const converged = await expectConverged({ nc, jsm, writer: { client: clientNext, httpAddress: next.httpAddress }, sidecars: [], expected: traffic.expected });
  // The old leader, now a standby, holds the same documents and knows where they are.
  await expectConverged({ nc, jsm, writer: { client: clientOld, httpAddress: old.httpAddress }, sidecars: [], expected: traffic.expected });

  const after = seen.slice(takeoverIndex.i);
  expect(after.filter((s) => s.ledgerId === ledgerA), "messages from the deposed leader after the takeover").toEqual([]);
  expect(after.every((s) => s.epoch === epochB)).toBe(true);
  expect(metricValue(await scrape(old.httpAddress), "proofgate_writer_role", { role: "standby" })).toBe(1);
  expect(metricValue(await scrape(next.httpAddress), "proofgate_writer_role", { role: "leader" })).toBe(1);
  process.stdout.write(
    `split brain (seed ${rng.seed}): takeover ${takeoverMs} ms after SIGSTOP, ${seen.length} state messages, ${after.length} after the takeover, revision ${converged.revision}\n`,
  );
});
