import { join } from "node:path";
import { afterAll, expect, test } from "vitest";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { NatsServer } from "../harness/nats.js";
import { tempDir } from "../harness/tmp.js";
import { waitFor } from "../harness/wait.js";
import { CustomerStory, DAY, StatePublisher, paidCustomer, testCatalog } from "../harness/sidecar.js";
import { metric, startSidecarProcess, type SidecarUnderTest } from "../harness/system.js";

/**
 * A lazy sidecar (`--mode lazy`) as a real process: bounded by its count, through a NATS outage
 * (kept customers served, misses answered stale at once), a nats-server restart, and a SIGKILL
 * of itself (it resumes from its file).
 */
const cleanup: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

test("lazy sidecar process: bounded, answers clearly while NATS is down, follows its customers across a NATS restart and its own SIGKILL", async () => {
  const nats = await NatsServer.start();
  cleanup.push(() => nats.dispose());
  const dir = tempDir("proofgate-faults-");
  cleanup.push(() => dir.dispose());
  let pub = await StatePublisher.connect(nats.url);
  cleanup.push(() => pub.close());
  const now = Date.now();
  await pub.catalog(testCatalog({ coherencyWindowMs: 60_000 }));
  const ids = Array.from({ length: 60 }, (_, i) => `cus_lazy_${i}`);
  await pub.documents(ids.map((id) => paidCustomer(id, "basic", now)));

  const replica = join(dir.path, "lazy.db");
  const args = ["--mode", "lazy", "--lazy-max-customers", "20"];
  let sc: SidecarUnderTest = await startSidecarProcess("lazy", nats.url, replica, args);
  cleanup.push(() => sc.stop("SIGKILL"));
  for (const id of ids) {
    const r = await waitFor(async () => {
      const x = await sc.client.check({ customerId: id, feature: "advanced-filtering" });
      return x.stale ? undefined : x;
    }, `a fresh answer for ${id}`);
    expect(r.allowed, id).toBe(true);
  }
  expect(await metric(sc.httpAddress, "proofgate_sidecar_lazy_customers")).toBe(20);
  expect(await metric(sc.httpAddress, "proofgate_sidecar_lazy_evictions_total")).toBe(40);
  const kept = ids.slice(-20);

  // NATS goes away: the kept customers are answered from the file, a miss at once and stale.
  await pub.close();
  await nats.stop();
  await waitFor(async () => (await metric(sc.httpAddress, "proofgate_sidecar_nats_connected")) === 0, "the sidecar to notice NATS is gone");
  expect((await sc.client.check({ customerId: kept[0] ?? "", feature: "advanced-filtering" })).allowed).toBe(true);
  const miss = await sc.client.check({ customerId: ids[0] ?? "", feature: "advanced-filtering" }, 5_000);
  expect(miss).toMatchObject({ stale: true, allowed: false, status: AccessStatus.ACCESS_STATUS_UNKNOWN_CUSTOMER });
  expect(miss.reason).toContain("not cached by this lazy sidecar and NATS is unreachable");

  // Back (same port, same store): changes to kept customers are followed.
  await nats.start();
  pub = await StatePublisher.connect(nats.url);
  const victim = kept[5] ?? "";
  const start = now - DAY;
  const canceled = new CustomerStory(victim)
    .subscribe("basic", start, { periodEndMs: now + 30 * DAY })
    .pay(`${victim}-inv-1`, "basic", start, start, now + 30 * DAY)
    .subscribe("basic", now, { periodEndMs: now + 30 * DAY, canceled: true })
    .document();
  const rev = await pub.document(canceled);
  const revoked = await waitFor(async () => {
    const x = await sc.client.check({ customerId: victim, feature: "advanced-filtering" });
    return !x.allowed && !x.stale ? x : undefined;
  }, "the cancellation after the NATS restart");
  expect(revoked.status).toBe(AccessStatus.ACCESS_STATUS_CANCELED);
  expect(revoked.revision).toBeGreaterThanOrEqual(rev);

  // SIGKILLed and started again on its file: the kept customers are still there, no fetch needed,
  // and a change made while it was down is applied.
  await sc.stop("SIGKILL");
  const upgraded = await pub.document(paidCustomer(kept[6] ?? "", "enterprise", now));
  sc = await startSidecarProcess("lazy-again", nats.url, replica, args);
  expect(await metric(sc.httpAddress, "proofgate_sidecar_lazy_customers")).toBe(20);
  const up = await waitFor(async () => {
    const x = await sc.client.check({ customerId: kept[6] ?? "", feature: "ai-assistant" });
    return x.allowed && !x.stale ? x : undefined;
  }, "the upgrade made while the sidecar was down");
  expect(up.revision).toBeGreaterThanOrEqual(upgraded);
  expect((await sc.client.check({ customerId: victim, feature: "advanced-filtering" })).allowed).toBe(false);
  expect(await metric(sc.httpAddress, "proofgate_sidecar_lazy_misses_total", { result: "fetched" })).toBeUndefined();
});
